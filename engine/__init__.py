"""gengraph's engine: graph IR, ops, symbolic gradients, compiler, backends, optimizers.

The engine imports nothing from plugins or cli.
"""

from . import ops  # noqa: F401
from .autodiff import grad  # noqa: F401
from .backend import cupy_available, get_backend, to_numpy  # noqa: F401
from .compiler import compile  # noqa: F401
from .graph import Graph, Node, topo_order  # noqa: F401
from .program import NonFiniteError, Program  # noqa: F401
from .expr import ExprError  # noqa: F401,E402
from .gradcheck import GradCheckReport, central_differences, check_grads, value_and_grad  # noqa: F401,E402
from . import optimizers, schedules  # noqa: F401,E402
from .optimizers import make_optimizer  # noqa: F401,E402
from .schedules import make_schedule  # noqa: F401,E402
