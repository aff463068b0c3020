"""PyTorch's optimizer and lr-scheduler update rules, written out in NumPy.

Each class follows the single-tensor code path of ``torch.optim`` (``foreach=False``,
``maximize=False``, ``amsgrad=False``) line by line, with PyTorch's argument and state names,
as documented in the algorithm boxes of https://pytorch.org/docs/stable/optim.html. The tests
compare gengraph's optimizers against these, so they run without torch installed; when torch
is installed, ``test_numpy_reference_matches_torch`` checks these ports against torch itself.
"""

from __future__ import annotations

import math

import numpy as np


class _Optimizer:
    def __init__(self, params, **defaults):
        self.params = params  # list of float64 arrays, updated in place
        self.defaults = defaults
        self.state = [dict() for _ in params]

    def step(self, grads):
        for i, (param, grad) in enumerate(zip(self.params, grads)):
            self._update(param, np.array(grad, dtype=np.float64), self.state[i])


class SGD(_Optimizer):
    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov)

    def _update(self, param, grad, state):
        d = self.defaults
        if d["weight_decay"] != 0:
            grad = grad + d["weight_decay"] * param
        if d["momentum"] != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= d["momentum"]
                buf += (1 - d["dampening"]) * grad
            grad = grad + d["momentum"] * buf if d["nesterov"] else buf
        param -= d["lr"] * grad


class Adagrad(_Optimizer):
    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)
        for p, st in zip(params, self.state):
            st["step"], st["sum"] = 0, np.full_like(p, initial_accumulator_value)

    def _update(self, param, grad, state):
        d = self.defaults
        state["step"] += 1
        if d["weight_decay"] != 0:
            grad = grad + d["weight_decay"] * param
        clr = d["lr"] / (1 + (state["step"] - 1) * d["lr_decay"])
        state["sum"] += grad * grad
        std = np.sqrt(state["sum"]) + d["eps"]
        param -= clr * (grad / std)


class RMSprop(_Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered)
        for p, st in zip(params, self.state):
            st["square_avg"], st["grad_avg"], st["momentum_buffer"] = (np.zeros_like(p) for _ in range(3))

    def _update(self, param, grad, state):
        d = self.defaults
        alpha = d["alpha"]
        if d["weight_decay"] != 0:
            grad = grad + d["weight_decay"] * param
        sq = state["square_avg"]
        sq *= alpha
        sq += (1 - alpha) * grad * grad
        if d["centered"]:
            ga = state["grad_avg"]
            ga += (1 - alpha) * (grad - ga)  # lerp_(grad, 1 - alpha)
            avg = np.sqrt(sq - ga * ga)
        else:
            avg = np.sqrt(sq)
        avg = avg + d["eps"]
        if d["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf *= d["momentum"]
            buf += grad / avg
            param -= d["lr"] * buf
        else:
            param -= d["lr"] * (grad / avg)


class Adam(_Optimizer):
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        for p, st in zip(params, self.state):
            st["step"], st["exp_avg"], st["exp_avg_sq"] = 0, np.zeros_like(p), np.zeros_like(p)

    def _update(self, param, grad, state):
        d = self.defaults
        beta1, beta2 = d["betas"]
        state["step"] += 1
        if d["weight_decay"] != 0:
            if self.decoupled:
                param *= 1 - d["lr"] * d["weight_decay"]
            else:
                grad = grad + d["weight_decay"] * param
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (1 - beta1) * (grad - m)  # lerp_(grad, 1 - beta1)
        v *= beta2
        v += (1 - beta2) * grad * grad
        step = state["step"]
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = d["lr"] / bias_correction1
        denom = np.sqrt(v) / math.sqrt(bias_correction2) + d["eps"]
        param -= step_size * (m / denom)


class AdamW(Adam):
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def clip_grad_norm_(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_ (2-norm over all gradients, 1e-6 in the denominator)."""
    total_norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
    clip_coef = min(max_norm / (total_norm + 1e-6), 1.0)
    return [g * clip_coef for g in grads]


# --- lr schedulers: the closed forms of StepLR, ExponentialLR and CosineAnnealingLR ----------
def step_lr(base_lr, epoch, step_size, gamma=0.1):
    return base_lr * gamma ** (epoch // step_size)


def exponential_lr(base_lr, epoch, gamma):
    return base_lr * gamma ** epoch


def cosine_annealing_lr(base_lr, epoch, T_max, eta_min=0.0):
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / T_max)) / 2
