"""The one-pass CPU loops (engine/ops/numba_loops.py) give the NumPy forms' bits: Adam's moment
averages and step, ReLU's gradient, SiLU and its gradients, into a new array, into another array or in place, in
float32 and float64 (the float32 sigmoid and SiLU, whose loops compute their own exp, are
tests/test_numba_math.py's); arrays the loops do not take fall back to NumPy; a training run is the same
to the bit with the loops on and off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gengraph.engine.ops import cpu_loops
from gengraph.engine.ops.elementwise import (_relu_grad_forward, _sigmoid_forward, _silu_grad_forward,
                                             _silu_grad_x_forward, _silu_lean_forward)
from gengraph.engine.ops.fused import _adam_step_forward, _ema_forward, adam_update, adam_update_site

pytest.importorskip("numba")

DIGITS = Path(__file__).resolve().parents[1] / "specs" / "mlp_digits.toml"
SHORT = ["train.epochs=2", "model.layers[0].units=32", "model.layers[1].units=16"]


@pytest.fixture
def loops_switch(monkeypatch):
    """switch(True) turns the loops on, at every size (MIN_SIZE emptied: the tests' arrays are
    small), switch(False) off (as GENGRAPH_NUMBA=0), for this test."""
    def switch(on):
        monkeypatch.setenv("GENGRAPH_NUMBA", "1" if on else "0")
        monkeypatch.setattr(cpu_loops, "_LOOPS", None)
        monkeypatch.setattr(cpu_loops, "MIN_SIZE", {})
        return cpu_loops.load_loops()
    yield switch


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


KERNELS = {
    "ema": lambda a, out: _ema_forward(np, a[0], a[1], 0.9, out=out),
    "ema_square": lambda a, out: _ema_forward(np, a[0], a[1], 0.999, square=True, out=out),
    "adam_step": lambda a, out: _adam_step_forward(np, a[0], a[1], np.abs(a[2]), a[0].dtype.type(3e-3),
                                                   a[0].dtype.type(0.0447), 1e-8, out=out),
    "relu_grad": lambda a, out: _relu_grad_forward(np, a[0], a[1], out=out),
    "silu_grad": lambda a, out: _silu_grad_forward(np, a[0], a[1], _sigmoid_forward(np, a[2]), out=out),
    "silu_grad_x": lambda a, out: _silu_grad_x_forward(np, a[0], a[1], out=out),
    "silu_lean": lambda a, out: _silu_lean_forward(np, a[0], out=out),
}
SPECIAL = [0.0, -0.0, 1e-40, -1e-30, 3.5, -7.25, 1e30, np.inf, -np.inf, np.nan]
# in float32 these take numba_math's sigmoid, not NumPy's bits (tests/test_numba_math.py)
OWN_EXP_IN_FLOAT32 = {"silu_grad", "silu_grad_x", "silu_lean"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # the switch is set per example
@given(kernel=st.sampled_from(sorted(KERNELS)), dtype=st.sampled_from(["float32", "float64"]),
       shape=st.sampled_from([(1,), (7,), (33,), (3, 5), (2, 3, 4)]), where=st.sampled_from(["new", "other", "inplace"]),
       seed=st.integers(0, 2 ** 16), special=st.booleans())
def test_loops_give_the_numpy_forms_bits(loops_switch, kernel, dtype, shape, where, seed, special):
    if dtype == "float32" and kernel in OWN_EXP_IN_FLOAT32:
        dtype = "float64"
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]
    if special:  # zeros of both signs, subnormals, huge values, infinities and NaN among them
        for a in arrays:
            a.reshape(-1)[rng.integers(0, a.size, size=max(1, a.size // 3))] = rng.choice(SPECIAL)
    results = []
    for on in (True, False):
        assert bool(loops_switch(on)) is on
        args = [a.copy() for a in arrays]
        out = {"new": None, "other": np.full(shape, 7.0, dtype), "inplace": args[0]}[where]
        with np.errstate(all="ignore"):
            r = KERNELS[kernel](args, out)
        if out is not None:  # a program relies on out being written (a direct update of a leaf)
            assert r is out
        results.append(r)
    _same_bits(results[0], results[1])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["float32", "float64"]), shape=st.sampled_from([(1,), (40,), (3, 5)]),
       inplace=st.booleans(), seed=st.integers(0, 2 ** 16), special=st.booleans())
def test_the_fused_adam_update_gives_the_three_kernels_bits(loops_switch, dtype, shape, inplace, seed, special):
    """fused.adam_update (the compiler's call for Adam's three kernels): parameters, m and v as
    the three NumPy kernels give them, into the parameters or into a new array."""
    rng = np.random.default_rng(seed)
    p, m, v, g = (rng.standard_normal(shape).astype(dtype) for _ in range(4))
    v = np.abs(v)
    if special:
        for a in (p, m, g):
            a.reshape(-1)[rng.integers(0, a.size)] = rng.choice(SPECIAL)
    t = np.dtype(dtype).type
    results = []
    for on in (True, False):
        loops_switch(on)
        pp, mm, vv = p.copy(), m.copy(), v.copy()
        with np.errstate(all="ignore"):
            r = adam_update(np, pp, mm, vv, g, t(3e-3), t(0.0447), 0.9, 0.999, 1e-8,
                            out=pp if inplace else None, out_m=mm, out_v=vv)
        assert (r is pp) is inplace
        results.append((r, mm, vv))
    for a, b in zip(*results):
        _same_bits(a, b)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2 ** 16), loops=st.booleans())
def test_an_adam_call_site_gives_adam_updates_bits_step_after_step(loops_switch, dtype, seed, loops):
    """adam_update_site (what a program binds): steps on the same buffers (checked once: the
    site holds them), into the parameters and into an array of their own, then other buffers,
    other constants, a new out, a float64 step beside float32 arrays, a view of one buffer as two
    arrays, a read-only out: adam_update's bits every time."""
    loops_switch(loops)
    rng = np.random.default_rng(seed)
    t = np.dtype(dtype).type
    site = adam_update_site()

    def state():
        p, m, v, g = (rng.standard_normal(40).astype(dtype) for _ in range(4))
        return [p, m, np.abs(v), g]

    def steps(arrays, n=1, step=None, scale=None, out="p", betas=(0.9, 0.999)):
        """n steps of the site and of adam_update, each on its own copies kept across the steps."""
        step = t(3e-3) if step is None else step
        scale = t(0.0447) if scale is None else scale
        got, want = [a.copy() for a in arrays], [a.copy() for a in arrays]
        outs = {id(got): np.full_like(got[0], 7.0), id(want): np.full_like(want[0], 7.0)}
        for _ in range(n):
            for args, call in ((got, site), (want, adam_update)):
                p, m, v, g = args[:4]
                o = {"p": p, None: None, "other": outs[id(args)]}[out]
                r = call(np, p, m, v, g, step, scale, betas[0], betas[1], 1e-8, out=o, out_m=m, out_v=v)
                assert r is o if o is not None else r is not p
                args[4:] = [r]
            for a, b in zip(got, want):
                _same_bits(a, b)

    steps(state(), n=3)
    steps(state(), n=3, out="other")
    steps(state(), betas=(0.5, 0.9))
    steps(state(), n=2, out=None)
    steps(state(), step=np.float64(3e-3) if dtype == "float32" else np.float32(3e-3))
    p, m, v, _ = state()  # m and g over one buffer, g reversed: not the loop's (an overlap), the kernels'
    results = []
    for call in (site, adam_update):
        pp, buf, vv = p.copy(), m.copy(), v.copy()
        for _ in range(2):
            call(np, pp, buf, vv, buf[::-1], t(3e-3), t(0.0447), 0.9, 0.999, 1e-8, out=pp, out_m=buf, out_v=vv)
        results.append((pp, buf, vv))
    for a, b in zip(*results):
        _same_bits(a, b)
    ro = state()
    ro[0].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        site(np, ro[0], ro[1], ro[2], ro[3], t(1e-3), t(1.0), 0.9, 0.999, 1e-8, out=ro[0], out_m=ro[1], out_v=ro[2])


@pytest.mark.parametrize("frozen", ["out", "p", "m"])
def test_an_adam_call_site_refuses_a_buffer_made_read_only_after_it_was_held(loops_switch, frozen):
    """The held flat views were made while the buffers were writable: the site wrote through them
    into an array made read-only since, silently. Now it fails as adam_update does, leaving the
    same arrays behind."""
    loops_switch(True)
    results = []
    for call in (adam_update_site(), adam_update):
        p, m, v, g = (np.full(8, x, np.float32) for x in (1.0, 0.1, 0.2, 0.3))
        out = p if frozen == "p" else np.zeros(8, np.float32)
        args = (np, p, m, v, g, np.float32(1e-3), np.float32(0.5), 0.9, 0.999, 1e-8)
        call(*args, out=out, out_m=m, out_v=v)  # the site holds the buffers
        {"out": out, "p": p, "m": m}[frozen].flags.writeable = False
        with pytest.raises(Exception) as error:
            call(*args, out=out, out_m=m, out_v=v)
        results.append((type(error.value), out, m, v))
    assert results[0][0] is results[1][0]
    for a, b in zip(results[0][1:], results[1][1:]):
        _same_bits(a, b)


def test_an_adam_call_site_checks_its_buffers_once(loops_switch, monkeypatch):
    loops_switch(True)
    checks = []
    real = cpu_loops.takes
    monkeypatch.setattr(cpu_loops, "takes", lambda *a, **k: checks.append(1) or real(*a, **k))
    site = adam_update_site()
    p, m, v, g = (np.full(8, x, np.float32) for x in (1.0, 0.1, 0.2, 0.3))
    for _ in range(5):
        site(np, p, m, v, g, np.float32(1e-3), np.float32(0.5), 0.9, 0.999, 1e-8, out=p, out_m=m, out_v=v)
    assert len(checks) == 1
    g2 = g.copy()
    site(np, p, m, v, g2, np.float32(1e-3), np.float32(0.5), 0.9, 0.999, 1e-8, out=p, out_m=m, out_v=v)
    assert len(checks) == 2  # another gradient array: checked again


def test_the_loops_run_where_they_apply_and_numpy_runs_elsewhere(loops_switch, monkeypatch):
    loops = loops_switch(True)
    calls = []
    names = ["ema", "ema_inplace", "adam_step_inplace", "relu_grad_inplace", "silu_grad_inplace",
             "silu_grad_x32", "silu32", "sigmoid32_inplace", "silu_grad_t", "silu_t_inplace"]
    for name in names:
        monkeypatch.setattr(loops, name, lambda *a, name=name: calls.append(name))
    m, x = np.ones(4, np.float32), np.full(4, 2.0, np.float32)
    _ema_forward(np, m, x, 0.5)
    _ema_forward(np, m, x, 0.5, out=m)
    _adam_step_forward(np, m, m, m, np.float32(1), np.float32(1), 1e-8, out=m)
    _relu_grad_forward(np, x, m, out=x)
    _silu_grad_forward(np, x, m, m, out=x)
    _silu_grad_x_forward(np, x, m)
    _silu_lean_forward(np, x)
    _sigmoid_forward(np, x, out=x)
    _silu_grad_x_forward(np, x.astype(np.float64), m.astype(np.float64))  # float64: NumPy's tanh, then a loop
    _silu_lean_forward(np, x.astype(np.float64))
    assert calls == names
    calls.clear()
    # an out that is another input: NumPy's passes (the loop would overlap it)
    g = np.ones(4, np.float64)
    loops_switch(False)
    expected = _silu_grad_x_forward(np, g, x.astype(np.float64))
    loops_switch(True)
    xc = x.astype(np.float64)
    np.testing.assert_array_equal(_silu_grad_x_forward(np, g, xc, out=xc), expected)
    assert calls == []
    # not taken: mixed dtypes, a strided view, broadcasting shapes, a float64 scalar beside float32 arrays
    r = _ema_forward(np, m, x.astype(np.float64), 0.5)
    assert np.allclose(r, 1.5)
    assert np.allclose(_ema_forward(np, np.ones(8, np.float32)[::2], x, 0.5), 1.5)
    assert np.allclose(_ema_forward(np, np.ones((3, 4), np.float32), x, 0.5), 1.5)
    assert np.allclose(_adam_step_forward(np, m, m, m, np.float64(1), np.float32(1), 1e-8), 0.0)
    assert calls == []


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_training_run_is_the_same_with_the_loops_on_and_off(loops_switch, tmp_path, dtype):
    """To the bit in float64; in float32 the classifier head's softmax and cross-entropy take
    numba_math's loops (their own exp and log), so the two runs agree to rounding."""
    from gengraph.plugins.run.loading import load
    from gengraph.plugins.run.runner import execute

    params = []
    for on in (True, False):
        loops_switch(on)
        run = tmp_path / f"run{int(on)}"
        execute(load(DIGITS, SHORT + [f'run.dtype="{dtype}"']), run)
        with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
            params.append({k: z[k] for k in z.files if k.startswith(("param/", "state/"))})
    assert params[0].keys() == params[1].keys() and len(params[0]) > 12
    for k in params[0]:
        if dtype == "float64":
            _same_bits(params[0][k], params[1][k])
        else:  # two epochs of Adam from the same start: a few ulps per step, nothing more
            np.testing.assert_allclose(params[0][k], params[1][k], rtol=1e-3, atol=1e-5, err_msg=k)


def test_warm_compiles_every_loop_for_the_dtype(loops_switch, monkeypatch):
    loops = loops_switch(True)
    seen = {}
    for name in loops.SIGNATURES:
        for full in (name, name + "_inplace"):
            real = getattr(loops, full)
            monkeypatch.setattr(loops, full, lambda *a, full=full, real=real: seen.update({full: a}) or real(*a))
    assert cpu_loops.warm("float64") is True
    assert set(seen) == {n + s for n in loops.SIGNATURES for s in ("", "_inplace")}
    for full, args in seen.items():  # every argument in float64, as a training step's would be
        assert all(np.asarray(a).dtype == np.float64 for a in args), (full, args)
    loops_switch(False)
    assert cpu_loops.warm("float64") is False


def test_env_json_says_what_runs_the_loops(loops_switch, tmp_path, monkeypatch):
    from gengraph.plugins.run.runner import env_info
    from gengraph.plugins.run.loading import load

    spec = load(DIGITS).data
    loops_switch(True)
    assert env_info(spec)["cpu_loops"].startswith("numba 0.")
    loops_switch(False)
    assert env_info(spec)["cpu_loops"] == "off (GENGRAPH_NUMBA=0)"


def _numba_fails_to_load(monkeypatch, error):
    """Loading numba_loops raises `error` (as a broken or too old Numba would), from a fresh state."""
    import importlib

    real = importlib.import_module

    def failing(name, package=None):
        if name == ".numba_loops":
            raise error
        return real(name, package)

    monkeypatch.delenv("GENGRAPH_NUMBA", raising=False)
    monkeypatch.setattr(cpu_loops, "_LOOPS", None)
    monkeypatch.setattr(cpu_loops.importlib, "import_module", failing)


def test_a_numba_that_fails_to_load_is_a_warning_and_numpy_runs(monkeypatch):
    _numba_fails_to_load(monkeypatch, OSError("libllvmlite.so: cannot open shared object file"))
    with pytest.warns(RuntimeWarning, match="libllvmlite.so"):
        assert cpu_loops.load_loops() is False
    m = np.ones(3)
    np.testing.assert_array_equal(_ema_forward(np, m, m, 0.5), np.ones(3))
    assert cpu_loops.describe().startswith("off (numba 0.") and cpu_loops.describe().endswith("did not load)")


def test_env_json_tells_a_numba_that_does_not_load_before_any_kernel_ran(monkeypatch):
    """env.json is written before the first kernel: describe loads Numba to tell (an ImportError,
    Numba's own 'needs NumPy <= X' say, is silent otherwise)."""
    _numba_fails_to_load(monkeypatch, ImportError("Numba needs NumPy 2.3 or less"))
    assert cpu_loops.describe().endswith("is installed but did not load)")
    assert cpu_loops.describe("cuda") == "off (device cuda: the loops run on NumPy arrays)"


def test_below_its_minimum_size_a_kernel_keeps_its_numpy_form(loops_switch, monkeypatch):
    """A one- or two-pass NumPy form is faster than a loop's call on small arrays (MIN_SIZE)."""
    loops = loops_switch(True)
    monkeypatch.setattr(cpu_loops, "MIN_SIZE", {"relu_grad": 100})
    calls = []
    monkeypatch.setattr(loops, "relu_grad", lambda *a: calls.append(a))
    g, y = np.ones(99, np.float32), np.ones(99, np.float32)
    np.testing.assert_array_equal(_relu_grad_forward(np, g, y), g)
    assert calls == []
    _relu_grad_forward(np, np.ones(100, np.float32), np.ones(100, np.float32))
    assert len(calls) == 1


# --- defects found in review, each with its repro ---------------------------------------------------
def test_a_silu_update_of_a_4d_leaf_is_written_with_the_loops_on(loops_switch):
    """s <- silu(s) on a 4-D state: the program writes the update straight into the leaf (out=s),
    and the loop path returned its own array instead, so the update was lost."""
    from gengraph.engine import Graph, compile, ops

    values = []
    for on in (True, False):
        loops_switch(on)
        g = Graph("float32")
        s = g.state("s", np.linspace(-3, 3, 2 * 4 * 6 * 6, dtype=np.float32).reshape(2, 4, 6, 6))
        compile(g, {"total": ops.sum(s)}, updates={s: ops.silu(s)}).run()
        values.append(g.value(s).copy())
    x = np.linspace(-3, 3, 2 * 4 * 6 * 6, dtype=np.float64)
    for v in values:  # on: numba_math's float32 loop; off: NumPy's tanh form (a few ulps apart)
        np.testing.assert_allclose(v.reshape(-1), x / (1 + np.exp(-x)), rtol=1e-6, atol=1e-7)


def test_python_int_attributes_and_foreign_byte_orders_take_numpy(loops_switch):
    """decay=0 (an int) raised AttributeError in the loop entry; big-endian arrays a Numba
    TypingError. Both now run NumPy's form (or the loop with the int rounded as NumPy rounds it)."""
    loops_switch(True)
    m, x = np.ones(4), np.full(4, 2.0)
    np.testing.assert_array_equal(_ema_forward(np, m, x, 0), x)  # decay 0: the new value
    np.testing.assert_array_equal(_adam_step_forward(np, m, m, m, 0.5, 1.0, 0), m - 0.5)
    big = np.arange(5, dtype=">f4") - 2
    np.testing.assert_array_equal(_relu_grad_forward(np, big, big), np.maximum(big, 0))
    assert _silu_lean_forward(np, big) is not None and _silu_grad_x_forward(np, big, big) is not None


def test_views_of_one_buffer_that_may_overlap_take_numpy(loops_switch):
    """out = buf[1:] over an input buf[:-1]: NumPy buffers overlapping operands, a loop would not."""
    loops_switch(False)
    buf = np.linspace(-1, 1, 9)
    expected = _relu_grad_forward(np, buf[:-1].copy(), buf[:-1].copy())
    loops_switch(True)
    buf2 = np.linspace(-1, 1, 9)
    r = _relu_grad_forward(np, buf2[:-1], buf2[:-1].copy(), out=buf2[1:])
    _same_bits(r, expected)


def test_memory_owned_by_another_object_and_read_only_outs_take_numpy(loops_switch):
    """Two np.frombuffer arrays over one buffer have different bases (memoryviews) and overlap in
    part: the loop gave other values than NumPy's buffered form. A read-only out: NumPy's error."""
    def overlapping():
        buf = bytearray(np.arange(1.0, 6.0).tobytes())
        return np.frombuffer(buf, count=4), np.frombuffer(buf, count=4, offset=8)

    loops_switch(False)
    r, s = overlapping()
    expected = _ema_forward(np, r, np.full(4, 2.0), 0.9, out=s).copy()
    loops_switch(True)
    r, s = overlapping()
    _same_bits(_ema_forward(np, r, np.full(4, 2.0), 0.9, out=s), expected)
    ro = np.ones(4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _ema_forward(np, ro, np.ones(4), 0.9, out=ro)


def test_the_loops_file_imported_under_another_name_leaves_the_packages_cache_alone(tmp_path):
    """Numba caches by source file: numba_loops.py imported as `engine.ops.numba_loops` (a
    checkout's root on sys.path) wrote cache entries that the package, importing it as
    gengraph.engine.ops.numba_loops, failed on (ModuleNotFoundError: No module named 'engine',
    a traceback at the first training step). Now only the package's name caches."""
    import subprocess
    import sys

    from gengraph.engine.ops import numba_loops

    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    other = ("import importlib.util, numpy as np; "
             f"s = importlib.util.spec_from_file_location('engine.ops.numba_loops', {numba_loops.__file__!r}); "
             "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
             "m.ema(np.ones(3), np.ones(3), 0.5, 0.5, np.ones(3)); print(m.CACHED)")
    package = ("import numpy as np; from gengraph.engine.ops import numba_loops as m; "
               "o = np.zeros(3); m.ema(np.ones(3), np.full(3, 3.0), 0.5, 0.5, o); print(m.CACHED, o.tolist())")
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
            for code in (other, package, package)]  # the second package run reads what the first cached
    assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr[-600:] for r in runs]
    assert [r.stdout.split()[0] for r in runs] == ["False", "True", "True"]
    assert runs[2].stdout.strip() == "True [2.0, 2.0, 2.0]"


# --- group_norm's and layer_norm's row loops (numba_norm.py): float64 sums, so to rounding -----------
def _norm_kernels(x, g, r, start, where):
    """inv_std, normalized and normalize_grad's forwards on (x, g, r); `where` puts each output
    into a new array or over its first input (the compiler hands a dead input's buffer)."""
    from gengraph.engine.ops.norm import _inv_std_forward, _normalize_grad_forward, _normalized_forward

    inv = _inv_std_forward(np, x, start, 1e-5)
    xc, gc = x.copy(), g.copy()
    y = _normalized_forward(np, xc, r, start, out=xc if where == "inplace" else None)
    gr = _normalize_grad_forward(np, gc, y, r, start, out=gc if where == "inplace" else None)
    return inv, y, gr


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["float32", "float64"]), shape=st.sampled_from([(2, 3), (3, 2, 5), (2, 4, 3, 3), (1, 1)]),
       where=st.sampled_from(["new", "inplace"]), offset=st.sampled_from([0.0, 100.0]), seed=st.integers(0, 2 ** 16))
def test_the_norm_loops_give_the_numpy_forms_values_to_rounding(loops_switch, dtype, shape, where, offset, seed):
    rng = np.random.default_rng(seed)
    start = 1 + seed % (len(shape) - 1) if len(shape) > 2 else 1
    x = (rng.normal(size=shape) * 3 + offset).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    r = (rng.random(shape[:start] + (1,) * (len(shape) - start)) + 0.5).astype(dtype)
    loops_switch(False)
    want = _norm_kernels(x, g, r, start, "new")
    loops = loops_switch(True)
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        for name in ("norm_inv_std", "norm_normalized", "norm_grad"):
            real = getattr(loops, name)
            mp.setattr(loops, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
        got = _norm_kernels(x, g, r, start, where)
    assert calls == ["norm_inv_std", "norm_normalized", "norm_grad"]
    tol = 2e-5 if dtype == "float32" else 1e-12
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        # float32: the loops' float64 sums are the more exact; both within a few ulps of the data's scale
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (1 + offset) * float(np.abs(r).max()))


def test_the_norm_loops_leave_views_and_mixed_dtypes_to_numpy(loops_switch, monkeypatch):
    from gengraph.engine.ops.norm import _inv_std_forward, _normalize_grad_forward, _normalized_forward

    loops = loops_switch(True)
    calls = []
    for name in ("norm_inv_std", "norm_normalized", "norm_grad"):
        monkeypatch.setattr(loops, name, lambda *a, name=name: calls.append(name))
    x = np.random.default_rng(0).normal(size=(4, 6))
    r = np.ones((4, 1))
    strided = x[:, ::2]
    np.testing.assert_allclose(_inv_std_forward(np, strided, 1, 0.0), 1 / strided.std(axis=1, keepdims=True))
    np.testing.assert_allclose(_normalized_forward(np, strided, r, 1), strided - strided.mean(1, keepdims=True))
    np.testing.assert_allclose(_normalized_forward(np, x, r.astype(np.float32), 1), x - x.mean(1, keepdims=True))
    y = x - x.mean(1, keepdims=True)
    want = r * (x - x.mean(1, keepdims=True) - y * (x * y).mean(1, keepdims=True))
    yc = y.copy()  # out over y (not the first array): NumPy's passes, which read y before writing it
    np.testing.assert_allclose(_normalize_grad_forward(np, x, yc, r, 1, out=yc), want)
    assert calls == []


def test_the_norm_kernels_write_into_an_out_that_is_not_contiguous(loops_switch):
    """The compiler may hand any dead buffer as out: a strided one gets the result too (NumPy's
    passes run, as the loops take contiguous arrays only)."""
    from gengraph.engine.ops.norm import _normalize_grad_forward, _normalized_forward

    rng = np.random.default_rng(7)
    g, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    r = rng.random((3, 1)) + 0.5
    for on in (True, False):
        loops_switch(on)
        want = r * (g - g.mean(1, keepdims=True) - y * (g * y).mean(1, keepdims=True))
        out = np.zeros((4, 3)).T  # (3, 4), Fortran order
        assert _normalize_grad_forward(np, g, y, r, 1, out=out) is out
        np.testing.assert_allclose(out, want, rtol=1e-12)
        out = np.zeros((4, 3)).T
        assert _normalized_forward(np, g, r, 1, out=out) is out
        np.testing.assert_allclose(out, (g - g.mean(1, keepdims=True)) * r, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_warm_compiles_the_norm_loops_as_the_kernels_call_them(loops_switch, dtype):
    """cpu_loops.warm compiles the row loops for the argument types group_norm's kernels pass, so a
    first training step compiles nothing more (a benchmark counts Numba's cost apart)."""
    from gengraph.engine.ops import numba_norm
    from gengraph.engine.ops.norm import _inv_std_forward, _normalize_grad_forward, _normalized_forward

    loops_switch(True)
    cpu_loops.warm(dtype)
    loops = (numba_norm.norm_inv_std, numba_norm.norm_normalized, numba_norm.norm_grad)
    before = [len(f.signatures) for f in loops]
    x = np.random.default_rng(0).normal(size=(2, 4, 3, 3)).astype(dtype)
    r = _inv_std_forward(np, x, 2, 1e-5)
    y = _normalized_forward(np, x, r, 2)
    _normalize_grad_forward(np, x.copy(), y, r, 2, out=None)
    _normalized_forward(np, x.copy(), r, 2, out=np.empty_like(x))
    assert [len(f.signatures) for f in loops] == before
