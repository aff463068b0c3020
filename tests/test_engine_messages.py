"""Messages of the engine and of gengraph gradcheck that said the wrong thing (found by a probe):
a batch-size mismatch called an out-of-range label, an expression without inputs an
AttributeError, a non-finite loss wrong gradients, a kink a wrong gradient without a hint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gengraph.cli.main import main
from gengraph.engine import Graph, check_grads, compile, ops, value_and_grad
from gengraph.engine.expr import ExprError, UnknownInput
from gengraph.engine.ops.nn import LabelError

SPECS = Path(__file__).resolve().parents[1] / "specs"


@pytest.mark.parametrize("op", ["softmax_cross_entropy", "correct"])
def test_labels_for_another_batch_size_say_so(op):
    g = Graph(dtype="float64")
    x, y = g.input("x", (None, 3)), g.input("y", (None,), dtype="int64")
    z = x @ g.param("W", np.ones((3, 4)))
    prog = compile(g, ops.mean(getattr(ops, op)(z, y)))
    with pytest.raises(LabelError, match=f"{op}: 3 labels for 5 rows of logits: the batch sizes differ"):
        prog.run(x=np.ones((5, 3)), y=np.array([0, 1, 2]))
    with pytest.raises(LabelError, match=r"must lie in 0\.\.3 \(4 classes\), found 7"):  # out of range: as before
        prog.run(x=np.ones((3, 3)), y=np.array([0, 1, 7]))
    prog.run(x=np.ones((3, 3)), y=np.array([0, 1, 2]))  # one label per row: runs


def test_an_expression_without_inputs_and_bad_check_options_are_named():
    for call in (lambda: value_and_grad("1+2", {"x": np.ones(2)}, ["x"]), lambda: check_grads("2", {"x": np.ones(2)})):
        with pytest.raises(ExprError, match="uses none of the inputs"):
            call()
    for eps in (0, -1e-6, 2.0):
        with pytest.raises(ValueError, match="eps must be a step in"):
            check_grads("sum(x**2)", {"x": np.ones(2)}, eps=eps)
    with pytest.raises(UnknownInput, match=r"wrt names \['y'\] are not inputs"):
        check_grads("sum(x**2)", {"x": np.ones(2)}, wrt=["y"])
    assert check_grads("sum(x**2)", {"x": np.ones(2)}, wrt="x").ok


def test_gradcheck_says_when_the_loss_is_not_finite_and_checks_a_name_once():
    res = CliRunner().invoke(main, ["gradcheck", str(SPECS / "mlp_quadratic.toml"), "--perturb", "1e300"])
    assert res.exit_code == 1 and "the loss is inf at these parameters" in res.output, res.output
    res = CliRunner().invoke(main, ["gradcheck", str(SPECS / "mlp_quadratic.toml"),
                                    "--param", "hidden/dense0/W", "--param", "hidden/dense0/W"])
    assert res.exit_code == 0 and "ok: 1 parameter(s)" in res.output, res.output


def test_a_failure_at_a_kink_suggests_checking_away_from_it(tmp_path):
    # relu at exactly 0 (zero-initialised weights): the engine's subgradient is right, the
    # differences straddle the kink; the report blamed the gradient with no way on
    spec = tmp_path / "kink.toml"
    spec.write_text((SPECS / "mlp_digits.toml").read_text())
    res = CliRunner().invoke(main, ["gradcheck", str(spec), "--set",
                                    'model.layers=[{units = 8, activation = "relu", init = "zeros"}]'])
    assert res.exit_code == 1 and "failed for 2 of 4 parameter(s): hidden/dense0/W" in res.output, res.output
    assert "exactly at a kink" in res.output and "--perturb 0.01" in res.output
    res = CliRunner().invoke(main, ["gradcheck", str(spec), "--perturb", "0.01", "--set",
                                    'model.layers=[{units = 8, activation = "relu", init = "zeros"}]'])
    assert res.exit_code == 0, res.output  # away from the kink the engine's gradient checks out
