"""The three workloads in JAX (CPU), one `jax.jit` over the whole training step.

Each step -- forward, `jax.value_and_grad`, the gradient norm (the trainer's divergence
monitor) and Adam (PyTorch's convention, as gengraph's `adam` and the hand-written NumPy's)
-- is one compiled XLA computation; parameters and Adam moments are donated, so XLA updates
them in place. Bias-corrected step size and sqrt(1 - b2^t) are computed in Python float64
and passed in the parameters' dtype, as the other frameworks do. Same initial parameters
(gengraph's), same batches, same noise (drawn with NumPy from gengraph's streams and passed
in). JAX is optional: `pip install -e '.[bench]'` installs `jax[cpu]`.
"""

from __future__ import annotations

import math
import os

from ._pin import pinned_threads

if "XLA_FLAGS" not in os.environ and (pinned_threads() or 1) == 1:
    # one thread: XLA's CPU backend otherwise runs its Eigen ops on a pool of every core
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"  # (intra_op_parallelism_threads is no XLA flag: the pinning does it)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)  # the float64 checks; float32 arrays stay float32


def _mlp_loss(params, x, y):
    W1, b1, W2, b2, W3, b3 = params
    h = jax.nn.relu(x @ W1 + b1)
    h = jax.nn.relu(h @ W2 + b2)
    z = h @ W3 + b3
    picked = jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]
    zmax = z.max(axis=1)
    loss = jnp.mean(jax.nn.logsumexp(z, axis=1) - picked)
    acc = jnp.mean((picked >= zmax).astype(z.dtype))
    return loss, (acc,)


def _vae_loss(params, x, eps):
    W1, b1, We, be, W3, b3, W4, b4 = params
    k = We.shape[1] // 2
    e = jax.nn.relu(x @ W1 + b1) @ We + be
    mu, lv = e[:, :k], e[:, k:]
    z = mu + jnp.exp(0.5 * lv) * eps
    logits = jax.nn.relu(z @ W3 + b3) @ W4 + b4
    rec = (jax.nn.softplus(logits) - logits * x).sum(axis=1)
    kl = 0.5 * (jnp.exp(lv) + mu * mu - 1.0 - lv).sum(axis=1)
    loss = jnp.mean(rec + kl)
    return loss, (loss, jnp.mean(rec), jnp.mean(kl))


def _ddpm_loss_fn(info, dtype):
    T = info["T"]
    tab = {k: jnp.asarray(np.asarray(v, dtype)) for k, v in info["tables"].items()}
    act = jax.nn.silu if info["activation"] == "silu" else jax.nn.relu
    dt = np.dtype(dtype).type

    def loss_fn(params, x0, u, eps):
        t = (jnp.minimum(jnp.floor(u * dt(T)), dt(T - 1)) + dt(1)).astype(jnp.int32)
        D = x0.shape[1]
        xt = tab["sqrt_abar"][t][:, None] * x0 + tab["sqrt_1m_abar"][t][:, None] * eps
        h = jnp.concatenate([xt, t.astype(x0.dtype)[:, None] * dt(1.0 / T)], axis=1)
        for i in range(0, 6, 2):
            h = act(h @ params[i] + params[i + 1])
        f = h @ params[6] + params[7]
        sq = ((f - eps) ** 2).sum(axis=1)
        mse = sq.mean() * dt(1.0 / D)
        prior = 0.5 * (tab["abar_T"] * (x0 * x0 - 1.0)).sum(axis=1) + 0.5 * D * tab["neg_log_1m_abar_T"]
        nll = jnp.mean(prior + dt(T) * (tab["const"][t] + tab["w"][t] * sq))
        return mse, (mse, nll)

    return loss_fn


def _make_step(loss_fn, b1, b2, eps, monitor):
    def step(params, m, v, step_size, bc2, *data):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *data)
        outs = (loss,) + tuple(aux)
        if monitor:
            outs += (jnp.sqrt(sum(jnp.vdot(g, g) for g in grads)),)
        m = [b1 * mi + (1.0 - b1) * g for mi, g in zip(m, grads)]
        v = [b2 * vi + (1.0 - b2) * (g * g) for vi, g in zip(v, grads)]
        params = [p - step_size * (mi / (jnp.sqrt(vi) / bc2 + eps)) for p, mi, vi in zip(params, m, v)]
        return params, m, v, outs

    return jax.jit(step, donate_argnums=(0, 1, 2))


class JaxModel:
    """kind: "mlp" (data x, y), "vae" (x, eps) or "ddpm" (x0, u, eps; `info` = the plugin's tables)."""

    def __init__(self, kind, params, adam=None, grad_norm=True, info=None):
        a = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, **(adam or {})}
        self.dtype = np.asarray(params[0]).dtype
        self.lr, self.b1, self.b2, self.eps = a["lr"], a["beta1"], a["beta2"], a["eps"]
        self.params = [jnp.asarray(np.array(p)) for p in params]
        self.m = [jnp.zeros_like(p) for p in self.params]
        self.v = [jnp.zeros_like(p) for p in self.params]
        self.t = 0
        loss_fn = {"mlp": _mlp_loss, "vae": _vae_loss}.get(kind) or _ddpm_loss_fn(info, self.dtype)
        self._step = _make_step(loss_fn, self.b1, self.b2, self.eps, grad_norm)

    def compile(self, *data):
        """Compile the step ahead of time for data shaped like `data` (else the first call does)."""
        dt = self.dtype.type
        self._step = self._step.lower(self.params, self.m, self.v, dt(0), dt(1), *data).compile()

    def step(self, *data):
        self.t += 1
        lr = self.lr(self.t - 1) if callable(self.lr) else self.lr
        dt = self.dtype.type
        step_size = dt(lr / (1.0 - self.b1 ** self.t))
        bc2 = dt(math.sqrt(1.0 - self.b2 ** self.t))
        self.params, self.m, self.v, outs = self._step(self.params, self.m, self.v, step_size, bc2, *data)
        return [float(o) for o in outs]

    def values(self):
        return [np.asarray(p) for p in self.params]


def load_jax(enabled=True):
    """The module's JaxModel, or None when JAX is not installed (or disabled)."""
    if not enabled or os.environ.get("GENGRAPH_BENCH_NO_JAX"):
        return None
    return JaxModel
