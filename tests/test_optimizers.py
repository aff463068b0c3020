"""Optimizers and lr schedules: each rule against NumPy formulas written out here and against
PyTorch's update rules ported to NumPy (tests/torch_reference.py; checked against torch.optim
itself when torch is installed), schedules against their formulas, state written in place,
convergence on a convex quadratic, and the registries' error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gengraph.engine import Graph, compile, grad, ops
from gengraph.engine.optimizers import OPTIMIZERS, Optimizer, make_optimizer
from gengraph.engine.schedules import REQUIRED, SCHEDULES, Schedule, make_schedule

TOL = dict(rtol=1e-12, atol=1e-12)

# --- a tiny least-squares problem with a hand-written gradient -----------------------------
RNG = np.random.default_rng(7)
X = RNG.normal(size=(4, 2))
Y = RNG.normal(size=(4, 3))
W0 = RNG.normal(size=(2, 3))
B0 = RNG.normal(size=(3,))


def np_grads(W, b):
    """loss = 0.5 sum((X W + b - Y)^2): dW = X^T r, db = sum_rows r."""
    r = X @ W + b - Y
    return [X.T @ r, r.sum(axis=0)]


def build(kind, **hyper):
    g = Graph("float64")
    W, b = g.param("W", W0), g.param("b", B0)
    x, y = g.constant(X), g.constant(Y)
    loss = 0.5 * ops.sum((x @ W + b - y) ** 2.0)
    opt = make_optimizer(kind, **hyper)
    ups = opt.updates(g, [W, b], grad(loss, [W, b]))
    prog = compile(g, loss, updates=ups)
    return g, (W, b), opt, prog


# --- the update rules, written out in NumPy (PyTorch's single-tensor conventions) -----------
def np_lr(lr, t):
    if isinstance(lr, dict):  # the schedules used below
        if lr["kind"] == "step":
            return lr["lr"] * lr["gamma"] ** (t // lr["step_size"])
        if lr["kind"] == "exponential":
            return lr["lr"] * lr["gamma"] ** t
        raise AssertionError(lr)
    return lr


def reference(kind, hyper, steps=3):
    """Params after each of `steps` updates, by the textbook/PyTorch formulas."""
    h = {**{k: d for k, (_t, d, _h) in OPTIMIZERS[kind].schema.items()}, **hyper}
    if "betas" in h:
        h["beta1"], h["beta2"] = h.pop("betas")
    if "rho" in h:
        h["alpha"] = h.pop("rho")
    params = [W0.copy(), B0.copy()]
    state = [dict() for _ in params]
    out = []
    for t in range(steps):  # t = updates already taken
        gs = np_grads(*params)
        if h["clip_norm"]:
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in gs))
            gs = [g * min(h["clip_norm"] / (norm + 1e-6), 1.0) for g in gs]
        lr, wd = np_lr(h["lr"], t), h["weight_decay"]
        for i, (p, g) in enumerate(zip(params, gs)):
            st = state[i]
            if wd and kind != "adamw":
                g = g + wd * p
            if kind in ("gd", "sgd"):
                p = p - lr * g
            elif kind in ("momentum", "nesterov"):
                mu = h["momentum"]
                st["v"] = g.copy() if t == 0 else mu * st["v"] + (1 - h["dampening"]) * g
                p = p - lr * (g + mu * st["v"] if h["nesterov"] else st["v"])
            elif kind == "adagrad":
                st.setdefault("s", np.full_like(p, h["initial_accumulator"]))
                st["s"] = st["s"] + g * g
                clr = lr / (1 + t * h["lr_decay"])
                p = p - clr * (g / (np.sqrt(st["s"]) + h["eps"]))
            elif kind == "rmsprop":
                a = h["alpha"]
                st["sq"] = a * st.get("sq", 0.0) + (1 - a) * g * g
                if h["centered"]:
                    st["ga"] = a * st.get("ga", 0.0) + (1 - a) * g
                    d = np.sqrt(st["sq"] - st["ga"] ** 2) + h["eps"]
                else:
                    d = np.sqrt(st["sq"]) + h["eps"]
                if h["momentum"]:
                    st["buf"] = h["momentum"] * st.get("buf", 0.0) + g / d
                    p = p - lr * st["buf"]
                else:
                    p = p - lr * (g / d)
            elif kind in ("adam", "adamw"):
                b1, b2, n = h["beta1"], h["beta2"], t + 1
                if kind == "adamw":
                    p = p * (1 - lr * wd)
                st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
                st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
                step_size = lr / (1 - b1 ** n)
                denom = np.sqrt(st["v"]) / math.sqrt(1 - b2 ** n) + h["eps"]
                p = p - step_size * (st["m"] / denom)
            else:
                raise AssertionError(kind)
            params[i] = p
        out.append([p.copy() for p in params])
    return out


CASES = [
    ("gd", dict(lr=0.05)),
    ("sgd", dict(lr=0.05, weight_decay=0.1)),
    ("gd", dict(lr=0.05, clip_norm=0.5)),
    ("momentum", dict(lr=0.05)),
    ("momentum", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("momentum", dict(lr=0.05, nesterov=True)),
    ("nesterov", dict(lr=0.03, momentum=0.7, clip_norm=1.0)),
    ("adagrad", dict(lr=0.1)),
    ("adagrad", dict(lr=0.1, initial_accumulator=0.5, lr_decay=0.2, weight_decay=0.05, eps=1e-6)),
    ("rmsprop", dict(lr=0.01)),
    ("rmsprop", dict(lr=0.01, rho=0.9, centered=True)),
    ("rmsprop", dict(lr=0.01, alpha=0.95, momentum=0.5, weight_decay=0.1)),
    ("rmsprop", dict(lr=0.01, centered=True, momentum=0.9, eps=1e-4)),
    ("adam", dict(lr=0.01)),
    ("adam", dict(lr=0.01, fused="yes")),
    ("adamw", dict(lr=0.02, weight_decay=0.1, fused="yes")),
    ("adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("adam", dict(lr=0.02, clip_norm=0.3)),
    ("adam", dict(lr={"kind": "step", "lr": 0.1, "step_size": 2, "gamma": 0.5})),
    ("adamw", dict(lr=0.01)),
    ("adamw", dict(lr=0.05, beta1=0.5, weight_decay=0.3)),
    ("momentum", dict(lr={"kind": "exponential", "lr": 0.1, "gamma": 0.7})),
]


def _id(case):
    kind, hyper = case
    return kind + "-" + "-".join(f"{k}" for k in hyper)


@pytest.mark.parametrize("kind,hyper", CASES, ids=[_id(c) for c in CASES])
def test_matches_numpy_formulas(kind, hyper):
    g, (W, b), opt, prog = build(kind, **hyper)
    expect = reference(kind, hyper)
    for t, (W_ref, b_ref) in enumerate(expect):
        prog.run()
        np.testing.assert_allclose(g.value(W), W_ref, **TOL, err_msg=f"W after step {t + 1}")
        np.testing.assert_allclose(g.value(b), b_ref, **TOL, err_msg=f"b after step {t + 1}")
        assert g.value(opt.step_node) == t + 1
    # the first update really moved the params (a rule that does nothing would not pass above
    # unless the reference did nothing too)
    assert not np.allclose(expect[0][0], W0)


TORCH_CASES = [c for c in CASES if not isinstance(c[1].get("lr"), dict)]


def torch_reference(kind, hyper, steps=3):
    """Params after each step by PyTorch's update rules (tests/torch_reference.py, NumPy), with
    gengraph's hyper-parameter names mapped to torch.optim's arguments."""
    import torch_reference as tr

    h = {**{k: d for k, (_t, d, _h) in OPTIMIZERS[kind].schema.items()}, **hyper}
    if "betas" in h:
        h["beta1"], h["beta2"] = h.pop("betas")
    if "rho" in h:
        h["alpha"] = h.pop("rho")
    params = [W0.copy(), B0.copy()]
    common = dict(lr=h["lr"], weight_decay=h["weight_decay"])
    if kind in ("gd", "sgd"):
        opt = tr.SGD(params, **common)
    elif kind in ("momentum", "nesterov"):
        opt = tr.SGD(params, momentum=h["momentum"], dampening=h["dampening"], nesterov=h["nesterov"], **common)
    elif kind == "adagrad":
        opt = tr.Adagrad(params, eps=h["eps"], lr_decay=h["lr_decay"],
                         initial_accumulator_value=h["initial_accumulator"], **common)
    elif kind == "rmsprop":
        opt = tr.RMSprop(params, alpha=h["alpha"], eps=h["eps"], momentum=h["momentum"], centered=h["centered"],
                         **common)
    else:
        cls = tr.Adam if kind == "adam" else tr.AdamW
        opt = cls(params, betas=(h["beta1"], h["beta2"]), eps=h["eps"], **common)
    out = []
    for _ in range(steps):
        grads = np_grads(*params)
        if h["clip_norm"]:
            grads = tr.clip_grad_norm_(grads, h["clip_norm"])
        opt.step(grads)
        out.append([p.copy() for p in params])
    return out


@pytest.mark.parametrize("kind,hyper", TORCH_CASES, ids=[_id(c) for c in TORCH_CASES])
def test_matches_torch(kind, hyper):
    """Against PyTorch's update rules (ported to NumPy, so this runs without torch)."""
    g, (gW, gb), _opt, prog = build(kind, **hyper)
    for t, (W_ref, b_ref) in enumerate(torch_reference(kind, hyper)):
        prog.run()
        np.testing.assert_allclose(g.value(gW), W_ref, **TOL, err_msg=f"W after step {t + 1}")
        np.testing.assert_allclose(g.value(gb), b_ref, **TOL, err_msg=f"b after step {t + 1}")


@pytest.mark.parametrize("kind,hyper", TORCH_CASES, ids=[_id(c) for c in TORCH_CASES])
def test_numpy_reference_matches_torch(kind, hyper):
    """The NumPy port against torch.optim itself, where torch is installed (the bench extra)."""
    torch = pytest.importorskip("torch")
    h = {**{k: d for k, (_t, d, _h) in OPTIMIZERS[kind].schema.items()}, **hyper}
    if "betas" in h:
        h["beta1"], h["beta2"] = h.pop("betas")
    if "rho" in h:
        h["alpha"] = h.pop("rho")
    W = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(B0, dtype=torch.float64, requires_grad=True)
    common = dict(lr=h["lr"], weight_decay=h["weight_decay"])
    if kind in ("gd", "sgd"):
        topt = torch.optim.SGD([W, b], **common)
    elif kind in ("momentum", "nesterov"):
        topt = torch.optim.SGD([W, b], momentum=h["momentum"], dampening=h["dampening"], nesterov=h["nesterov"],
                               **common)
    elif kind == "adagrad":
        topt = torch.optim.Adagrad([W, b], eps=h["eps"], lr_decay=h["lr_decay"],
                                   initial_accumulator_value=h["initial_accumulator"], **common)
    elif kind == "rmsprop":
        topt = torch.optim.RMSprop([W, b], alpha=h["alpha"], eps=h["eps"], momentum=h["momentum"],
                                   centered=h["centered"], **common)
    else:
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        topt = cls([W, b], betas=(h["beta1"], h["beta2"]), eps=h["eps"], **common)
    x, y = torch.tensor(X), torch.tensor(Y)
    for t, (W_ref, b_ref) in enumerate(torch_reference(kind, hyper)):
        topt.zero_grad()
        loss = 0.5 * ((x @ W + b - y) ** 2).sum()
        loss.backward()
        if h["clip_norm"]:
            torch.nn.utils.clip_grad_norm_([W, b], h["clip_norm"])
        topt.step()
        np.testing.assert_allclose(W.detach().numpy(), W_ref, **TOL, err_msg=f"W after step {t + 1}")
        np.testing.assert_allclose(b.detach().numpy(), b_ref, **TOL, err_msg=f"b after step {t + 1}")


# --- state, names, dtypes ---------------------------------------------------------------------
def test_state_is_written_in_place():
    g, (W, b), opt, prog = build("adam", lr=0.01)
    states = opt.state_nodes()
    assert [s.label for s in states] == ["opt/step", "adam/W/m", "adam/W/v", "adam/b/m", "adam/b/v"]
    before = {s.label: g.value(s).copy() for s in states}
    arrays = {s.label: g.values[s.id] for s in states}
    assert all(np.all(v == 0) for v in before.values())
    prog.run()
    for s in states:
        assert not np.array_equal(g.value(s), before[s.label]), s.label
        assert g.values[s.id] is arrays[s.label]  # same buffer, updated in place
    gW = np_grads(W0, B0)[0]
    np.testing.assert_allclose(g.value(opt.slots[W]["m"]), 0.1 * gW, **TOL)
    np.testing.assert_allclose(g.value(opt.slots[W]["v"]), 0.001 * gW * gW, **TOL)
    assert g.value(opt.step_node) == 1.0


def test_state_names_per_optimizer():
    expected = {"gd": [], "momentum": ["v"], "adagrad": ["sum"], "rmsprop": ["sq"], "adam": ["m", "v"],
                "adamw": ["m", "v"]}
    for kind, slots in expected.items():
        g, (W, b), opt, _ = build(kind)
        assert [s.label for s in opt.state_nodes()] == ["opt/step"] + [f"{kind}/{p}/{s}" for p in "Wb"
                                                                       for s in slots]
        assert all(s.op == "state" for s in opt.state_nodes())
    _, _, opt, _ = build("rmsprop", centered=True, momentum=0.9)
    assert sorted(opt.slots[opt.state_nodes()[1].graph.find("W")]) == ["buf", "g_avg", "sq"]


def test_adagrad_initial_accumulator_fills_state():
    g, _, opt, _ = build("adagrad", initial_accumulator=0.25)
    assert np.all(g.value(opt.state_nodes()[1]) == 0.25)


def test_float32_params_stay_float32():
    g = Graph("float32")
    w = g.param("w", [1.0, -2.0, 3.0])
    loss = ops.sum(w * w)
    opt = make_optimizer("adam", lr=make_schedule("cosine", lr=0.1, total_steps=10))
    ups = opt.updates(g, [w], grad(loss, [w]))
    assert all(v.dtype == k.dtype for k, v in ups.items())
    assert opt.step_node.dtype == np.float64
    prog = compile(g, loss, updates=ups)
    prog.run()
    assert g.values[w.id].dtype == np.float32
    # first adam step moves each coordinate by about lr against the sign of the gradient
    np.testing.assert_allclose(g.value(w), [0.9, -1.9, 2.9], rtol=1e-5)


def test_two_optimizers_in_one_graph_get_distinct_names():
    g = Graph("float64")
    a, c = g.param("a", 1.0), g.param("c", 2.0)
    o1, o2 = make_optimizer("momentum"), make_optimizer("momentum")
    o1.updates(g, [a], [grad(a * a, a)])
    o2.updates(g, [c], [grad(c * c, c)])
    labels = [s.label for s in o1.state_nodes() + o2.state_nodes()]
    assert len(set(labels)) == len(labels)
    assert o1.lr_node.name == "lr" and o2.lr_node.name == "lr_2"


def test_updates_checks_its_arguments():
    g = Graph("float64")
    w = g.param("w", np.zeros(3))
    with pytest.raises(ValueError, match="2 gradients"):
        make_optimizer("gd").updates(g, [w], [w, w])
    with pytest.raises(ValueError, match="shape"):
        make_optimizer("gd").updates(g, [w], [g.constant(np.zeros(2))])


@pytest.mark.parametrize("flat", [True, False])
def test_ema_is_the_debiased_average_of_the_iterates(flat):
    """ema = d: after n updates, averages() = (1 - d) sum_k d^(n-k) p_k / (1 - d^n) over the iterates
    p_1..p_n (written out by hand for n = 3, gd on the least-squares problem), and the parameters
    train exactly as without it."""
    d, lr = 0.9, 0.05
    Make = type("GDNotFlat", (OPTIMIZERS["gd"],), {"flat": False}) if not flat else OPTIMIZERS["gd"]
    g = Graph("float64")
    W, b = g.param("W", W0), g.param("b", B0)
    loss = 0.5 * ops.sum((g.constant(X) @ W + b - g.constant(Y)) ** 2.0)
    opt = Make(lr=lr, ema=d)
    prog = compile(g, loss, updates=opt.updates(g, [W, b], grad(loss, [W, b])))
    assert [s.label for s in opt.state_nodes()] == ["opt/step", "gd/W/ema", "gd/b/ema"]
    before = opt.averages(g)  # no update yet: the parameters themselves
    np.testing.assert_array_equal(before[W], W0)
    iterates, (w, c) = [], (W0, B0)
    for _ in range(3):
        gw, gc = np_grads(w, c)
        w, c = w - lr * gw, c - lr * gc
        iterates.append((w, c))
        prog.run()
    np.testing.assert_allclose(g.value(W), w, **TOL)  # training itself is unchanged
    avg = opt.averages(g)
    (w1, c1), (w2, c2), (w3, c3) = iterates
    norm = (1 - d) / (1 - d ** 3)  # = 1 / (1 + d + d^2)
    np.testing.assert_allclose(avg[W], norm * (d * d * w1 + d * w2 + w3), **TOL)
    np.testing.assert_allclose(avg[b], norm * (d * d * c1 + d * c2 + c3), **TOL)
    np.testing.assert_allclose(g.value(opt.slots[W]["ema"]), (1 - d) * (d * d * w1 + d * w2 + w3), **TOL)
    assert make_optimizer("gd").averages(g) == {}
    with pytest.raises(ValueError, match=r"ema must be in \[0, 1\)"):
        make_optimizer("adam", ema=1.0)


# --- the learning rate as a node ---------------------------------------------------------------
def test_lr_is_a_node_named_lr_following_the_schedule():
    from gengraph.engine.graph import topo_order

    sched = make_schedule("step", lr=0.1, step_size=2, gamma=0.5)
    g = Graph("float64")
    w = g.param("w", 1.0)
    opt = make_optimizer("gd", lr=sched)
    ups = opt.updates(g, [w], [w])  # w is the gradient of w^2 / 2
    lr = g.find("lr")
    assert lr is opt.lr_node and lr.name == "lr" and lr.shape == () and lr.op != "constant"
    assert g.find("opt/step") is opt.step_node and opt.step_node in topo_order([lr])
    # fetched while training, the lr is the schedule's value at the step before each update
    prog = compile(g, lr, updates=ups)
    seen, w_ref = [], 1.0
    for t in range(6):
        seen.append(float(prog.run()))
        w_ref -= sched.value(t) * w_ref
        assert float(g.value(w)) == pytest.approx(w_ref, rel=1e-14)
    assert seen == [sched.value(t) for t in range(6)] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]


def test_float_lr_is_a_constant_named_lr():
    g, _, _, _ = build("adam", lr=0.003)
    assert g.find("lr").op == "constant" and float(g.value(g.find("lr"))) == 0.003


# --- schedules ------------------------------------------------------------------------------
SCHEDULE_CASES = [
    ("constant", dict(lr=0.1), lambda t: 0.1),
    ("step", dict(lr=0.1, step_size=3), lambda t: 0.1 * 0.1 ** (t // 3)),
    ("step", dict(lr=0.5, step_size=4, gamma=0.7), lambda t: 0.5 * 0.7 ** (t // 4)),
    ("exponential", dict(lr=0.2, gamma=0.9), lambda t: 0.2 * 0.9 ** t),
    ("cosine", dict(lr=0.1, total_steps=10),
     lambda t: 0.5 * 0.1 * (1 + math.cos(math.pi * min(t, 10) / 10))),
    ("cosine", dict(lr=0.1, total_steps=10, min_lr=0.01),
     lambda t: 0.01 + 0.5 * 0.09 * (1 + math.cos(math.pi * min(t, 10) / 10))),
    ("cosine", dict(lr=0.1, total_steps=12, min_lr=0.02, warmup_steps=4),
     lambda t: 0.1 * (t + 1) / 4 if t < 4 else 0.02 + 0.5 * 0.08 * (1 + math.cos(math.pi * min(t - 4, 8) / 8))),
]
STEPS = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 15, 40]


@pytest.mark.parametrize("kind,hyper,formula", SCHEDULE_CASES, ids=[c[0] for c in SCHEDULE_CASES])
def test_schedule_value_and_node_match_formula(kind, hyper, formula):
    sched = make_schedule(kind, **hyper)
    g = Graph("float64")
    step = g.state("step", 0.0)
    prog = compile(g, sched.node(step), updates={step: step + 1.0})
    got = {}
    for t in range(max(STEPS) + 1):
        got[t] = float(prog.run())
    for t in STEPS:
        assert sched.value(t) == pytest.approx(formula(t), rel=1e-12, abs=1e-15), t
        assert got[t] == pytest.approx(formula(t), rel=1e-12, abs=1e-15), t


def test_schedule_landmarks():
    cos = make_schedule("cosine", lr=1.0, total_steps=100, min_lr=0.1, warmup_steps=10)
    assert cos.value(0) == pytest.approx(0.1) and cos.value(9) == pytest.approx(1.0)
    assert cos.value(10) == pytest.approx(1.0) and cos.value(55) == pytest.approx(0.55)
    assert cos.value(100) == pytest.approx(0.1) and cos.value(1000) == pytest.approx(0.1)
    assert make_schedule("step", lr=1.0, step_size=10, gamma=0.5).value(25) == 0.25


def test_schedule_against_torch():
    """Against PyTorch's StepLR, ExponentialLR and CosineAnnealingLR (closed forms in NumPy)."""
    import torch_reference as tr

    pairs = [(make_schedule("step", lr=0.1, step_size=3, gamma=0.5), lambda t: tr.step_lr(0.1, t, 3, 0.5)),
             (make_schedule("exponential", lr=0.1, gamma=0.9), lambda t: tr.exponential_lr(0.1, t, 0.9)),
             (make_schedule("cosine", lr=0.1, total_steps=10, min_lr=0.01),
              lambda t: tr.cosine_annealing_lr(0.1, t, 10, 0.01))]
    for ours, ref in pairs:
        for t in range(11):
            assert ours.value(t) == pytest.approx(ref(t), rel=1e-12), (ours, t)


def test_schedule_reference_matches_torch():
    torch = pytest.importorskip("torch")
    import torch_reference as tr

    p = torch.nn.Parameter(torch.zeros(1))
    pairs = [(lambda t: tr.step_lr(0.1, t, 3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
             (lambda t: tr.exponential_lr(0.1, t, 0.9), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)),
             (lambda t: tr.cosine_annealing_lr(0.1, t, 10, 0.01),
              lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.01))]
    for ref, make in pairs:
        o = torch.optim.SGD([p], lr=0.1)
        s = make(o)
        for t in range(11):
            assert ref(t) == pytest.approx(o.param_groups[0]["lr"], rel=1e-12), t
            o.step()
            s.step()


# --- convergence on a convex quadratic --------------------------------------------------------
def _quadratic(kind, steps, **hyper):
    A = np.array([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])
    c = np.array([1.0, -2.0, 0.5])
    x_star = np.linalg.solve(A, c)
    g = Graph("float64")
    x = g.param("x", np.zeros(3))
    loss = 0.5 * ops.sum(x * (g.constant(A) @ x)) - ops.sum(g.constant(c) * x)
    opt = make_optimizer(kind, **hyper)
    prog = compile(g, loss, updates=opt.updates(g, [x], grad(loss, [x])))
    for _ in range(steps):
        prog.run()
    return np.max(np.abs(g.value(x) - x_star))


def test_momentum_converges_on_quadratic():
    assert _quadratic("momentum", 300, lr=0.1, momentum=0.9) < 1e-6
    assert _quadratic("nesterov", 300, lr=0.1, momentum=0.9) < 1e-6


def test_adam_converges_on_quadratic():
    assert _quadratic("adam", 3000, lr=0.05) < 1e-6
    sched = make_schedule("cosine", lr=0.1, total_steps=2000, warmup_steps=20)
    assert _quadratic("adam", 2000, lr=sched) < 1e-6


def test_other_optimizers_decrease_quadratic_error():
    start = _quadratic("gd", 0)
    for kind, hyper in [("gd", dict(lr=0.2)), ("adagrad", dict(lr=0.5)), ("rmsprop", dict(lr=0.01)),
                        ("adamw", dict(lr=0.05, weight_decay=0.0))]:
        assert _quadratic(kind, 500, **hyper) < 0.05 * start, kind


# --- registries, schemas and errors ---------------------------------------------------------
def test_registry_and_schemas():
    assert set(OPTIMIZERS) >= {"gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"}
    assert OPTIMIZERS["sgd"] is OPTIMIZERS["gd"]
    for kind, cls in OPTIMIZERS.items():
        assert issubclass(cls, Optimizer)
        assert {"lr", "weight_decay", "clip_norm"} <= set(cls.schema)
        for key, (typ, default, help_) in cls.schema.items():
            assert typ in (float, int, bool, str) and isinstance(help_, str) and help_, (kind, key)
            assert default is REQUIRED or isinstance(default, typ), (kind, key)
        opt = make_optimizer(kind)
        assert set(opt.hyper) == set(cls.schema)
    assert set(SCHEDULES) == {"constant", "step", "exponential", "cosine"}
    for cls in SCHEDULES.values():
        assert issubclass(cls, Schedule) and "lr" in cls.schema


def test_adam_fused_auto_is_yes_for_engine_users():
    # documented "auto: yes", but only the spec runner turned auto into yes; make_optimizer's
    # default gave the 13 plain nodes
    ops_of = {}
    for fused in ("auto", "yes", "no"):
        g = Graph(dtype="float64")
        w = g.param("w", np.array([1.0, -2.0]))
        loss = ops.sum(ops.square(w))
        opt = make_optimizer("adam", lr=0.1, fused=fused)
        ops_of[fused] = {n.op for n in compile(g, loss, updates=opt.updates(g, [w], [grad(loss, w)])).nodes}
    assert {"adam_step", "ema"} <= ops_of["auto"] and ops_of["auto"] == ops_of["yes"]
    assert "adam_step" not in ops_of["no"]


def test_defaults_are_pytorchs():
    assert make_optimizer("adam").hyper == dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, fused="auto",
                                                weight_decay=0.0, clip_norm=0.0, ema=0.0)
    assert make_optimizer("adamw").hyper["weight_decay"] == 0.01
    assert make_optimizer("rmsprop").hyper == dict(lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, centered=False,
                                                   weight_decay=0.0, clip_norm=0.0, ema=0.0)
    assert make_optimizer("adagrad").hyper["eps"] == 1e-10
    m = make_optimizer("momentum", lr=1)
    assert m.hyper["momentum"] == 0.9 and m.hyper["nesterov"] is False and m.hyper["lr"] == 1.0
    assert isinstance(m.hyper["lr"], float)
    assert make_optimizer("nesterov").hyper["nesterov"] is True
    assert make_optimizer("rmsprop", rho=0.9).hyper["alpha"] == 0.9
    assert make_optimizer("adam", betas=[0.5, 0.6]).hyper["beta2"] == 0.6


def test_unknown_kind_suggests():
    with pytest.raises(ValueError, match='unknown optimizer "adma"; did you mean "adam"'):
        make_optimizer("adma")
    with pytest.raises(ValueError, match="known: adagrad, adam"):
        make_optimizer("lbfgs")
    with pytest.raises(ValueError, match='unknown schedule "cosin"; did you mean "cosine"'):
        make_schedule("cosin", lr=0.1, total_steps=3)


def test_unknown_hyper_suggests():
    with pytest.raises(ValueError, match='unknown hyper-parameter "beta_1"; did you mean "beta1"'):
        make_optimizer("adam", beta_1=0.9)
    with pytest.raises(ValueError, match='did you mean "momentum"'):
        make_optimizer("momentum", momentun=0.9)
    with pytest.raises(ValueError, match='did you mean "step_size"'):
        make_schedule("step", lr=0.1, stepsize=3)


def test_bad_values_are_errors():
    with pytest.raises(ValueError, match="lr must be >= 0"):
        make_optimizer("gd", lr=-1.0)
    with pytest.raises(ValueError, match="must be float"):
        make_optimizer("gd", lr="fast")
    with pytest.raises(ValueError, match="nesterov must be bool"):
        make_optimizer("momentum", nesterov=1)
    with pytest.raises(ValueError, match="nesterov needs"):
        make_optimizer("momentum", nesterov=True, momentum=0.0)
    with pytest.raises(ValueError, match=r'optimizer "adam": beta2 must be in \[0, 1\), not 1\.0'):
        make_optimizer("adam", beta2=1.0)
    with pytest.raises(ValueError, match="name the same"):
        make_optimizer("rmsprop", rho=0.9, alpha=0.9)
    with pytest.raises(ValueError, match='missing required hyper-parameter "total_steps"'):
        make_schedule("cosine", lr=0.1)
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        make_schedule("cosine", lr=0.1, total_steps=5, warmup_steps=5)
    with pytest.raises(ValueError, match="step_size must be int"):
        make_schedule("step", lr=0.1, step_size=2.5)


def test_lr_accepts_schedule_table():
    opt = make_optimizer("adam", lr={"kind": "exponential", "lr": 0.1, "gamma": 0.5})
    assert isinstance(opt.hyper["lr"], Schedule) and opt.schedule.value(2) == 0.025
    assert make_optimizer("gd", lr=0.5).schedule.value(7) == 0.5


@pytest.mark.cuda
def test_cupy_matches_numpy():
    from gengraph.engine import cupy_available

    if not cupy_available():
        pytest.skip("needs CuPy and an NVIDIA GPU")
    result = {}
    for backend in ("numpy", "cupy"):
        g = Graph("float64")
        w = g.param("w", np.linspace(-1.0, 1.0, 6).reshape(2, 3))
        loss = ops.sum(w ** 4.0)
        opt = make_optimizer("adamw", lr=make_schedule("cosine", lr=0.1, total_steps=5, warmup_steps=2),
                             clip_norm=1.0)
        prog = compile(g, loss, updates=opt.updates(g, [w], grad(loss, [w])), backend=backend)
        for _ in range(4):
            prog.run()
        result[backend] = g.value(w)
    np.testing.assert_allclose(result["cupy"], result["numpy"], rtol=1e-12, atol=1e-12)


# --- flat buffers: one update over all parameters equals the per-parameter updates ---------
def _mlp_case(kind, hyper, flat, steps=4, dtype="float64"):
    """A 3-layer tanh MLP (6 params of different shapes) trained `steps` steps; returns
    {leaf label: value} of every param and state after each step, and the graph."""
    rng = np.random.default_rng(3)
    g = Graph(dtype)
    x, y = g.constant(rng.normal(size=(8, 5))), g.constant(rng.normal(size=(8, 2)))
    sizes = [5, 7, 4, 2]
    params = []
    h = x
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = g.param(f"l{i}/W", rng.normal(size=(a, b)) / np.sqrt(a))
        bias = g.param(f"l{i}/b", rng.normal(size=(b,)) * 0.1)
        params += [W, bias]
        h = h @ W + bias
        if i < len(sizes) - 2:
            h = ops.tanh(h)
    loss = ops.mean((h - y) ** 2.0)
    opt = make_optimizer(kind, **hyper)
    opt.flat = flat
    ups = opt.updates(g, params, grad(loss, params))
    prog = compile(g, {"loss": loss}, updates=ups)
    leaves = params + opt.state_nodes()
    history = []
    for _ in range(steps):
        prog.run()
        history.append({n.label: g.value(n).copy() for n in leaves})
    return history, g, opt, params, prog


FLAT_CASES = CASES + [("adagrad", dict(lr=0.1, clip_norm=0.05)), ("gd", dict(lr=0.1, weight_decay=0.2))]


@pytest.mark.parametrize("kind,hyper", FLAT_CASES, ids=[_id(c) for c in FLAT_CASES])
def test_flat_updates_equal_per_parameter_updates(kind, hyper):
    """Flat buffers change where values live, not what is computed: bit-for-bit equal in
    float64 for every rule, clip_norm included (its global norm differed in the last bit: one
    dot product over the flat gradient against a sum of per-parameter sums)."""
    flat, g_flat, opt, params, prog = _mlp_case(kind, dict(hyper), flat=True)
    ref, *_ = _mlp_case(kind, dict(hyper), flat=False)
    assert opt.flat_grad is not None, "the flat path was not taken"
    for step, (a, b) in enumerate(zip(flat, ref)):
        assert a.keys() == b.keys()  # same leaves, same per-parameter names
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{name} after step {step + 1}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_adam_on_a_0d_parameter_rounds_as_on_arrays(dtype):
    # the 0-d kernel evaluated p - step * m / d, the array kernel p - (m / d) * step: 1 ulp apart on
    # some draws (1.5e-8 in float32), so a flat update (arrays) and a per-parameter
    # one (0-d) of the same scalar parameter drifted apart, and the drift spread to the others
    from gengraph.engine.ops.fused import _adam_step_forward

    rng = np.random.default_rng(0)
    p, m, v = (rng.standard_normal(500).astype(dtype) for _ in range(3))
    v = np.abs(v)
    step, scale = np.array(0.0123, dtype), np.array(0.97, dtype)
    arrays = _adam_step_forward(np, p, m, v, step, scale, 1e-8)
    scalars = [_adam_step_forward(np, p[i][()], m[i][()], v[i][()], step, scale, 1e-8) for i in range(p.size)]
    np.testing.assert_array_equal(np.array(scalars, dtype), arrays)


def test_flat_layout_keeps_names_and_shares_one_buffer():
    _, g, opt, params, _ = _mlp_case("adam", dict(lr=0.01), flat=True, steps=1)
    labels = [n.label for n in opt.state_nodes()]
    assert "adam/l0/W/m" in labels and "adam/l2/b/v" in labels and "opt/step" in labels
    for group in [params, [opt.slots[p]["m"] for p in params], [opt.slots[p]["v"] for p in params]]:
        vals = [g.values[n.id] for n in group]
        base = vals[0].base
        assert base is not None and all(v.base is base for v in vals)
        assert base.size == sum(v.size for v in vals)


def test_numpy_scalars_are_hyper_parameters_like_python_numbers():
    # np.float32(0.01) (e.g. taken from an array) was refused: "lr must be float, not np.float32(0.01)"
    from gengraph.engine.schedules import make_schedule

    opt = make_optimizer("adam", lr=np.float32(0.01), beta1=np.float64(0.8))
    assert type(opt.hyper["lr"]) is type(opt.hyper["beta1"]) is float and opt.hyper["lr"] == pytest.approx(0.01, rel=1e-7)
    assert make_schedule("step", lr=0.1, step_size=np.int64(3)).hyper["step_size"] == 3
    with pytest.raises(ValueError, match="step_size must be int"):
        make_schedule("step", lr=0.1, step_size=np.float64(2.5))
    with pytest.raises(ValueError, match="lr must be float"):
        make_optimizer("adam", lr=np.bool_(True))


def test_one_node_instead_of_a_list_is_a_clear_error():
    # list(node) indexed the node row by row: "ShapeError: getitem((3)): bad index 3"
    g = Graph()
    w = g.param("w", np.ones(3))
    with pytest.raises(TypeError, match="lists of params"):
        make_optimizer("sgd", lr=0.1).updates(g, w, grad(ops.sum(w * w), w))


def test_a_parameter_listed_twice_is_refused():
    # it was accepted: the second update overwrote the first, and two state slots (v, v_2) were made
    g = Graph("float64")
    W = g.param("W", np.ones((2, 2)))
    b = g.param("b", np.zeros(2))
    loss = ops.sum(W * W) + ops.sum(b)
    gW, gb = grad(loss, [W, b])
    with pytest.raises(ValueError, match="W is listed twice"):
        make_optimizer("momentum", lr=0.1, momentum=0.9).updates(g, [W, W, b], [gW, gW, gb])
