"""What every layer type shares: the registries of layers, activations and initializers,
weight initialisation and the `Layer` base class (shape rule, parameters, graph code).
Dense layers live in layers.py, image layers in conv_layers.py."""

from __future__ import annotations

import math

import numpy as np

from gengraph.engine import ops
from gengraph.plugins.blocks.memory import check_param
from gengraph.plugins.registry import PLUGIN_GROUP, Registry
from gengraph.plugins.spec.schema import Table

ACTIVATIONS = Registry("activation", PLUGIN_GROUP, part=True)
INITIALIZERS = Registry("initializer", PLUGIN_GROUP, part=True)
LAYERS = Registry("layer", PLUGIN_GROUP, part=True)

for _name, _fn in {
    "identity": lambda x: x, "linear": lambda x: x, "relu": ops.relu, "tanh": ops.tanh, "sigmoid": ops.sigmoid,
    "leaky_relu": lambda x: ops.leaky_relu(x, slope=0.01), "elu": lambda x: ops.elu(x, alpha=1.0),
    "softplus": ops.softplus, "gelu": ops.gelu, "silu": ops.silu,
}.items():
    ACTIVATIONS.register(_name, _fn)

RELU_LIKE = {"relu", "leaky_relu", "elu", "gelu", "silu", "softplus"}


def _uniform(limit):
    return lambda rng, shape: rng.uniform(-limit, limit, size=shape)


INITIALIZERS.register("xavier", lambda rng, fan_in, fan_out, shape: _uniform(math.sqrt(6 / (fan_in + fan_out)))(rng, shape))
INITIALIZERS.register("glorot", INITIALIZERS.get("xavier"))
INITIALIZERS.register("xavier_normal", lambda rng, fan_in, fan_out, shape: rng.normal(0, math.sqrt(2 / (fan_in + fan_out)), shape))
INITIALIZERS.register("he", lambda rng, fan_in, fan_out, shape: rng.normal(0, math.sqrt(2 / fan_in), shape))
INITIALIZERS.register("he_uniform", lambda rng, fan_in, fan_out, shape: _uniform(math.sqrt(6 / fan_in))(rng, shape))
INITIALIZERS.register("normal", lambda rng, fan_in, fan_out, shape: rng.normal(0, 0.01, shape))
INITIALIZERS.register("zeros", lambda rng, fan_in, fan_out, shape: np.zeros(shape))


def init_weights(kind: str, activation: str, rng, fan_in: int, fan_out: int, shape=None, path: str = "model",
                 source: str = ""):
    """Initial weights of `shape` (default (fan_in, fan_out)); kind "auto": he for ReLU-like, else xavier.
    `path` names the spec key of the size in the message when they cannot fit in memory, `source`
    says where the part of the size that is not this layer's own comes from (its input's size)."""
    check_param(tuple(shape) if shape is not None else (fan_in, fan_out), path, source)  # before allocating
    if kind == "auto":
        kind = "he" if activation in RELU_LIKE else "xavier"
    return INITIALIZERS.get(kind)(rng, fan_in, fan_out, (fan_in, fan_out) if shape is None else tuple(shape))


class LayerShapeError(ValueError):
    """A layer that does not fit its input; the message names both shapes (the stack adds the spec key)."""


def fmt_shape(shape) -> str:
    return "x".join(str(s) for s in shape)


class Layer:
    """One layer type of a `layers` list: shape rule, parameters, graph code.

    ``infer(shape, cfg)`` maps the input shape (without the batch axis) to the output
    shape or raises LayerShapeError; ``create(graph, shape, cfg, rng)`` makes the
    parameters (a dict, in the caller's scope); ``apply(graph, x, cfg, params, shape)``
    builds the output node from x (batch first). ``image`` layers take (C, H, W) inputs;
    a stack whose input is rows of C*H*W features reshapes them on the way in.
    """

    help = ""
    schema = Table({})
    image = False
    # statistics over each example's own values (layer_norm, group_norm): its input has one batch
    # axis, the leading axes of (samples, batch, features) folded into it (else the batch is mixed)
    per_example = False

    def infer(self, shape, cfg):
        return tuple(shape)

    def create(self, graph, shape, cfg, rng) -> dict:
        return {}

    def apply(self, graph, x, cfg, params, shape):
        raise NotImplementedError

    def build(self, graph, x, cfg, rng, name=None):
        """Create and apply in one go (x's shape without the batch axis is the input shape)."""
        shape = tuple(x.shape[1:])
        return self.apply(graph, x, cfg, self.create(graph, shape, cfg, rng), shape)


