"""`kind = "regression"`: OLS, Ridge, Lasso and gd against independent solutions.

The specs in specs/ are run through the CLI (`gengraph run SPEC --out DIR`); the
coefficients in summary.json are compared with solutions computed here from the same
data (`make_dataset` with the spec's [data] and seed): the normal equations with
`np.linalg.solve`, scikit-learn where installed, and the Lasso optimality (KKT)
conditions, which need no scikit-learn. The objective scaling is what these
comparisons pin down: Ridge(alpha = n lam), Lasso(alpha = lam / 2), and the loss graph's
value (train_loss) equal to (1/n)||y - X theta||^2 + lam * penalty.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.engine import Graph, compile, grad, to_numpy
from gengraph.engine.gradcheck import central_differences
from gengraph.plugins.datasets import make_dataset
from gengraph.plugins.run.loading import load
from gengraph.plugins.models.regression import plugin as regression_plugin
from gengraph.plugins.models.regression_solvers import design_matrix, lasso_cd, lasso_kkt_violation, monomials, term_name

SPECS = Path(__file__).resolve().parents[1] / "specs"


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def run_spec(name, out, *overrides):
    """Run specs/NAME.toml through the CLI; (summary, design matrix, y, n, resolved spec) of the run."""
    spec_path = SPECS / f"{name}.toml"
    args = ["run", str(spec_path), "--out", str(out), "--quiet"]
    for o in overrides:
        args += ["--set", o]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((Path(out) / "summary.json").read_text())
    spec = load(spec_path, list(overrides)).data
    data = make_dataset(spec["data"], spec["run"]["seed"])
    X = design_matrix(data.x_train, spec["model"]["degree"], spec["model"]["include_bias"])
    return summary, X, data.y_train, len(data.y_train), spec


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("regression_runs")
    return {name: run_spec(name, base / name) for name in ("ols_franke", "ridge_franke", "lasso_franke")}


# ---- design matrix -------------------------------------------------------------------------
def test_design_columns_and_names_follow_polynomialfeatures_order():
    assert monomials(2, 2) == [(), (0,), (1,), (0, 0), (0, 1), (1, 1)]
    assert [term_name(m) for m in monomials(2, 3)] == \
        ["1", "x0", "x1", "x0^2", "x0 x1", "x1^2", "x0^3", "x0^2 x1", "x0 x1^2", "x1^3"]
    assert len(monomials(2, 5)) == 21 and len(monomials(2, 5, include_bias=False)) == 20
    x = np.array([[2.0, 3.0]])
    np.testing.assert_array_equal(design_matrix(x, 2), [[1, 2, 3, 4, 6, 9]])


def test_design_matrix_equals_sklearn_polynomialfeatures():
    sk = pytest.importorskip("sklearn.preprocessing")
    x = np.random.default_rng(0).uniform(-1, 1, (30, 3))
    for degree, bias in ((1, True), (3, True), (4, False)):
        expected = sk.PolynomialFeatures(degree, include_bias=bias).fit_transform(x)
        np.testing.assert_allclose(design_matrix(x, degree, bias), expected, rtol=1e-15, atol=0)


def _tiny_model(degree=3, method="gd", lam=0.0, penalty="auto", n=12, source="franke"):
    data = make_dataset({"source": source, "n": n, "noise": 0.1}, 1)
    cfg = {"degree": degree, "include_bias": True, "method": method, "lam": lam, "penalty": penalty,
           "max_iter": 100000, "tol": 1e-12, "active_set": True}
    graph = Graph(dtype="float64")
    model = regression_plugin.build(cfg, graph, data, np.random.default_rng(0))
    return data, graph, model


def test_graph_design_matrix_equals_numpy_design_matrix():
    data, graph, model = _tiny_model(degree=5)
    got = to_numpy(compile(graph, model.extras["design"]).run(x=data.x_train))
    np.testing.assert_allclose(got, design_matrix(data.x_train, 5), rtol=1e-14, atol=0)
    assert model.extras["terms"][:6] == ["1", "x0", "x1", "x0^2", "x0 x1", "x1^2"]


# ---- OLS / Ridge -----------------------------------------------------------------------------
def test_ols_matches_normal_equations(runs):
    summary, X, y, n, _ = runs["ols_franke"]
    theta = np.array(summary["coefficients"])
    assert theta.shape == (21,) and len(summary["terms"]) == 21
    assert rel_err(theta, np.linalg.solve(X.T @ X, X.T @ y)) < 1e-8
    # the loss graph's value on the training split is the OLS objective (1/n)||y - X theta||^2
    assert summary["train_loss"] == pytest.approx(np.mean((y - X @ theta) ** 2), rel=1e-12)
    assert 0.0 < summary["test_mse"] < 0.02 and 0.75 < summary["test_r2"] < 1.0


def test_ridge_matches_normal_equations(runs):
    summary, X, y, n, spec = runs["ridge_franke"]
    lam = spec["model"]["lam"]
    assert lam == 1e-3
    theta = np.array(summary["coefficients"])
    # (1/n)||y - X theta||^2 + lam ||theta||^2  <=>  (X^T X + n lam I) theta = X^T y
    expected = np.linalg.solve(X.T @ X + n * lam * np.eye(X.shape[1]), X.T @ y)
    assert rel_err(theta, expected) < 1e-8
    assert summary["train_loss"] == pytest.approx(np.mean((y - X @ theta) ** 2) + lam * theta @ theta, rel=1e-12)
    # the scaling matters: lam without the factor n is a different solution
    wrong = np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ y)
    assert rel_err(theta, wrong) > 1e-2


def test_ols_and_ridge_match_sklearn(runs):
    lm = pytest.importorskip("sklearn.linear_model")
    summary, X, y, n, _ = runs["ols_franke"]
    ref = lm.LinearRegression(fit_intercept=False).fit(X, y).coef_
    assert rel_err(summary["coefficients"], ref) < 1e-8
    summary, X, y, n, spec = runs["ridge_franke"]
    ref = lm.Ridge(alpha=n * spec["model"]["lam"], fit_intercept=False, solver="svd").fit(X, y).coef_
    assert rel_err(summary["coefficients"], ref) < 1e-8


def test_closed_form_solution_zeroes_the_engine_gradient(runs):
    """The engine's loss graph is the same objective the closed forms minimise."""
    for method, lam in (("ols", 0.0), ("ridge", 1e-3)):
        data, graph, model = _tiny_model(degree=3, method=method, lam=lam, n=60)
        assert regression_plugin.fit(model, data, ctx=None) is True
        theta = model.params[0]
        g = to_numpy(compile(graph, grad(model.loss, theta)).run(model.feed(data.x_train, data.y_train)))
        assert np.max(np.abs(g)) < 1e-10
        X = design_matrix(data.x_train, 3)
        assert np.max(np.abs(graph.value(theta) - model.extras["solution"])) == 0.0
        assert np.linalg.norm(graph.value(theta)) > 0.1 and X.shape[1] == 10


# ---- Lasso --------------------------------------------------------------------------------------
def _assert_kkt(theta, X, y, lam):
    """(2/n)|X^T (y - X theta)| <= lam, with equality (and matching sign) where theta_j != 0."""
    n = len(y)
    g = 2.0 / n * (X.T @ (y - X @ theta))
    nz = theta != 0
    assert np.all(np.abs(g) <= lam * (1 + 1e-8))
    np.testing.assert_allclose(g[nz], lam * np.sign(theta[nz]), rtol=1e-8, atol=0)
    assert lasso_kkt_violation(X, y, theta, lam) < 1e-8 * lam


def test_lasso_satisfies_the_optimality_conditions(runs):
    summary, X, y, n, spec = runs["lasso_franke"]
    lam = spec["model"]["lam"]
    theta = np.array(summary["coefficients"])
    _assert_kkt(theta, X, y, lam)
    assert summary["lasso_converged"] is True
    assert 0 < summary["n_nonzero"] == np.count_nonzero(theta) < len(theta)  # sparse, not empty
    assert summary["train_loss"] == pytest.approx(np.mean((y - X @ theta) ** 2) + lam * np.abs(theta).sum(),
                                                  rel=1e-12)


def test_lasso_small_lambda_converges_to_the_optimum(tmp_path):
    """lam = 1e-4 on the degree-5 Franke design: ill-conditioned, still exactly optimal."""
    summary, X, y, n, _ = run_spec("lasso_franke", tmp_path, "model.lam=1e-4")
    theta = np.array(summary["coefficients"])
    _assert_kkt(theta, X, y, 1e-4)
    assert summary["lasso_converged"] is True and summary["lasso_sweeps"] < 5000


def test_lasso_coordinate_descent_without_active_set_gives_the_same_solution():
    data = make_dataset({"source": "franke", "n": 400, "noise": 0.1}, 0)
    X, y = design_matrix(data.x_train, 5), data.y_train
    fast = lasso_cd(X, y, 1e-3)
    plain = lasso_cd(X, y, 1e-3, active_set=False)
    assert fast.converged and plain.converged and plain.polished == 0
    assert fast.sweeps < plain.sweeps
    assert rel_err(fast.theta, plain.theta) < 1e-8
    np.testing.assert_array_equal(fast.theta == 0, plain.theta == 0)


def test_lasso_matches_sklearn(runs):
    lm = pytest.importorskip("sklearn.linear_model")
    summary, X, y, n, spec = runs["lasso_franke"]
    lam = spec["model"]["lam"]
    # ours: (1/n)||y - X theta||^2 + lam |theta|_1 ; sklearn: (1/(2n))||y - X w||^2 + alpha |w|_1
    ref = lm.Lasso(alpha=lam / 2, fit_intercept=False, tol=1e-12, max_iter=100000).fit(X, y).coef_
    assert rel_err(summary["coefficients"], ref) < 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # alpha = lam converges more slowly; only its difference matters
        other = lm.Lasso(alpha=lam, fit_intercept=False, tol=1e-8, max_iter=20000).fit(X, y).coef_
    assert rel_err(summary["coefficients"], other) > 1e-2


# ---- gd through the engine -------------------------------------------------------------------
def test_gd_reaches_the_ols_solution(tmp_path):
    summary, X, y, n, spec = run_spec("regression_gd", tmp_path / "gd")
    assert spec["model"]["method"] == "gd" and spec["train"]["optimizer"]["kind"] == "lbfgs"
    theta = np.array(summary["coefficients"])
    ols = np.linalg.lstsq(X, y, rcond=None)[0]
    assert np.max(np.abs(theta - ols)) < 1e-6
    assert summary["terms"] == ["1", "x0", "x0^2", "x0^3"]
    np.testing.assert_allclose(theta[:3], [1.0, 2.0, -3.0], atol=0.1)  # the generating polynomial
    assert summary["test_r2"] > 0.98
    assert (tmp_path / "gd" / "fit.png").stat().st_size > 1000


def test_gd_with_l2_penalty_reaches_the_ridge_solution(tmp_path):
    summary, X, y, n, _ = run_spec("regression_gd", tmp_path, 'model.penalty="l2"', "model.lam=0.01")
    expected = np.linalg.solve(X.T @ X + n * 0.01 * np.eye(X.shape[1]), X.T @ y)
    assert np.max(np.abs(np.array(summary["coefficients"]) - expected)) < 1e-6


# ---- gradient of the loss graph ----------------------------------------------------------------
@pytest.mark.parametrize("penalty,lam", [("none", 0.0), ("l2", 0.3), ("l1", 0.3)])
def test_loss_gradient_matches_finite_differences(penalty, lam):
    data, graph, model = _tiny_model(degree=2, penalty=penalty, lam=lam, n=10)
    theta = model.params[0]
    # away from 0, where |theta| has its kink
    graph.set_value(theta, np.random.default_rng(3).choice([-1, 1], 6) * np.random.default_rng(4).uniform(0.2, 1, 6))
    feeds = model.feed(data.x_train, data.y_train)
    analytic = to_numpy(compile(graph, grad(model.loss, theta)).run(feeds))
    value = compile(graph, model.loss)
    numeric = central_differences(lambda: to_numpy(value.run(feeds)), graph.values[theta.id])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
    assert np.max(np.abs(analytic)) > 0.01


# ---- spec mistakes --------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (["model.lam=0.1"], 'method "ols" has no penalty'),
    (['model.penalty="l1"'], 'always uses penalty "none"'),
    (['model.method="gd"', "model.lam=0.1"], 'needs penalty = "l2"'),
    (["model.degree=0", "model.include_bias=false"], "no column"),
])
def test_contradictory_keys_are_spec_errors(tmp_path, overrides, message):
    args = ["run", str(SPECS / "ols_franke.toml"), "--out", str(tmp_path), "--quiet"]
    for o in overrides:
        args += ["--set", o]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize("lam", [0.0, 1e-14, 1e-10])
def test_ridge_on_an_ill_conditioned_design_is_the_minimiser(lam):
    # the SVD cutoff was on s^2 + n lam against eps max(n, p) s_max^2: on Franke at degree 10
    # (condition number 7e7) it dropped 10 of 66 directions, so ridge at lam = 0 was not OLS
    # (train loss 0.008254 vs 0.007903) and at 1e-14 not the minimiser
    from gengraph.plugins.models.regression_solvers import ols, ridge

    ds = make_dataset({"source": "franke", "n": 400, "noise": 0.1}, 0)
    X, y = design_matrix(ds.x_train, 10), ds.y_train.reshape(-1)
    n, p = X.shape
    assert np.linalg.cond(X) > 1e7

    def objective(theta):
        return np.mean((y - X @ theta) ** 2) + lam * theta @ theta

    got = ridge(X, y, lam)
    # the independent reference: least squares on the stacked system [X; sqrt(n lam) I] theta = [y; 0]
    ref = ols(X, y) if lam == 0 else np.linalg.lstsq(np.vstack([X, np.sqrt(n * lam) * np.eye(p)]),
                                                     np.concatenate([y, np.zeros(p)]), rcond=None)[0]
    assert objective(got) <= objective(ref) * (1 + 1e-9)
    if lam == 0:
        np.testing.assert_allclose(X @ got, X @ ref, rtol=0, atol=1e-9)


def _wide_csv(path, n=40, features=30, constant_test=False):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, features))
    y = x[:, 0] - 2 * x[:, 1] + 0.1 * rng.standard_normal(n)
    cols = ",".join(f"x{i}" for i in range(features)) + ",y"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=cols, comments="")
    return path


def _regression_spec(tmp_path, data, degree, extra=""):
    spec = tmp_path / "r.toml"
    spec.write_text(f'spec_version = 1\n[data]\nsource = "csv"\npath = "{data.name}"\ntask = "regression"\n{extra}'
                    f'[model]\nkind = "regression"\ndegree = {degree}\n')
    return spec


def test_a_design_too_large_to_build_is_a_spec_error(tmp_path):
    # 30 features at degree 10 (847 660 528 columns): the columns were listed and allocated until
    # the process was killed (24 GB), leaving the run folder locked
    spec = _regression_spec(tmp_path, _wide_csv(tmp_path / "wide.csv"), 10)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "r.toml:8:1: model.degree: degree 10 on 30 features gives 847,660,528 design-matrix columns" in result.output
    assert not out.exists()
    assert monomials(30, 3) and len(monomials(30, 3)) == 5456  # the count the check uses, against the listing
    from gengraph.plugins.models.regression_solvers import n_columns
    assert [n_columns(f, d, b) for f, d, b in [(30, 3, True), (2, 5, False), (1, 0, True)]] == [5456, 20, 1]
    assert len(monomials(2, 5, False)) == 20


def test_many_terms_plot_the_largest_coefficients(tmp_path):
    # one 0.25-inch bar per term: 5456 terms made a 136 550-pixel-wide image and took 30 s
    from gengraph.plugins.blocks.plots import MAX_BARS, coefficients

    theta = np.linspace(-1, 1, 5456) ** 3
    coefficients([f"t{i}" for i in range(theta.size)], theta, tmp_path / "c.png")
    header = (tmp_path / "c.png").read_bytes()[16:24]
    width = int.from_bytes(header[:4], "big")
    assert width <= (0.25 * MAX_BARS + 1.5) * 110


@pytest.mark.parametrize("case", ["constant test targets", "one test row"])
def test_an_undefined_r2_follows_scikit_learn(tmp_path, case):
    # SS_tot = 0 gave test_r2 = -inf or NaN, and a correct fit was reported as a failed run (exit 1)
    if case == "one test row":
        spec = tmp_path / "r.toml"
        spec.write_text('spec_version = 1\n[data]\nsource = "franke"\nn = 5\ntest_fraction = 0.2\n'
                        '[model]\nkind = "regression"\ndegree = 1\n')
    else:
        rng = np.random.default_rng(1)
        x = rng.uniform(0, 1, 30)
        np.savetxt(tmp_path / "train.csv", np.column_stack([x, 1 + 2 * x]), delimiter=",", header="x,y", comments="")
        np.savetxt(tmp_path / "test.csv", np.column_stack([np.full(5, 0.5), np.full(5, 2.5)]), delimiter=",",
                   header="x,y", comments="")
        spec = tmp_path / "r.toml"
        spec.write_text('spec_version = 1\n[data]\nsource = "csv"\npath = "train.csv"\ntest_path = "test.csv"\n'
                        'task = "regression"\n[model]\nkind = "regression"\ndegree = 1\n')
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    from gengraph.plugins.models.mlp import r2_score
    assert r2_score(np.zeros((3, 1)), np.ones((3, 1))) == 1.0  # a perfect fit of constant targets
    if case == "constant test targets":  # the test targets are all 2.5 at x = 0.5, where the fit gives 2.0
        assert summary["test_r2"] == 0.0 and summary["test_mse"] == pytest.approx(0.25, rel=1e-9)
        sklearn_metrics = pytest.importorskip("sklearn.metrics")
        assert sklearn_metrics.r2_score(np.full(5, 2.5), np.full(5, 2.0)) == 0.0
    else:
        assert summary["test_r2"] is None and np.isfinite(summary["test_mse"])  # sklearn: NaN, "not well-defined"
        assert "test_r2" in (tmp_path / "o" / "summary.txt").read_text()
