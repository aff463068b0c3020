"""The trainer: compiled programs over shuffled mini-batches, per-epoch evaluation, logging.

Everything a run does between "model built" and "report written": the optimizer's
update nodes are added to the graph, train/evaluate programs are compiled once, and
each step is a single Program call. Full-batch `lbfgs` goes through the quasi-Newton
driver instead.

Runs lose nothing: the trainer's whole position (epoch, batch within the epoch, the
shuffle generator's state at the start of the epoch, the noise streams, the partial
sums being logged) is part of its state, so a run resumed from a checkpoint continues
bit-identically. A non-finite loss or gradient stops the run; the failing step is then
replayed from the start-of-epoch snapshot with a per-node finiteness check, to name
the first node that produced a NaN or inf.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

import numpy as np

from gengraph.engine import NonFiniteError, compile, grad, ops, to_numpy, topo_order
from gengraph.engine.backend import to_floats
from gengraph.engine.ops.registry import OPS
from gengraph.engine.optimizers import make_optimizer
from gengraph.engine.schedules import make_schedule

from gengraph.plugins.blocks.lbfgs import lbfgs
from gengraph.plugins.datasets.base import DataError, as_rows
from gengraph.plugins.model import ModelConfigError, ModelPlugin
from gengraph.plugins.run.contract import checked_mapping
from gengraph.plugins.run.metrics import stopping_mode
from gengraph.plugins.spec.errors import first_named
from gengraph.plugins.blocks import seeds


class DivergenceError(RuntimeError):
    """The loss or a gradient became non-finite."""


class Interrupted(Exception):
    """The user asked to stop (SIGINT); the caller checkpoints and exits 130."""


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimisation steps
    batch_in_epoch: int = 0  # batches of the current epoch already done
    epoch_rng: dict | None = None  # shuffle generator state at the start of the current epoch
    partial: dict = field(default_factory=dict)  # running sums of the current epoch's logged values
    seen: int = 0  # examples in those sums
    best: float = float("inf")
    bad_epochs: int = 0
    solved: bool = False  # a closed-form or full-batch (L-BFGS) fit finished: nothing left to train
    history: list = field(default_factory=list)

    def meta(self) -> dict:
        """Everything but the history (which lives in metrics.jsonl), as plain JSON-able data."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "history"}


def batches(n: int, batch_size: int, rng: np.random.Generator | None):
    """Index arrays of mini-batches over n rows; the order is shuffled when rng is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    size = n if batch_size <= 0 else batch_size
    return [order[start:start + size] for start in range(0, n, size)]


def shuffle_rng(seed: int) -> np.random.Generator:
    return seeds.rng(seed, "shuffle")


class Trainer:
    def __init__(self, plugin, model, data, train_cfg: dict, ctx):
        self.plugin, self.model, self.cfg, self.ctx = plugin, model, train_cfg, ctx
        self.data = _in_dtype(data, model.graph.dtype)
        self.state = ctx.train_state = TrainState()
        self.rng = shuffle_rng(ctx.seed)
        self.programs: dict = ctx.programs  # shared: plugins read the compiled programs there
        ctx.evaluate = self.evaluate
        self.stop_requested = False  # set by a SIGINT handler; checked after each step
        self._defs = None
        self.optimizer = None

    # --- programs ----------------------------------------------------------------------
    def program_defs(self, with_optimizer=True) -> dict:
        """{name: (outputs, updates)} of every program a run compiles, gradients and
        optimizer nodes included (built once; `gengraph graph` reads them too)."""
        if self._defs is not None:
            return self._defs
        m = self.model
        defs = {}
        if with_optimizer and m.params:
            self.grads = grad(m.loss, m.params)
            self.optimizer = optimizer_from_spec(self.cfg, self.ctx.backend)
            if self.optimizer is not None:
                with m.graph.scope("optimizer"):
                    updates = dict(self.optimizer.updates(m.graph, m.params, self.grads))
                updates.update(m.train_updates)
                with m.graph.scope("monitor"):
                    # one scalar that is non-finite iff some gradient entry is, and finite for finite
                    # gradients whose sum of squares would overflow (float32 grads of 1e20)
                    flat = self.optimizer.flat_grad  # all gradients in one vector: one kernel, one pass
                    if flat is not None:
                        grad_norm = ops.l2_norm(flat)
                    else:  # scaled by the largest |entry| so that the sum of squares cannot overflow
                        big = _max_all([ops.max(ops.abs(g)) for g in self.grads])
                        scale = ops.maximum(big, float(np.finfo(m.graph.dtype).tiny))
                        grad_norm = scale * ops.sqrt(_sum_all([ops.sum_squares(g / scale) for g in self.grads]))
                defs["train_step"] = ({"loss": m.loss, **m.metrics, "grad_norm": grad_norm}, updates)
        defs["evaluate"] = ({"loss": m.loss, **m.metrics}, {})
        defs.update(m.programs)
        self._defs = defs
        return defs

    def compile_programs(self, with_optimizer=True):
        backend = self.ctx.backend
        self.programs.clear()
        self.programs.update({name: compile(self.model.graph, outputs, updates, backend=backend,
                                            debug=self.ctx.debug and name == "train_step")
                              for name, (outputs, updates) in self.program_defs(with_optimizer).items()})
        return self.programs

    # --- evaluation ----------------------------------------------------------------------
    def evaluate(self, x, y, batch_size=2048) -> dict:
        """Batch-size-weighted means of the loss and metrics over a split."""
        if x is None or len(x) == 0:
            return {}
        sums, total = {}, 0
        prog = self.programs["evaluate"]
        for idx in batches(len(x), batch_size, None):
            out = prog.run(self.model.feed(x[idx], None if y is None else y[idx]))
            for k, v in zip(out, to_floats(out.values())):
                sums[k] = sums.get(k, 0.0) + v * len(idx)
            total += len(idx)
        return {k: v / total for k, v in sums.items()}

    # --- weight averaging ([train.optimizer] ema) -------------------------------------------------
    def use_averaged_weights(self) -> dict:
        """Replace the parameters by the optimizer's moving averages (nothing when ema is off):
        what the report and the samples of a finished run use. Returns the replaced values."""
        g = self.model.graph
        avg = self.optimizer.averages(g) if self.optimizer is not None else {}
        saved = {p: g.value(p).copy() for p in avg}
        for p, v in avg.items():
            g.set_value(p, v)
        return saved

    @contextmanager
    def averaged_weights(self):
        """The averaged parameters inside the block, the trained ones again after it."""
        saved = self.use_averaged_weights()
        try:
            yield
        finally:
            for p, v in saved.items():
                self.model.graph.set_value(p, v)

    # --- snapshots (in memory) and checkpoints (on disk) share one format -----------------------
    def snapshot(self) -> dict:
        g = self.model.graph
        leaves = {n.id: g.value(n).copy() for n in g.params() + g.states()}
        streams = g.streams
        return {"leaves": leaves, "streams": streams.state() if streams else {},
                "rng": self.rng.bit_generator.state, "state": self.state.meta()}

    def restore(self, snap: dict) -> None:
        g = self.model.graph
        for n in g.params() + g.states():
            g.set_value(n, snap["leaves"][n.id])
        if snap["streams"] and g.streams is not None:
            g.streams.set_state(snap["streams"])
        self.rng.bit_generator.state = snap["rng"]
        history = self.state.history
        self.state = self.ctx.train_state = TrainState(**snap["state"], history=history)

    # --- training ------------------------------------------------------------------------
    def fit(self, on_epoch=None, on_step=None):
        cfg, d = self.cfg, self.data
        if self.state.solved:  # resumed after the fit (interrupted during the report)
            return self.state
        if self.plugin.fit(self.model, d, self.ctx) or not self.plugin.trains_by_gradient:
            self.state.solved = True
            if not self.programs:
                self.compile_programs(with_optimizer=False)
            if not self.state.history:
                self._log_epoch(0, {}, on_epoch)
            return self.state
        if not self.programs:
            self.compile_programs()
        if cfg["epochs"] == 0:  # the model as it is, evaluated (L-BFGS too): one row at epoch 0
            if not self.state.history:
                self._log_epoch(0, {}, on_epoch)
            return self.state
        if cfg["optimizer"]["kind"] == "lbfgs":
            return self._fit_lbfgs(on_epoch)
        patience = (cfg.get("early_stopping") or {}).get("patience")
        if patience and self.state.bad_epochs >= patience:  # stopped early already: resumed to write the
            return self.state                                 # report (it trained one more epoch)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is checked below
            while self.state.epoch < cfg["epochs"]:
                self._run_epoch(self.state.epoch + 1, on_step)
                if self._log_epoch(self.state.epoch, self._epoch_means(), on_epoch):
                    break
        return self.state

    def _epoch_order(self):
        st = self.state
        if st.batch_in_epoch == 0:
            st.epoch_rng = self.rng.bit_generator.state
            st.partial, st.seen = {}, 0
        else:  # resuming inside an epoch: draw the same order again
            self.rng.bit_generator.state = st.epoch_rng
        return batches(self.data.n_train, self.cfg["batch_size"], self.rng if self.cfg["shuffle"] else None)

    def _run_epoch(self, epoch, on_step):
        st, d = self.state, self.data
        start = self.snapshot() if st.batch_in_epoch == 0 else None
        order = self._epoch_order()
        for k in range(st.batch_in_epoch, len(order)):
            idx = order[k]
            feeds = self.model.feed(d.x_train[idx], None if d.y_train is None else d.y_train[idx])
            out = self.plugin.train_batch(self.model, self.programs, feeds, self.ctx)
            values = dict(zip(out, to_floats(out.values())))  # one device transfer per step on CuPy
            loss, gnorm = values["loss"], values.get("grad_norm", 0.0)
            if not (np.isfinite(loss) and np.isfinite(gnorm)):
                self._diverged(epoch, k, loss, gnorm, start)
            st.step += 1
            st.batch_in_epoch = k + 1
            for name, v in values.items():
                st.partial[name] = st.partial.get(name, 0.0) + v * len(idx)
            st.seen += len(idx)
            if on_step is not None:
                on_step(self, loss)
            if self.stop_requested:
                raise Interrupted()
        st.epoch, st.batch_in_epoch = epoch, 0

    def _epoch_means(self) -> dict:
        st = self.state
        return {f"train_{k}": v / max(st.seen, 1) for k, v in st.partial.items()}

    def _diverged(self, epoch, k, loss, gnorm, start):
        what = "loss" if not np.isfinite(loss) else "gradient norm"
        value = loss if not np.isfinite(loss) else gnorm
        msg = f"the training {what} became {value} at epoch {epoch}, step {self.state.step + 1}"
        culprit = self._first_nonfinite(k, start)
        if culprit:
            msg += f"; {culprit}"
        raise DivergenceError(msg)

    def _first_nonfinite(self, k, start) -> str | None:
        """Replay the epoch up to batch k from its snapshot, then run batch k with per-node checks."""
        if start is None or "train_step" not in (self._defs or {}):
            return None
        self.restore(start)
        order = self._epoch_order()
        d = self.data

        def feeds(idx):
            return self.model.feed(d.x_train[idx], None if d.y_train is None else d.y_train[idx])

        for j in range(k):  # a plugin's own batch step (Langevin chains, Gibbs sweeps) is replayed too
            self.plugin.train_batch(self.model, self.programs, feeds(order[j]), self.ctx)
        debug = {name: compile(self.model.graph, outputs, updates, backend=self.ctx.backend, debug=True)
                 for name, (outputs, updates) in self._defs.items() if name in self.programs}
        try:
            out = self.plugin.train_batch(self.model, debug, feeds(order[k]), self.ctx)
        except NonFiniteError as exc:
            return str(exc)
        except (FloatingPointError, ValueError, ZeroDivisionError) as exc:  # the plugin's own code gave up
            return f"the batch step failed: {exc}"
        return None if all(np.all(np.isfinite(to_numpy(v))) for v in out.values()) else \
            "no single node is non-finite; the loss or gradient norm overflowed when summed"

    def _fit_lbfgs(self, on_epoch):
        m, d = self.model, self.data
        if why := lbfgs_refusal(self.plugin, m):
            raise ModelConfigError("train.optimizer.kind", why)
        prog = compile(m.graph, [m.loss] + list(self.grads), backend=self.ctx.backend)
        # the training set, uploaded once (on CuPy each iteration would copy it to the device again)
        feeds = {k: prog.xp.asarray(v) if isinstance(v, np.ndarray) else v
                 for k, v in m.feed(d.x_train, d.y_train).items()}
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
        opt = self.cfg["optimizer"]
        try:
            x, f, iters = lbfgs(value_and_grad, x0, max_iter=opt.get("max_iter", 200), tol=opt.get("tol", 1e-10))
        except FloatingPointError as exc:  # a non-finite loss or gradient: the run failed, not the program
            raise DivergenceError(f"{exc} (check the data's scale)") from None
        assign(x)
        self.state.epoch, self.state.step, self.state.solved = 1, iters, True
        self._log_epoch(1, {"train_loss": f, "lbfgs_iterations": iters}, on_epoch)
        return self.state

    def _log_epoch(self, epoch, train_means, on_epoch) -> bool:
        """Evaluate on the test split, record a metrics line; True when early stopping triggers."""
        with self.averaged_weights():  # test figures of the weights the run would report
            test = {f"test_{k}": v for k, v in self.evaluate(self.data.x_test, self.data.y_test).items()}
            row = {"epoch": epoch, "step": self.state.step, **train_means, **test,
                   **checked_mapping(self.plugin.epoch_metrics(self.model, self.data, self.ctx, epoch), self.plugin,
                                     self.plugin.kind, "epoch_metrics")}
        self.state.history.append(row)
        stop = False
        es = self.cfg.get("early_stopping") or {}
        patience = es.get("patience", 0)
        metric = es.get("metric", "test_loss")
        watched = row.get(metric)
        if patience and watched is None and epoch >= 1 and not any(metric in r for r in self.state.history):
            logged = ", ".join(k for k in row if k.startswith(("train_", "test_")))
            raise ModelConfigError("train.early_stopping.metric", f'"{metric}" is not logged; logged: {logged}')
        if patience and watched is not None:  # (an epoch that does not log it, e.g. AIS's later ones, does not count)
            # lower is better, or higher (accuracy, log-likelihoods, ...) when mode says so: kept negated
            score = -watched if stopping_mode(es) == "max" else watched
            if score < self.state.best - es.get("min_delta", 0.0):
                self.state.best, self.state.bad_epochs = score, 0
            else:
                self.state.bad_epochs += 1
                stop = self.state.bad_epochs >= patience
        if on_epoch is not None:
            on_epoch(row)
        return stop


def _in_dtype(data, dtype):
    """The dataset with float arrays in the graph's dtype: cast once, not at every step (values the
    dtype cannot hold were refused by build_checked's check_in_dtype, before anything was written)."""
    def cast(a):
        return a.astype(dtype) if a is not None and a.dtype.kind == "f" and a.dtype != dtype else a

    return data.replace(x_train=cast(data.x_train), y_train=cast(data.y_train), x_test=cast(data.x_test),
                        y_test=cast(data.y_test))


SPLITS = (("x_train", "training"), ("y_train", "training"), ("x_test", "test"), ("y_test", "test"))


def check_in_dtype(data, dtype) -> None:
    """DataError for finite data beyond the range of the run's float type: cast to float32, a CSV cell
    of 1e300 became inf, and the run failed as "training loss became nan" in a half-written folder.
    runner.build_checked calls it, before anything is written and before the Trainer casts."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return
    top = float(np.finfo(dtype).max)
    for name, split in SPLITS:
        a = getattr(data, name)
        if a is None or a.dtype.kind != "f" or a.dtype.itemsize <= dtype.itemsize or a.size == 0:
            continue
        rows = as_rows(a)
        if not (np.nanmax(rows) > top or np.nanmin(rows) < -top):  # two reductions, no copy of the data
            continue
        _beyond(data, dtype, top, rows, name, split)


def _beyond(data, dtype, top, rows, name, split):
    """The DataError for rows holding values beyond ±top: the largest, the split, the column, the file."""
    big = np.abs(rows) > top
    j = int(np.argwhere(big)[0][1])
    peak = float(np.abs(rows[big]).max())
    names = data.feature_names if name.startswith("x") else None
    column = ("the target" if name.startswith("y") else "feature "
              + (f"{names[j]!r} ({j})" if names and j < len(names) else str(j)))
    params = data.meta.get("params") or {}
    from_test_file = split == "test" and data.meta.get("split", {}).get("kind") == "file"
    file_key = "test_path" if from_test_file else "path"
    key = f"data.{file_key}" if params.get(file_key) else "run.dtype"  # generated data: no file to blame
    where = f"{params[file_key]}: " if params.get(file_key) else ""
    scaled = " (after data.scale)" if name.startswith("x") and data.meta.get("x_scaling") else ""
    fix = ("data.scale_target = true" if name.startswith("y") else 'data.scale = "standardize"')
    raise DataError(f"{where}the {split} data hold values beyond the range of run.dtype = \"{dtype.name}\" "
                    f"(±{top:.3g}): {column} reaches {peak:.3g}{scaled}; set run.dtype = \"float64\", or scale "
                    f"the data ({fix})", key=key)


def _max_all(terms):
    total = terms[0]
    for t in terms[1:]:
        total = ops.maximum(total, t)
    return total


def _sum_all(terms):
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def lbfgs_refusal(plugin, model) -> str | None:
    """Why L-BFGS cannot train this model, or None. It minimises one deterministic full-batch
    loss by calling the loss program itself: a kind with its own batch step (an EBM's Langevin
    negatives), state updated besides the parameters (persistent chains) or a loss that draws
    noise (a VAE's, diffusion's, dropout) would be trained on something else, silently."""
    why = None
    if type(plugin).train_batch is not ModelPlugin.train_batch:
        why = "it trains with its own batch step, which L-BFGS would skip"
    elif model.train_updates:
        why = "each step also updates state besides the parameters (e.g. sampling chains), which L-BFGS would skip"
    elif any(n.op in OPS and OPS[n.op].random for n in topo_order([model.loss])):
        why = "its loss draws random numbers at every evaluation, and L-BFGS needs a deterministic full-batch loss"
    return None if why is None else (f'L-BFGS cannot train the "{plugin.kind}" model: {why}; use a gradient '
                                     'optimizer such as adam')


def optimizer_from_spec(train_cfg: dict, backend: str = "numpy"):
    """The optimizer [train.optimizer] declares, its learning rate driven by [train.schedule];
    None for L-BFGS (which `fit` drives itself). Validation and training both build it
    here; combinations the schema cannot express raise ModelConfigError naming the table."""
    opt_cfg = dict(train_cfg["optimizer"])
    kind = opt_cfg.pop("kind")
    if kind == "lbfgs":
        return None
    sched_cfg = dict(train_cfg.get("schedule") or {"kind": "constant"})
    try:
        opt_cfg["lr"] = make_schedule(sched_cfg.pop("kind"), lr=opt_cfg["lr"], **sched_cfg)
    except ValueError as exc:  # lr is the optimizer's key; the schedule's own keys come first when named
        where = _key_in("train.schedule", sched_cfg, exc, also={"lr": "train.optimizer.lr"})
        raise ModelConfigError(where, str(exc)) from None
    try:
        return make_optimizer(kind, **opt_cfg)
    except ValueError as exc:
        raise ModelConfigError(_key_in("train.optimizer", opt_cfg, exc), str(exc)) from None


def _key_in(table: str, cfg: dict, exc, also: dict | None = None) -> str:
    """The key the error message names first, among `table`'s keys and `also` ({word: dotted key}),
    so that the spec error points at its line, or at the --set that gave it; else the table.
    ("need 0 <= min_lr <= lr" is min_lr's mistake; it was blamed on the optimizer's lr.)"""
    return first_named(str(exc), {k: f"{table}.{k}" for k in cfg} | (also or {})) or table
