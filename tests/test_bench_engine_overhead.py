"""bench/engine_overhead.py's bare-NumPy rewrite of a generated program computes what the
program computes (its dispatch figures compare the two, so they must stay the same work)."""

import numpy as np
import pytest

from bench.engine_overhead import bare_function, chain_program


@pytest.mark.parametrize("kind", ["ufunc", "lambda"])
def test_bare_numpy_rewrite_equals_the_program(kind):
    prog = chain_program(kind)
    x = np.linspace(-1, 1, 4).astype(np.float32)
    bare = np.asarray(bare_function(prog)(x.copy())).reshape(-1)  # the bare function returns its output tuple
    np.testing.assert_array_equal(bare, np.asarray(prog.run({"x": x})))
