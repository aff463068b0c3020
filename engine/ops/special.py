"""Ops about gradients and shapes of values: stop_gradient, zeros_like, ones_like, cast."""

from __future__ import annotations

import numpy as np

from .registry import defop, same_shape

stop_gradient = defop("stop_gradient", lambda xp, x: x, lambda x: (x.shape, x.dtype), (None,), view=True,
                      doc="identity whose gradient is zero (treat x as a constant)")
zeros_like = defop("zeros_like", lambda xp, x: xp.zeros_like(x), same_shape, (None,))
ones_like = defop("ones_like", lambda xp, x: xp.ones_like(x), same_shape, (None,))
cast = defop("cast", lambda xp, x, dtype: x.astype(dtype), lambda x, dtype: (x.shape, np.dtype(dtype)), (None,),
             doc="change dtype (not differentiated)")
