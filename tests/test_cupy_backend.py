"""The same programs on CuPy give NumPy's numbers. Skips cleanly without CuPy or a GPU."""

import numpy as np
import pytest

from gengraph.engine import Graph, compile, cupy_available, grad, ops, to_numpy

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not cupy_available(), reason="needs CuPy and an NVIDIA GPU")]

UNARY = ["exp", "tanh", "sigmoid", "relu", "softplus", "gelu", "elu", "leaky_relu", "abs", "square", "sin", "cos",
         "log_softmax", "softmax"]


def _mlp(backend, steps=5):
    rng = np.random.default_rng(0)
    g = Graph(dtype="float64", seed=3)
    x = g.input("x", (None, 8))
    y = g.input("y", (None,), dtype="int64")
    W1 = g.param("W1", rng.normal(size=(8, 16)) * 0.3)
    W2 = g.param("W2", rng.normal(size=(16, 4)) * 0.3)
    h = ops.tanh(x @ W1)
    h = h * ops.bernoulli(ops.sigmoid(h) * 0 + 0.9, stream=1)  # noise from the backend's generator
    loss = ops.mean(ops.softmax_cross_entropy(h @ W2, y))
    gW1, gW2 = grad(loss, [W1, W2])
    prog = compile(g, {"loss": loss}, {W1: W1 - 0.1 * gW1, W2: W2 - 0.1 * gW2}, backend=backend)
    X, Y = rng.normal(size=(32, 8)), rng.integers(0, 4, size=32)
    losses = [float(to_numpy(prog.run(x=X, y=Y)["loss"])) for _ in range(steps)]
    return losses, g.value(W1), g


def test_unary_ops_match_numpy():
    x = np.linspace(-3, 3, 24).reshape(4, 6)
    for name in UNARY:
        outs = {}
        for backend in ("numpy", "cupy"):
            g = Graph(dtype="float64")
            node = g.input("x", (4, 6))
            outs[backend] = to_numpy(compile(g, getattr(ops, name)(node), backend=backend).run(x=x))
        np.testing.assert_allclose(outs["cupy"], outs["numpy"], rtol=1e-12, atol=1e-14, err_msg=name)


def test_training_runs_on_gpu_and_params_stay_on_device():
    import cupy

    losses, W1, g = _mlp("cupy", steps=20)
    assert losses[-1] < losses[0]
    # the parameter store lives on the device (constants are moved when a program binds them)
    assert all(isinstance(g.values[n.id], cupy.ndarray) for n in g.params() + g.states())
    assert isinstance(W1, np.ndarray)  # Graph.value copies back to the host


def test_deterministic_parts_match_numpy_without_noise():
    results = {}
    for backend in ("numpy", "cupy"):
        rng = np.random.default_rng(1)
        g = Graph(dtype="float64")
        x = g.input("x", (None, 5))
        W = g.param("W", rng.normal(size=(5, 3)))
        loss = ops.mean(ops.logsumexp(x @ W, axis=1)) + ops.sum(ops.square(W))
        gW = grad(loss, W)
        prog = compile(g, loss, {W: W - 0.05 * gW}, backend=backend)
        X = rng.normal(size=(64, 5))
        for _ in range(10):
            prog.run(x=X)
        results[backend] = g.value(W)
    np.testing.assert_allclose(results["cupy"], results["numpy"], rtol=1e-12)


def test_cli_run_on_cuda(tmp_path):
    import json
    from pathlib import Path

    from click.testing import CliRunner

    from gengraph.cli.main import main

    spec = Path(__file__).resolve().parents[1] / "specs" / "mlp_digits.toml"
    result = CliRunner().invoke(main, ["run", str(spec), "--device", "cuda", "--out", str(tmp_path / "r"), "-q",
                                       "--set", "train.epochs=10"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["test_accuracy"] > 0.9


def test_fused_adam_kernels_match_numpy():
    rng = np.random.default_rng(2)
    p, m, g = (rng.normal(size=(5, 7)) for _ in range(3))
    v = rng.random((5, 7)) + 0.1
    outs = {}
    for backend in ("numpy", "cupy"):
        gr = Graph(dtype="float64")
        P, M, V, G = (gr.input(n, (5, 7)) for n in "pmvg")
        s, c = gr.constant(0.3, dtype="float64"), gr.constant(0.7, dtype="float64")
        prog = compile(gr, [ops.ema(M, G, decay=0.9), ops.ema(V, G, decay=0.99, square=True),
                            ops.adam_step(P, M, V, s, c, eps=1e-3)], backend=backend)
        outs[backend] = [to_numpy(a) for a in prog.run(p=p, m=m, v=v, g=g)]
    for a, b in zip(outs["cupy"], outs["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(outs["numpy"][2], p - 0.3 * m / (np.sqrt(v) / 0.7 + 1e-3), rtol=1e-12)
