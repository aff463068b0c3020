"""L-BFGS (plugins/blocks/lbfgs.py) against scipy's L-BFGS-B and known minima, and the spec
runner's use of it: what it reaches on badly scaled problems, when it stops, what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.plugins.blocks.lbfgs import lbfgs

SPECS = Path(__file__).resolve().parents[1] / "specs"


def rosenbrock(x):
    a, b = x
    f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
    return f, np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])


def test_rosenbrock_from_the_classic_start():
    # sufficient decrease alone accepted steps of negative curvature, whose pairs were dropped:
    # f = 2.37 at (-0.54, 0.30) after 500 iterations
    seen = []
    x, f, steps = lbfgs(rosenbrock, np.array([-1.2, 1.0]), max_iter=500, tol=1e-12,
                        callback=lambda i, fi: seen.append((i, fi)))
    assert f < 1e-12 and np.max(np.abs(x - 1.0)) < 1e-5
    assert steps <= 60 and [i for i, _ in seen] == list(range(1, steps + 1))
    assert all(b[1] < a[1] for a, b in zip(seen, seen[1:]))  # every accepted step lowers f


def test_a_steep_start_is_scaled():
    # 0.5 * 1e14 |x|^2: the unscaled first step (1 along -g) was halved 40 times in vain and x0
    # came back unchanged, f = 2.5e14, with no error
    def f(x):
        return 0.5e14 * float(x @ x), 1e14 * x

    x, fx, steps = lbfgs(f, np.array([1.0, -2.0]), tol=1e-10)
    assert np.max(np.abs(x)) < 1e-12 and fx < 1e-10 and 1 <= steps <= 5


def test_matches_scipy_on_a_badly_scaled_logistic_regression():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 5)) * np.array([1.0, 10.0, 100.0, 0.1, 1000.0])
    y = (X @ rng.standard_normal(5) / 100 + rng.standard_normal(200) > 0).astype(float)

    def f(w):
        z = X @ w
        loss = np.mean(np.logaddexp(0, z) - y * z) + 1e-3 * float(w @ w)
        return loss, X.T @ (0.5 + 0.5 * np.tanh(z / 2) - y) / len(y) + 2e-3 * w  # sigmoid(z)

    x, fx, _ = lbfgs(f, np.zeros(5), max_iter=1000, tol=1e-13)
    ref = scipy_optimize.minimize(f, np.zeros(5), jac=True, method="L-BFGS-B",
                                  options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000})
    assert fx <= ref.fun + 1e-12
    assert np.max(np.abs(x - ref.x)) < 1e-4 * np.max(np.abs(ref.x))


def test_steps_are_counted():
    # the pass in which it stopped was counted too: 1 'iteration' from the minimum, with no step
    def quad(x):
        return float(x @ x), 2 * x

    assert lbfgs(quad, np.zeros(3))[2] == 0
    calls = []
    x, f, steps = lbfgs(quad, np.array([1.0, -2.0, 3.0]), tol=0.0, callback=lambda i, fi: calls.append(i))
    assert f == 0.0 and calls == list(range(1, steps + 1))  # one count per step taken, no more


def test_a_non_finite_gradient_is_an_error():
    # a NaN gradient beside a finite loss returned x0 silently (no DivergenceError, exit 0)
    with pytest.raises(FloatingPointError, match="gradient is not finite"):
        lbfgs(lambda x: (float(x @ x), np.full_like(x, np.nan)), np.ones(2))

    def nan_beyond(x):  # finite near the start, NaN gradient further along the first direction
        return float(x @ x), (2 * x if x[0] > 0.5 else np.full_like(x, np.nan))

    with pytest.raises(FloatingPointError, match="gradient is not finite"):
        lbfgs(nan_beyond, np.array([1.0, 0.0]))


def test_a_loss_that_overflows_past_the_start_shrinks_the_step():
    def f(x):  # inf beyond |x| > 2: the first trial point (x0 - g scaled) lands there
        return (float(x @ x), 2 * x) if np.max(np.abs(x)) <= 2 else (np.inf, np.full_like(x, np.inf))

    x, fx, _ = lbfgs(f, np.array([1.5, -1.5]))
    assert fx < 1e-12


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_raw_cubic_regression_reaches_the_closed_form(tmp_path):
    # x in [0, 100] (x^3 up to 1e6): the old line search stopped on a plateau at train MSE 1.79
    # where OLS has 0.0100
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, 300)
    y = 5 + 0.2 * x - 0.004 * x ** 2 + 3e-5 * x ** 3 + 0.1 * rng.standard_normal(300)
    np.savetxt(tmp_path / "raw.csv", np.column_stack([x, y]), delimiter=",", header="x,y", comments="")
    (tmp_path / "raw.toml").write_text(
        'spec_version = 1\n[run]\ndtype = "float64"\n[data]\nsource = "csv"\npath = "raw.csv"\n'
        '[model]\nkind = "regression"\nmethod = "gd"\ndegree = 3\n'
        '[train]\noptimizer = { kind = "lbfgs", max_iter = 500 }\nbatch_size = 0\n[output]\nplots = false\n')
    summaries = {}
    for method in ("gd", "ols"):
        r = _invoke("run", tmp_path / "raw.toml", "--set", f'model.method="{method}"', "--out", tmp_path / method, "-q")
        assert r.exit_code == 0, r.output
        summaries[method] = json.loads((tmp_path / method / "summary.json").read_text())
    gd, ols = (np.array(summaries[m]["coefficients"]) for m in ("gd", "ols"))
    assert np.max(np.abs(gd - ols) / np.maximum(np.abs(ols), 1e-12)) < 1e-6
    # the design matrix's condition number is ~1e12: which BLAS kernels run (OpenBLAS's AVX-512 or
    # Haswell ones) moves the solution in its 7th digit (rel 1.6e-7 on the test MSE seen), as above
    assert summaries["gd"]["test_mse"] == pytest.approx(summaries["ols"]["test_mse"], rel=1e-6)
    row = json.loads((tmp_path / "gd" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["lbfgs_iterations"] == row["step"] >= 1


@pytest.mark.parametrize("spec,kind,why", [
    ("ebm_moons.toml", "ebm", "its own batch step"),
    ("vae_digits.toml", "vae", "draws random numbers"),
    ("rbm_digits.toml", "rbm", "draws random numbers"),
    ("diffusion_moons.toml", "diffusion", "draws random numbers"),
])
def test_models_lbfgs_cannot_train_are_refused(tmp_path, spec, kind, why):
    # it called the loss program itself: an EBM's Langevin negatives were never drawn (train_loss
    # -246.8, exit 0), and noisy losses were "minimised" one draw at a time
    out = tmp_path / "r"
    r = _invoke("run", SPECS / spec, "--set", 'train.optimizer={kind="lbfgs"}', "--out", out, "-q")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f'--set: train.optimizer.kind: L-BFGS cannot train the "{kind}" model' in r.output and why in r.output
    assert not out.exists() or not any(out.iterdir())


def test_a_deterministic_network_loss_is_accepted():
    r = _invoke("validate", SPECS / "mlp_digits.toml", "--set", 'train.optimizer={kind="lbfgs"}')
    assert r.exit_code == 0, r.output
