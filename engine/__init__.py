"""gengraph's engine: graph IR, ops, symbolic gradients, compiler, backends, optimizers.

The engine imports nothing from plugins or cli. ``compile`` is the public name of
`compile_graph` (kept for the README's ``from gengraph.engine import compile``).
"""

from . import ops, optimizers, schedules  # noqa: F401
from .autodiff import GradientError, grad  # noqa: F401
from .backend import BackendError, cupy_available, get_backend, to_numpy  # noqa: F401
from .compiler import compile_graph  # noqa: F401
from .errors import UserError  # noqa: F401
from .expr import ExprError  # noqa: F401
from .gradcheck import (GradCheckReport, GradCheckRow, central_differences, check_grads,  # noqa: F401
                        check_loss_grads, value_and_grad)
from .graph import Graph, Node, topo_order  # noqa: F401
from .ops import ShapeError  # noqa: F401
from .optimizers import make_optimizer  # noqa: F401
from .program import NonFiniteError, Program  # noqa: F401
from .schedules import make_schedule  # noqa: F401

compile = compile_graph  # noqa: A001 -- the documented public alias
