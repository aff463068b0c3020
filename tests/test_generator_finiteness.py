"""Generated data are checked for NaN/inf once, as file data are: a DataError names the
parameter to lower instead of a run that fails later in a plot or a solver."""

import numpy as np
import pytest

import gengraph
from gengraph.plugins.datasets import DataError, make_dataset


@pytest.mark.parametrize("spec, key", [
    ({"source": "linear", "noise": 1e308}, "data.noise"),
    ({"source": "franke", "noise": 1e308}, "data.noise"),
    ({"source": "linear", "slope": -1e308, "intercept": 1e308, "noise": 1e300}, "data.slope"),
    ({"source": "gaussians", "std": 1e308}, "data.std"),
])
def test_non_finite_generated_data_name_the_parameter(spec, key):
    with pytest.raises(DataError) as info:
        make_dataset(spec, 0)
    msg = str(info.value)
    assert f'"{spec["source"]}" generator' in msg and "not finite" in msg
    assert f"lower {key} (= {spec[key.split('.')[1]]:g})" in msg
    assert info.value.key == key


def test_large_but_finite_parameters_are_accepted():
    ds = make_dataset({"source": "linear", "noise": 1e300}, 0)
    assert np.isfinite(ds.y_train).all() and np.abs(ds.y_train).max() > 1e299


def test_a_run_with_inf_data_is_a_spec_error(tmp_path):
    with pytest.raises(gengraph.SpecError, match=r"data.*lower data\.noise \(= 1e\+308\)"):
        gengraph.run({"data": {"source": "linear", "noise": 1e308}, "model": {"kind": "regression"}},
                     out=tmp_path / "r", progress=None)
    assert not (tmp_path / "r" / "summary.json").exists()
