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


def test_the_image_benchmark_without_pytorch_says_so(monkeypatch, capsys):
    # it ended in a ModuleNotFoundError traceback: every row it times is against PyTorch
    import builtins

    from bench import conv_bench

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(SystemExit) as exit_info:
        conv_bench.main(["--only", "conv", "--out", "unused.json"])
    assert exit_info.value.code == 2
    assert "not installed in this environment: pip install -e '.[bench]'" in capsys.readouterr().err
