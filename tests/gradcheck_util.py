"""Finite-difference helpers for the op tests (no tests in here).

First order goes through the engine's own checker, `gengraph.engine.check_grads`
(central differences in float64; a non-scalar output is contracted with a fixed random
cotangent R, i.e. the checked loss is sum(out * R), so every output element matters).
`fd_check` wraps it for tests: positional arrays, assert on failure, and the forward
value returned so a test can compare it with a NumPy reference.

Second order: `hvp_check` compares Hessian-vector products built by the engine,
grad(sum(grad(f, x) * v), x), with central differences of the engine's first-order
gradient along v.
"""

from __future__ import annotations

import numpy as np

from gengraph.engine import Graph, check_grads, compile, grad, ops


def _named(arrays):
    """(names, {name: float64 array}, call) for a list or a dict of arrays."""
    if isinstance(arrays, dict):
        names = list(arrays)
        data = {k: np.array(v, dtype=np.float64) for k, v in arrays.items()}
        return names, data, lambda build_fn, nodes: build_fn(**nodes)
    names = [f"a{i}" for i in range(len(arrays))]
    data = {k: np.array(v, dtype=np.float64) for k, v in zip(names, arrays)}
    return names, data, lambda build_fn, nodes: build_fn(*(nodes[k] for k in names))


def forward(build_fn, arrays, dtype="float64"):
    """The value of build_fn(*nodes) on the arrays, as a NumPy array."""
    names, data, call = _named(arrays)
    g = Graph(dtype=dtype)
    nodes = {k: g.input(k, a.shape) for k, a in data.items()}
    out = call(build_fn, nodes)
    return np.asarray(compile(g, out).run(data))


def fd_check(build_fn, arrays, *, wrt=None, eps=1e-6, rtol=1e-5, atol=1e-6, seed=0):
    """Assert the engine's VJPs of build_fn match central differences; return the forward value.

    `arrays` is a list (build_fn gets positional nodes) or a dict (keyword nodes); `wrt`
    is a list of positions or names (default: all). Integer data (labels, indices) belongs
    inside build_fn as constants: ``x.graph.constant(idx, dtype="int64")``.
    """
    names, data, call = _named(arrays)
    if wrt is None:
        wrt_names = names
    else:
        wrt_names = [names[w] if isinstance(w, int) else w for w in wrt]
    value = forward(build_fn, arrays)
    # central differences of sum(out * R) lose about ulp(sum |out * R|) / eps to rounding (|R| < ~4)
    atol = atol + 16 * np.finfo(np.float64).eps * 4.0 * float(np.abs(value).sum()) / eps
    report = check_grads(lambda **nodes: call(build_fn, nodes), data, wrt=wrt_names, eps=eps, rtol=rtol,
                         atol=atol, seed=seed)
    if not report.ok:
        shapes = {k: v.shape for k, v in data.items()}
        raise AssertionError(f"gradient check failed for input shapes {shapes}:\n{report}")
    assert [r.name for r in report.rows] == wrt_names
    return value


def hvp_check(build_fn, arrays, *, eps=1e-5, rtol=1e-5, atol=1e-6, seed=0, max_basis=24, n_random=4):
    """Assert grad-of-grad (Hessian-vector products) matches central differences of the gradient.

    The scalar is f = sum(build_fn(*x) * R). Directions v: every basis vector of the
    concatenated inputs when there are at most `max_basis` elements (the full Hessian),
    plus `n_random` random directions. Returns the full Hessian when it was built, else None.
    """
    names, data, call = _named(arrays)
    rng = np.random.default_rng(seed)
    g = Graph(dtype="float64")
    xs = {k: g.input(k, a.shape) for k, a in data.items()}
    vs = {k: g.input("v_" + k, a.shape) for k, a in data.items()}
    out = call(build_fn, xs)
    if out.shape != ():
        out = ops.sum(out * g.constant(rng.normal(size=out.shape)))
    gs = grad(out, [xs[k] for k in names])
    inner = None
    for k, gk in zip(names, gs):
        term = ops.sum(gk * vs[k])
        inner = term if inner is None else inner + term
    hv = grad(inner, [xs[k] for k in names])
    first = compile(g, gs)
    second = compile(g, hv)

    sizes = [data[k].size for k in names]
    total = int(sum(sizes))
    directions = []
    if total <= max_basis:
        directions += list(np.eye(total))
    directions += [rng.normal(size=total) for _ in range(n_random)]

    def split(flat):
        parts, start = {}, 0
        for k, n in zip(names, sizes):
            parts[k] = flat[start:start + n].reshape(data[k].shape)
            start += n
        return parts

    def flat_grad(feed):
        return np.concatenate([np.asarray(r, np.float64).reshape(-1) for r in first.run(feed)])

    columns = []
    for d in directions:
        v = split(d)
        analytic = np.concatenate([np.asarray(r, np.float64).reshape(-1)
                                   for r in second.run({**data, **{"v_" + k: v[k] for k in names}})])
        plus = flat_grad({k: data[k] + eps * v[k] for k in names})
        minus = flat_grad({k: data[k] - eps * v[k] for k in names})
        numeric = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol,
                                   err_msg=f"Hessian-vector product along {d} (inputs {list(names)})")
        columns.append(analytic)
    return np.stack(columns[:total], axis=1) if total <= max_basis else None
