"""All ops, importable as ``gengraph.engine.ops.<name>``; the registry is ``OPS``.

The imports below are the namespace only: what an op is (differentiable, random, callable
from expressions, ...) is read from its OpDef in ``OPS`` (and ``EXPRESSION_FUNCTIONS``),
never from a list kept here. docs/adding-an-op.md says how to add one.
"""

from .registry import (EXPRESSION_FUNCTIONS, OPS, ZERO, OpDef, ShapeError, apply, as_node,  # noqa: F401
                       broadcast_shapes, defop, expression_function)
from .elementwise import abs, add, clip, cos, div, elu, eq, exp, expm1, ge, gelu, gt, le, leaky_relu, log, log1p, lt  # noqa: F401
from .elementwise import maximum, minimum, mul, neg, pow, relu, relu_grad, sigmoid, sign, silu, silu_grad, silu_grad_x, sin, softplus, sqrt, square  # noqa: F401
from .elementwise import floor, sub, tanh, where  # noqa: F401
from .reduce import broadcast_like, count, l2_norm, sum_squares, expand_dims, max, mean, min, reshape_like, sum, sum_to  # noqa: F401
from .shape import broadcast_to, concat, flatten, getitem, matmul, mT, one_hot, reshape, take, transpose  # noqa: F401
from .nn import (logsumexp, bce_with_logits, bernoulli_logpmf, correct, softmax_ce_backward, softmax_minus_one_hot, gaussian_logpdf, kl_normal, kl_normal_std,  # noqa: F401
                 log_sigmoid, log_softmax, mse, softmax, softmax_cross_entropy)
from .fused import adam_bc_sqrt, adam_step, adam_step_size, ema  # noqa: F401
from .flat import pack, unpack  # noqa: F401
from .special import cast, ones_like, stop_gradient, zeros_like  # noqa: F401
from .random import RandomStreams, bernoulli, random_normal, random_uniform  # noqa: F401
from .conv import conv2d, conv2d_backward_weight, conv_transpose2d  # noqa: F401
from .pool import avg_pool2d, max_pool2d, upsample_nearest2d  # noqa: F401
from .norm import group_norm, inv_std, layer_norm, normalize_grad, normalized  # noqa: F401
from .dropout import dropout  # noqa: F401
