"""The trainer: compiled programs over shuffled mini-batches, per-epoch evaluation, logging.

Everything a run does between "model built" and "report written": the optimizer's
update nodes are added to the graph, train/evaluate programs are compiled once, and
each step is a single Program call. Full-batch `lbfgs` goes through the quasi-Newton
driver instead. A non-finite loss stops the run with a DivergenceError.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from gengraph.engine import compile, grad, to_numpy
from gengraph.engine.optimizers import make_optimizer

from .lbfgs import lbfgs


class DivergenceError(RuntimeError):
    """The loss or a gradient became non-finite."""


@dataclass
class TrainState:
    epoch: int = 0
    step: int = 0
    best: float = float("inf")
    bad_epochs: int = 0
    history: list = field(default_factory=list)


def batches(n: int, batch_size: int, rng: np.random.Generator | None):
    """Index arrays of mini-batches over n rows; the order is shuffled when rng is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    size = n if batch_size <= 0 else batch_size
    for start in range(0, n, size):
        yield order[start:start + size]


def shuffle_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))


class Trainer:
    def __init__(self, plugin, model, data, train_cfg: dict, ctx):
        self.plugin, self.model, self.data, self.cfg, self.ctx = plugin, model, data, train_cfg, ctx
        self.state = TrainState()
        self.rng = shuffle_rng(ctx.seed)
        self.programs: dict = {}

    # --- programs ----------------------------------------------------------------------
    def compile_programs(self, with_optimizer=True):
        m, backend = self.model, self.ctx.backend
        progs = {}
        if with_optimizer and m.params:
            grads = grad(m.loss, m.params)
            opt_cfg = dict(self.cfg["optimizer"])
            kind = opt_cfg.pop("kind")
            if kind != "lbfgs":
                sched = self.cfg.get("schedule") or {"kind": "constant"}
                opt_cfg["lr"] = _schedule(sched, opt_cfg["lr"])
                self.optimizer = make_optimizer(kind, **opt_cfg)
                updates = dict(self.optimizer.updates(m.graph, m.params, grads))
                updates.update(m.train_updates)
                progs["train_step"] = compile(m.graph, {"loss": m.loss, **m.metrics}, updates, backend=backend,
                                              debug=self.ctx.debug)
            self.grads = grads
        progs["evaluate"] = compile(m.graph, {"loss": m.loss, **m.metrics}, backend=backend)
        for name, (outputs, updates) in m.programs.items():
            progs[name] = compile(m.graph, outputs, updates, backend=backend)
        self.programs = progs
        return progs

    # --- evaluation ----------------------------------------------------------------------
    def evaluate(self, x, y, batch_size=2048) -> dict:
        """Batch-size-weighted means of the loss and metrics over a split."""
        if x is None or len(x) == 0:
            return {}
        sums, total = {}, 0
        prog = self.programs["evaluate"]
        for idx in batches(len(x), batch_size, None):
            out = prog.run(self.model.feed(x[idx], None if y is None else y[idx]))
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(to_numpy(v)) * len(idx)
            total += len(idx)
        return {k: v / total for k, v in sums.items()}

    # --- training ------------------------------------------------------------------------
    def fit(self, on_epoch=None, on_step=None):
        cfg, d = self.cfg, self.data
        if self.plugin.fit(self.model, d, self.ctx):
            if not self.programs:
                self.compile_programs(with_optimizer=False)
            self._log_epoch(0, {}, on_epoch)
            return self.state
        if not self.programs:
            self.compile_programs()
        if cfg["optimizer"]["kind"] == "lbfgs":
            return self._fit_lbfgs(on_epoch)
        train = self.programs["train_step"]
        for epoch in range(self.state.epoch + 1, cfg["epochs"] + 1):
            t0, sums, seen = time.perf_counter(), {}, 0
            for idx in batches(d.n_train, cfg["batch_size"], self.rng if cfg["shuffle"] else None):
                feeds = self.model.feed(d.x_train[idx], None if d.y_train is None else d.y_train[idx])
                out = self.plugin.train_batch(self.model, self.programs, feeds, self.ctx)
                loss = float(to_numpy(out["loss"]))
                self.state.step += 1
                if not np.isfinite(loss):
                    raise DivergenceError(f"the training loss became {loss} at epoch {epoch}, step {self.state.step}")
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + float(to_numpy(v)) * len(idx)
                seen += len(idx)
                if on_step is not None:
                    on_step(self.state, loss)
            train_means = {f"train_{k}": v / seen for k, v in sums.items()}
            train_means["epoch_seconds"] = time.perf_counter() - t0
            self.state.epoch = epoch
            stop = self._log_epoch(epoch, train_means, on_epoch)
            if stop:
                break
        return self.state

    def _fit_lbfgs(self, on_epoch):
        m, d = self.model, self.data
        prog = compile(m.graph, [m.loss] + list(self.grads), backend=self.ctx.backend)
        feeds = m.feed(d.x_train, d.y_train)
        shapes = [m.graph.value(p).shape for p in m.params]
        sizes = [int(np.prod(s)) for s in shapes]

        def assign(vec):
            for p, piece, s in zip(m.params, np.split(vec, np.cumsum(sizes)[:-1]), shapes):
                m.graph.set_value(p, piece.reshape(s))

        def value_and_grad(vec):
            assign(vec)
            out = prog.run(feeds)
            flat = np.concatenate([to_numpy(g).reshape(-1) for g in out[1:]]).astype(np.float64)
            return float(to_numpy(out[0])), flat

        x0 = np.concatenate([m.graph.value(p).reshape(-1) for p in m.params]).astype(np.float64)
        max_iter = self.cfg["optimizer"].get("max_iter", 200)
        x, f, iters = lbfgs(value_and_grad, x0, max_iter=max_iter, tol=self.cfg["optimizer"].get("tol", 1e-10))
        assign(x)
        self.state.epoch, self.state.step = 1, iters
        self._log_epoch(1, {"train_loss": f, "lbfgs_iterations": iters}, on_epoch)
        return self.state

    def _log_epoch(self, epoch, train_means, on_epoch) -> bool:
        """Evaluate on the test split, record a metrics line; True when early stopping triggers."""
        test = {f"test_{k}": v for k, v in self.evaluate(self.data.x_test, self.data.y_test).items()}
        row = {"epoch": epoch, "step": self.state.step, **train_means, **test}
        self.state.history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        es = self.cfg.get("early_stopping") or {}
        patience = es.get("patience", 0)
        watched = row.get(es.get("metric", "test_loss"))
        if patience and watched is not None:
            if watched < self.state.best - es.get("min_delta", 0.0):
                self.state.best, self.state.bad_epochs = watched, 0
            else:
                self.state.bad_epochs += 1
                return self.state.bad_epochs >= patience
        return False


def _schedule(sched_cfg: dict, lr: float):
    from gengraph.engine.schedules import make_schedule

    cfg = dict(sched_cfg)
    kind = cfg.pop("kind")
    return make_schedule(kind, lr=lr, **cfg)
