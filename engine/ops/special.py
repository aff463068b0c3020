"""Ops about gradients and shapes of values: stop_gradient, zeros_like, ones_like, cast."""

from __future__ import annotations

import numpy as np

from .registry import ZERO, defop, same_shape

stop_gradient = defop("stop_gradient", lambda xp, x: x, lambda x: (x.shape, x.dtype), (ZERO,),
                      returns_view_of_input=True, in_expressions=True,
                      doc="identity whose gradient is zero (treat x as a constant)")
zeros_like = defop("zeros_like", lambda xp, x: xp.zeros_like(x), same_shape, (ZERO,), doc="zeros shaped like x")
ones_like = defop("ones_like", lambda xp, x: xp.ones_like(x), same_shape, (ZERO,), doc="ones shaped like x")


def _cast_vjp(g, y, x, dtype):
    # float -> float: the identity, back in x's dtype (an int output carries no gradient)
    return cast(g, dtype=x.dtype.name) if g.dtype != x.dtype else g


cast = defop("cast", lambda xp, x, dtype: x.astype(dtype), lambda x, dtype: (x.shape, np.dtype(dtype)), (_cast_vjp,),
             doc="change dtype; between float dtypes its gradient is the identity (cast back)")
