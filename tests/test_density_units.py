"""Densities of scaled data are also reported in the data's units: with data.scale, a model's
density is one of x' = (x - shift) / scale, and -log p(x) = -log p'(x') + sum_j log scale_j.
The same data times 1000 gave the same test_nll_iw as the data (a probe of own files)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gengraph.plugins.run.loading import load
from gengraph.plugins.run.runner import execute
from gengraph.plugins.spec.errors import SpecError

MODELS = {
    "vae": ('kind = "vae"\nlatent = 2\nencoder = [{ units = 8 }]\ndecoder = [{ units = 8 }]\n'
            'likelihood = { kind = "gaussian" }\nelbo = { iw_samples = 5, report_draws = 2 }\n',
            ("test_neg_elbo", "test_nll_iw"), +1),
    "diffusion": ('kind = "diffusion"\nlayers = [{ units = 16, activation = "silu" }]\n'
                  'schedule = { kind = "cosine", T = 20 }\nbound_samples = 2\n', ("test_nll_bound",), +1),
    "rbm": ('kind = "rbm"\nvisible = "gaussian"\nn_hidden = 4\n', ("test_loglik_exact",), -1),
}


def _run(tmp_path, name, model, factor):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 3)) * np.array([1.0, 2.0, 0.5])
    path = tmp_path / f"{name}.npz"
    np.savez(path, x=x * factor + 7.0, y=np.zeros(len(x)))
    spec = tmp_path / f"{name}.toml"
    spec.write_text(f'spec_version = 1\n[data]\nsource = "npz"\npath = "{path}"\ntask = "unsupervised"\n'
                    f'scale = "standardize"\n[model]\n{model}[train]\nepochs = 2\nbatch_size = 32\n'
                    '[output]\nplots = false\nsamples = 4\n')
    return execute(load(spec), tmp_path / f"run_{name}", log=lambda *a, **k: None)


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_density_of_scaled_data_is_also_given_in_data_units(tmp_path, kind):
    model, keys, sign = MODELS[kind]
    small, big = _run(tmp_path, "small", model, 1.0), _run(tmp_path, "big", model, 1000.0)
    for s in (small, big):
        jac = s["x_log_jacobian"]
        assert np.isfinite(jac)
        for k in keys:
            assert s[f"{k}_data"] == pytest.approx(s[k] + sign * jac, abs=1e-9)
    # the scaled figures are the same for both (standardize removes the factor); in data units they
    # differ by D log 1000, as the densities of x and 1000 x + 7 do
    assert big["x_log_jacobian"] - small["x_log_jacobian"] == pytest.approx(3 * math.log(1000.0), rel=1e-9)
    for k in keys:
        assert big[k] == pytest.approx(small[k], rel=1e-6, abs=1e-6)
        assert big[f"{k}_data"] - small[f"{k}_data"] == pytest.approx(sign * 3 * math.log(1000.0), rel=1e-5)


def test_a_bernoulli_likelihood_refuses_data_outside_0_1(tmp_path):
    # grey levels 0..240 with a Bernoulli decoder trained and reported a negative NLL (-1.2e6 nats)
    np.savez(tmp_path / "u8.npz", x=np.random.default_rng(1).integers(0, 241, (50, 16)).astype(float),
             y=np.zeros(50))
    spec = tmp_path / "s.toml"
    spec.write_text(f'spec_version = 1\n[data]\nsource = "npz"\npath = "{tmp_path / "u8.npz"}"\ntask = "unsupervised"\n'
                    'scale = "none"\n[model]\nkind = "vae"\nlatent = 2\nencoder = [{ units = 4 }]\n'
                    'decoder = [{ units = 4 }]\nlikelihood = { kind = "bernoulli" }\n[train]\nepochs = 1\n')
    with pytest.raises(SpecError, match=r"model.likelihood.kind: a Bernoulli likelihood needs data in \[0, 1\]; "
                                        r"the train data \(after data.scale\) lie in \[0, 240\]"):
        execute(load(spec), tmp_path / "run", log=lambda *a, **k: None)
    assert not (tmp_path / "run").exists()


def test_the_bernoulli_check_reads_the_training_split(tmp_path):
    # per-feature minmax puts some test pixels a little past 1; such runs trained before the check
    from click.testing import CliRunner

    from gengraph.cli.main import main

    res = CliRunner().invoke(main, ["validate", "vae_digits", "--set", 'model.likelihood={kind="bernoulli"}',
                                    "--set", 'data.scale="minmax"'])
    assert res.exit_code == 0, res.output
