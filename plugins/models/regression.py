"""`kind = "regression"`: linear regression on polynomial features -- OLS, Ridge, Lasso.

The model is y ~ X theta, where X is the polynomial design matrix of the input
features: every monomial of total degree <= ``degree`` (a column of ones first when
``include_bias``), in scikit-learn's ``PolynomialFeatures`` order -- by total degree,
then lexicographically by feature index. For two features (Franke's function) and
degree 2 the columns are ``1, x0, x1, x0^2, x0 x1, x1^2``; interaction terms come
automatically. ``summary.json`` lists them under ``terms``, next to ``coefficients``.

Objectives (n = number of training rows; the penalty applies to ALL coefficients of
theta, the bias column's included, as in the lecture -- set ``include_bias = false`` on
centred data to leave an intercept unpenalised):

=========  ==================================================  ================================
method     minimises                                           how
=========  ==================================================  ================================
``ols``    (1/n) ||y - X theta||^2                             ``numpy.linalg.lstsq`` (SVD)
``ridge``  (1/n) ||y - X theta||^2 + lam ||theta||_2^2         SVD, no inverse:
                                                               theta = V diag(s/(s^2 + n lam)) U^T y
``lasso``  (1/n) ||y - X theta||^2 + lam ||theta||_1           cyclic coordinate descent with
                                                               soft-thresholding (threshold n lam/2)
``gd``     (1/n) ||y - X theta||^2 [+ lam * penalty]           the engine: gradient of the loss
                                                               graph, ``[train]`` optimizer
=========  ==================================================  ================================

In scikit-learn terms (``fit_intercept=False`` on the same design matrix):
``Ridge(alpha = n * lam)`` and ``Lasso(alpha = lam / 2)`` -- sklearn's Lasso minimises
(1/(2n)) ||y - X theta||^2 + alpha ||theta||_1, half of ours when alpha = lam / 2.
The tests check both against scikit-learn and against the optimality conditions.

How it is computed. The graph's input ``x`` is the raw feature matrix (n, features);
the design matrix is built inside the graph from ops (column slices of x, products for
the monomials, one ``concat``) under the scope ``design``, so ``gengraph graph`` shows
it; the prediction is ``X @ theta`` with one parameter ``regression/theta`` of shape (p,)
starting at 0. The loss node is the objective above built from ops:
``mse(X theta, y) + lam * sum(theta**2)`` (l2) or ``+ lam * sum(|theta|)`` (l1).

* ``ols``/``ridge``/``lasso`` are fitted in closed form / by coordinate descent in the
  ``fit`` hook, in float64 NumPy on the design matrix built by
  ``regression_solvers.design_matrix`` (the same columns as the graph's), and the
  solution is written into the parameter (``graph.set_value``), so checkpoints and
  graphs show it. The trainer then evaluates the loss graph on the test split
  (``test_loss``), and ``gengraph gradcheck`` can check the loss's gradient. ``[train]``
  is not used. Use ``run.dtype = "float64"`` for coefficients to full precision.
* ``gd`` trains theta through the engine with the ``[train]`` optimizer (``lbfgs``
  reaches the closed-form solution to ~1e-9); ``penalty`` picks the l2 or l1 term.

Report: ``test_mse`` and ``test_r2`` (data units), ``train_loss`` (the minimised
objective on the training split), ``coefficients`` and ``terms``; for lasso also the
number of sweeps, convergence, nonzero count and the KKT violation; ``fit.png`` for 1-D
data.
"""

from __future__ import annotations

import numpy as np

from gengraph.engine import ops

from gengraph.plugins.models.mlp import report_supervised
from gengraph.plugins.model import Model, ModelConfigError, ModelPlugin
from gengraph.plugins.models.regression_solvers import (design_matrix, lasso_cd, lasso_kkt_violation, monomials,
                                                        n_columns, ols, ridge, term_name)
from gengraph.plugins.spec.errors import with_article
from gengraph.plugins.spec.schema import Field, Table
from gengraph.plugins.blocks.memory import too_big
from gengraph.plugins.blocks.plots import coefficients

METHOD_PENALTY = {"ols": "none", "ridge": "l2", "lasso": "l1"}
MAX_CONCAT = 64  # the engine's concat takes at most 64 inputs


def _issue(path: str, message: str) -> ModelConfigError:
    return ModelConfigError(path, message)


def resolve_penalty(cfg: dict) -> str:
    """"none", "l2" or "l1" for the method and penalty keys; ModelConfigError for contradictions."""
    method, penalty, lam = cfg["method"], cfg["penalty"], cfg["lam"]
    if method in METHOD_PENALTY:
        implied = METHOD_PENALTY[method]
        if penalty not in ("auto", implied):
            raise _issue("model.penalty", f'method "{method}" always uses penalty "{implied}"; '
                         f'remove penalty or use method = "gd" for a "{penalty}" penalty by gradient')
        if method == "ols" and lam > 0:
            raise _issue("model.lam", f'method "ols" has no penalty, but lam = {lam}; '
                         'use method = "ridge" or "lasso", or lam = 0')
        return implied
    if penalty == "auto":
        if lam > 0:
            raise _issue("model.penalty", f'method "gd" with lam = {lam} needs penalty = "l2" (ridge) or "l1" (lasso)')
        return "none"
    if penalty == "none" and lam > 0:
        raise _issue("model.lam", f'penalty "none" ignores lam = {lam}; set penalty = "l2" or "l1", or lam = 0')
    return penalty


MAX_COLUMNS = 100_000  # the design is built one graph node per column (46 376 columns: ~5 s)


def _check_size(data, cfg) -> None:
    """The design's size, counted before its columns are listed: 30 features at degree 10 are
    847 660 528 columns, which were listed (and allocated) until the process was killed."""
    f, d = data.n_features, cfg["degree"]
    p = n_columns(f, d, cfg["include_bias"])
    if p > MAX_COLUMNS:
        raise _issue("model.degree", f"degree {d} on {f} features gives {p:,} design-matrix columns, more than "
                                     f"the {MAX_COLUMNS:,} a regression builds (one graph node each); lower "
                                     "model.degree or use fewer features")
    rows = len(data.x_train)
    # float64: X for the graph's feeds, a copy for the solver and its SVD's factors
    if (why := too_big(3.0 * 8 * rows * p, f"the {rows} x {p:,} design matrix of degree {d}")) is not None:
        raise _issue("model.degree", f"{why}; lower model.degree")


def polynomial_features(x, monos):
    """The design matrix as graph: one column per monomial (tuple of feature indices)."""
    used = sorted({j for m in monos for j in m} or {0})
    cols = {j: x[:, j:j + 1] for j in used}  # (batch, 1) columns
    cache = {}
    out = []
    for m in monos:
        if m not in cache:
            if not m:
                cache[m] = ops.ones_like(cols[used[0]])
            elif len(m) == 1:
                cache[m] = cols[m[0]]
            else:
                cache[m] = cache[m[:-1]] * cols[m[-1]]
        out.append(cache[m])
    while len(out) > MAX_CONCAT:
        out = [ops.concat(out[i:i + MAX_CONCAT], axis=1) if len(out[i:i + MAX_CONCAT]) > 1 else out[i]
               for i in range(0, len(out), MAX_CONCAT)]
    return out[0] if len(out) == 1 else ops.concat(out, axis=1)


class Regression(ModelPlugin):
    kind = "regression"
    summary_metric_names = ("test_mse", "test_r2", "train_loss", "coefficients", "terms",
                            "lasso_sweeps", "lasso_converged", "lasso_active_set_steps", "n_nonzero",
                            "kkt_violation")
    summary_data_names = ("coefficients", "terms", "lasso_converged")  # lists and a flag: nothing to rank by
    help = "linear regression on polynomial features: OLS, Ridge, Lasso (closed form / coordinate descent) or gd"
    tasks = ("regression",)

    @property
    def schema(self):
        return Table({
            "degree": Field(int, 1, "polynomial degree of the design matrix (all monomials of total degree "
                            "<= degree, interactions included)", min=0, max=50),
            "include_bias": Field(bool, True, "a column of ones in the design matrix (penalised like the rest)"),
            "method": Field(str, "ols", "ols (lstsq), ridge (SVD), lasso (coordinate descent), or gd "
                            "(the engine with [train] optimizer)", choices=["ols", "ridge", "lasso", "gd"]),
            "lam": Field(float, 0.0, "penalty strength lambda: (1/n)||y - X theta||^2 + lam * penalty(theta)",
                         min=0.0),
            "penalty": Field(str, "auto", "penalty for method gd: none, l2 (lam ||theta||^2), l1 "
                             "(lam ||theta||_1); auto: implied by the method (gd: none)",
                             choices=["auto", "none", "l2", "l1"]),
            "max_iter": Field(int, 100_000, "lasso: maximum coordinate-descent sweeps", min=1),
            "tol": Field(float, 1e-12, "lasso: stop when no coefficient changes by more than "
                         "tol * max(1, max|theta|) in a sweep", min=0.0),
            "active_set": Field(bool, True, "lasso: speed up coordinate descent with exact solves on the "
                                "current support (same solution)"),
        }, help=self.help)

    def build(self, cfg, graph, data, rng):
        if data.task != "regression" or data.y_train is None:
            hint = ""
            if data.task == "classification" and data.meta.get("task_inferred"):
                hint = ('; task = "auto" read its whole-number targets as class labels: '
                        'set data.task = "regression" to fit them as numbers')
            raise _issue("data.source", f'model kind "regression" needs a regression data set; '
                         f'"{data.meta.get("source", "?")}" gives {with_article(data.task)} task{hint}')
        if data.y_train.ndim > 1 and data.y_train.shape[1] != 1:
            raise _issue("data", f"model kind \"regression\" fits one target; the data has {data.y_train.shape[1]}")
        penalty = resolve_penalty(cfg)
        _check_size(data, cfg)
        monos = monomials(data.n_features, cfg["degree"], cfg["include_bias"])
        if not monos:
            raise _issue("model.degree", "degree = 0 without include_bias leaves no column in the design matrix")
        x = graph.input("x", (None, data.n_features))
        y = graph.input("y", (None,))
        with graph.scope("design"):
            X = polynomial_features(x, monos)
        with graph.scope("regression"):
            theta = graph.param("theta", np.zeros(len(monos)))
            pred = X @ theta
        lam = cfg["lam"]
        with graph.scope("loss"):
            mse = ops.mse(pred, y)
            if penalty == "l2":
                loss = mse + lam * ops.sum(ops.square(theta))
            elif penalty == "l1":
                loss = mse + lam * ops.sum(ops.abs(theta))
            else:
                loss = mse
        feeds = lambda xb, yb: {"x": xb, **({} if yb is None else {"y": np.reshape(yb, -1)})}  # noqa: E731
        extras = {"output": pred, "head": "regression", "theta": theta, "design": X, "data_loss": mse,
                  "monomials": monos, "terms": [term_name(m) for m in monos], "method": cfg["method"],
                  "penalty": penalty, "lam": lam, "cfg": dict(cfg)}
        return Model(graph, [theta], loss, {"x": x, "y": y}, metrics={"mse": mse}, feeds=feeds, extras=extras,
                     programs={"predict": (pred, {})})

    def fits_without_gradients(self, model) -> bool:
        return model.extras["method"] != "gd"

    def fit(self, model, data, ctx) -> bool:
        ex = model.extras
        method = ex["method"]
        if method == "gd":
            return False
        cfg = ex["cfg"]
        X = design_matrix(data.x_train, cfg["degree"], cfg["include_bias"])
        y = np.asarray(data.y_train, np.float64).reshape(-1)
        info = {}
        if method == "ols":
            theta = ols(X, y)
        elif method == "ridge":
            theta = ridge(X, y, ex["lam"])
        else:
            res = lasso_cd(X, y, ex["lam"], tol=cfg["tol"], max_iter=cfg["max_iter"], active_set=cfg["active_set"])
            theta = res.theta
            info = {"lasso_sweeps": res.sweeps, "lasso_converged": res.converged,
                    "lasso_active_set_steps": res.polished, "n_nonzero": int(np.count_nonzero(theta)),
                    "kkt_violation": lasso_kkt_violation(X, y, theta, ex["lam"])}
            if not res.converged:
                ctx.log(f"lasso: coordinate descent did not converge in {res.sweeps} sweeps "
                        f"(last change {res.max_change:.3g}); raise model.max_iter")
        model.graph.set_value(ex["theta"], theta)
        ex["solution"], ex["solver_info"] = theta, info
        return True

    def report(self, model, data, ctx):
        out = report_supervised(model, data, ctx)
        out.pop("params", None)
        if ctx.evaluate is not None and "evaluate" in ctx.programs:
            out["train_loss"] = ctx.evaluate(data.x_train, data.y_train)["loss"]
        theta = model.graph.value(model.extras["theta"]).astype(np.float64)
        out["coefficients"] = theta.tolist()
        out["terms"] = model.extras["terms"]
        if ctx.plots and ctx.run_dir is not None:
            coefficients(out["terms"], theta, ctx.path("coefficients.png"),
                         f"{model.extras.get('method', 'fitted')} coefficients by term".strip())
        out.update(model.extras.get("solver_info", {}))
        return out


plugin = Regression()
