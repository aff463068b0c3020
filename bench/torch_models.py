"""The three workloads in idiomatic PyTorch (CPU, eager): nn.Linear, autograd, torch.optim.Adam.

Every model takes ``device`` ("cpu" by default; bench/gpu.py passes "cuda").

Parameters are copied from gengraph's initial values (W transposed into nn.Linear's
(out, in) layout), so all frameworks start from the same point. Noise arrays are drawn
with NumPy from the streams gengraph uses and wrapped with torch.from_numpy (no copy).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _linear_stack(params, dtype, device="cpu"):
    layers = []
    for W, b in zip(params[0::2], params[1::2]):
        lin = nn.Linear(W.shape[0], W.shape[1], dtype=dtype, device=device)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(np.asarray(W).T)))
            lin.bias.copy_(torch.from_numpy(np.asarray(b)))
        layers.append(lin)
    return layers


def torch_dtype(np_dtype):
    return torch.float64 if np.dtype(np_dtype) == np.float64 else torch.float32


def grads_numpy(params):
    """Gradients in gengraph's layout: W as (in, out)."""
    out = []
    for p in params:
        g = p.grad.detach().cpu().numpy()
        out.append(g.T if g.ndim == 2 else g)
    return out


def _grad_norm(params):
    return torch.sqrt(sum((p.grad * p.grad).sum() for p in params))


def _grad_norm_foreach(params):
    """One multi-tensor kernel for the per-tensor norms (as clip_grad_norm_ does), then one norm."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params])))


# How each PyTorch row is run (`variant`):
#   default -- torch.optim.Adam as constructed by default (on the CPU its single-tensor loop: PyTorch
#              picks foreach only for CUDA tensors),
#              gradient norm as a Python sum of per-tensor sums (what a user writes);
#   fused   -- torch.optim.Adam(fused=True) (one fused kernel for all parameters) and
#              torch._foreach_norm for the norm monitor: PyTorch eager at its best;
#   compile -- `fused`, with the forward + loss under torch.compile (inductor; backward via
#              AOTAutograd); the optimizer step stays the fused eager kernel.
VARIANTS = ("default", "fused", "compile")


class _Base:
    def __init__(self, params, adam, grad_norm, device="cpu", variant="default"):
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r} not in {VARIANTS}")
        self.variant = variant
        self.dtype = torch_dtype(np.asarray(params[0]).dtype)
        self.device = torch.device(device)
        self.layers = _linear_stack(params, self.dtype, self.device)
        self.params = [p for lin in self.layers for p in (lin.weight, lin.bias)]
        a = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, **(adam or {})}
        self.lr, self.t = a["lr"], 0  # lr: a float or a function of the step (an lr schedule)
        lr0 = self.lr(0) if callable(self.lr) else self.lr
        extra = {"fused": True} if variant != "default" else {}
        self.opt = torch.optim.Adam(self.params, lr=lr0, betas=(a["beta1"], a["beta2"]), eps=a["eps"], **extra)
        self.grad_norm = grad_norm
        self._norm = _grad_norm if variant == "default" else _grad_norm_foreach

    def _compiled(self):
        """Replace `loss` by its torch.compile'd version (variant "compile")."""
        if self.variant == "compile":
            self.loss = torch.compile(self.loss)

    def _finish(self, loss, extras):
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        out = [loss.item()] + [e.item() for e in extras]
        if self.grad_norm:
            with torch.no_grad():
                out.append(self._norm(self.params).item())
        if callable(self.lr):  # what torch.optim.lr_scheduler would set, step by step
            self.opt.param_groups[0]["lr"] = self.lr(self.t)
        self.t += 1
        self.opt.step()
        return out


class TorchMLP(_Base):
    def __init__(self, params, adam=None, grad_norm=True, device="cpu", variant="default"):
        super().__init__(params, adam, grad_norm, device, variant)
        l1, l2, l3 = self.layers
        self.net = nn.Sequential(l1, nn.ReLU(), l2, nn.ReLU(), l3)
        self._compiled()

    def loss(self, x, y):
        z = self.net(x)
        loss = F.cross_entropy(z, y)
        with torch.no_grad():
            acc = (z.gather(1, y[:, None])[:, 0] >= z.max(dim=1).values).to(z.dtype).mean()
        return loss, acc

    def step(self, x, y):
        loss, acc = self.loss(x, y)
        return self._finish(loss, [acc])


class TorchVAE(_Base):
    def __init__(self, params, adam=None, grad_norm=True, device="cpu", variant="default"):
        super().__init__(params, adam, grad_norm, device, variant)
        self.enc, self.head, self.dec1, self.dec2 = self.layers
        self._compiled()

    def loss(self, x, eps):
        mu, logvar = self.head(F.relu(self.enc(x))).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.dec2(F.relu(self.dec1(z)))
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
        kl = 0.5 * (logvar.exp() + mu * mu - 1.0 - logvar).sum(dim=1)
        loss = (rec + kl).mean()
        return loss, loss.detach(), rec.detach().mean(), kl.detach().mean()

    def step(self, x, eps):
        loss, neg_elbo, rec, kl = self.loss(x, eps)
        return self._finish(loss, [neg_elbo, rec, kl])


class TorchDDPM(_Base):
    """The diffusion plugin's DDPM (see numpy_ddpm.py) in PyTorch."""

    def __init__(self, params, info, adam=None, grad_norm=True, device="cpu", variant="default"):
        super().__init__(params, adam, grad_norm, device, variant)
        l1, l2, l3, l4 = self.layers
        act = nn.SiLU if info["activation"] == "silu" else nn.ReLU
        self.net = nn.Sequential(l1, act(), l2, act(), l3, act(), l4)
        self.T, self.steps = info["T"], info["steps"]
        self.tab = {k: torch.from_numpy(np.asarray(v)).to(self.device, self.dtype) for k, v in info["tables"].items()}
        self.np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        self._compiled()

    def t_of(self, u):
        return (torch.clamp(torch.floor(u * self.T), max=self.T - 1) + 1.0).long()

    def loss(self, x0, t, eps):
        tab = self.tab
        D = x0.shape[1]
        xt = tab["sqrt_abar"][t][:, None] * x0 + tab["sqrt_1m_abar"][t][:, None] * eps
        f = self.net(torch.cat([xt, t.to(x0.dtype)[:, None] * (1.0 / self.T)], dim=1))
        sq = ((f - eps) ** 2).sum(dim=1)
        mse = sq.mean() * (1.0 / D)
        with torch.no_grad():
            prior = 0.5 * (tab["abar_T"] * (x0 * x0 - 1.0)).sum(dim=1) + 0.5 * D * tab["neg_log_1m_abar_T"]
            nll = (prior + self.T * (tab["const"][t] + tab["w"][t] * sq)).mean()
        return mse, nll

    def step(self, x0, u, eps):
        mse, nll = self.loss(x0, self.t_of(u), eps)
        return self._finish(mse, [mse.detach(), nll])

    @torch.no_grad()
    def sample(self, n, rng):
        tab, dt = self.tab, self.np_dtype
        x = torch.from_numpy(rng.standard_normal((n, 2)).astype(dt)).to(self.device)
        tcol = torch.empty((n, 1), dtype=self.dtype, device=self.device)
        for s in self.steps:
            z = torch.from_numpy(rng.standard_normal((n, 2)).astype(dt)).to(self.device)
            tcol.fill_(s.t)
            f = self.net(torch.cat([x, tcol * (1.0 / self.T)], dim=1))
            x0_hat = (x - tab["sqrt_1m_abar"][s.t] * f) / tab["sqrt_abar"][s.t]
            x = s.a * x0_hat + s.b * f + s.sigma * z
        return x
