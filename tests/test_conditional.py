"""Class-conditional diffusion with classifier-free guidance: label dropout, the guided output,
and a shortened digits run whose class-K samples the digit classifier reads as K."""

from pathlib import Path

import numpy as np
import pytest

from gengraph.engine import Graph, compile
from gengraph.plugins.models import digit_quality as dq
from gengraph.plugins.models import conditional as cond

ROOT = Path(__file__).resolve().parents[1]


def test_label_dropout_replaces_a_fraction_p_by_the_null_label():
    g = Graph(dtype="float64", seed=0)
    y = g.input("y", (None,), dtype="int64")
    out = compile(g, {"l": cond.dropped_labels(g, y, 10, 0.15), "null": cond.null_labels(g, y, 10)})
    labels = np.random.default_rng(0).integers(0, 10, size=20000)
    res = out.run(y=labels)
    got = np.asarray(res["l"])
    dropped = got == 10
    assert abs(dropped.mean() - 0.15) < 0.01
    np.testing.assert_array_equal(got[~dropped], labels[~dropped])
    assert np.all(np.asarray(res["null"]) == 10)


def test_guidance_is_the_ho_salimans_combination():
    fc, fn = np.array([1.0, -2.0]), np.array([0.5, 1.0])
    np.testing.assert_allclose(cond.guided(fc, fn, 2.0), 3 * fc - 2 * fn)
    np.testing.assert_allclose(cond.guided(fc, fn, 0.0), fc)


@pytest.fixture(scope="module")
def cfg_run(tmp_path_factory):
    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.runner import execute

    out = tmp_path_factory.mktemp("cfg")
    spec = load(ROOT / "specs" / "diffusion_cfg_digits.toml",
                ["train.epochs=60", "train.schedule.total_steps=660", "model.schedule.T=50", "output.plots=false"])
    return out, execute(spec, out, log=lambda *a, **k: None)


def test_conditional_samples_are_read_as_their_label(cfg_run):
    out, s = cfg_run
    # chance is 0.1; the classifier itself reads 0.98 of the test digits right
    assert s["cond_accuracy"] > 0.5, s["cond_accuracy_by_label"]
    assert len(s["cond_accuracy_by_label"]) == 10 and s["cond_guidance"] == 2.0
    assert np.isfinite(s["test_nll_bound"]) and np.isfinite(s["test_fd"])
    # the discretized decoder's bound in bits/dim, at the test labels and at the null label
    for tag in ("", "_uncond"):
        assert s[f"test_bpd{tag}"] == pytest.approx(s[f"test_nll_bound{tag}"] / (64 * np.log(2)), rel=1e-12)
        assert 0 < s[f"test_bpd{tag}_se"] < 0.05 * s[f"test_bpd{tag}"]


def test_gengraph_sample_label_and_guidance(cfg_run):
    from click.testing import CliRunner

    from gengraph.cli.main import main
    from gengraph.plugins.run.sampling import SampleError, draw

    out, _ = cfg_run
    x = draw(out, 60, label=3, guidance=2.0)
    assert x.shape == (60, 1, 8, 8)
    clf = dq.digit_classifier(None, 0)
    assert np.mean(clf.predict(x / 16.0) == 3) > 0.5
    with pytest.raises(SampleError, match="0..9"):
        draw(out, 5, label=10)
    res = CliRunner().invoke(main, ["sample", str(out), "--n", "8", "--label", "3", "--guidance", "2",
                                    "--out", str(out / "threes.npy")])
    assert res.exit_code == 0, res.output
    assert np.load(out / "threes.npy").shape == (8, 1, 8, 8)
    res = CliRunner().invoke(main, ["sample", str(out), "--label", "12"])
    assert res.exit_code == 2 and "0..9" in res.output
