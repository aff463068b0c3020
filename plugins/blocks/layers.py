"""Shared building blocks: activations, initializers and layers, each a registry.

Plugins build networks from declared layer lists, e.g.
``layers = [{units = 128, activation = "relu"}, {units = 10, activation = "identity"}]``.
Parameters are named by scope (``encoder/dense1/W``) so graphs and checkpoints read well.
"""

from __future__ import annotations

import math

import numpy as np

from gengraph.engine import ops

from gengraph.plugins.registry import Registry
from gengraph.plugins.spec.schema import Field, Table
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.blocks import seeds
from gengraph.plugins.blocks.memory import check_param

ACTIVATIONS = Registry("activation")
INITIALIZERS = Registry("initializer")
LAYERS = Registry("layer")

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


def init_weights(kind: str, activation: str, rng, fan_in: int, fan_out: int, path: str = "model"):
    check_param((fan_in, fan_out), path)  # before allocating: units = 10**9 is a message, not a traceback
    if kind == "auto":
        kind = "he" if activation in RELU_LIKE else "xavier"
    return INITIALIZERS.get(kind)(rng, fan_in, fan_out, (fan_in, fan_out))


class Dense:
    help = "fully connected layer: activation(x @ W + b)"
    schema = Table({
        "units": Field(int, help="number of output units", min=1),
        "activation": Field(str, "relu", "activation function", choices=None),
        "init": Field(str, "auto", "weight initializer (auto: he for ReLU-like, xavier otherwise)"),
        "bias": Field(bool, True, "add a bias vector"),
    })

    def build(self, graph, x, cfg, rng, name=None, path="model"):
        """Nodes are created in the caller's scope (build_stack opens one per layer); `path` is
        the spec key of the layer's size, for messages."""
        units, act = cfg["units"], cfg.get("activation", "relu")
        fan_in = x.shape[-1]
        W = graph.param("W", init_weights(cfg.get("init", "auto"), act, rng, fan_in, units, path))
        z = x @ W
        if cfg.get("bias", True):
            z = z + graph.param("b", np.zeros(units))
        return ACTIVATIONS.get(act)(z)


LAYERS.register("dense", Dense())


def layer_schema() -> Table:
    """Schema of one entry of a `layers` list (dense is the only layer type so far)."""
    fields = dict(Dense.schema.fields)
    fields["type"] = Field(str, "dense", "layer type", choices=LAYERS.names())
    fields["activation"] = Field(str, "relu", "activation function", choices=ACTIVATIONS.names())
    fields["init"] = Field(str, "auto", "weight initializer", choices=["auto"] + INITIALIZERS.names())
    return Table(fields)


def build_stack(graph, x, layers: list[dict], rng, scope: str, origin: str | None = None):
    """Apply declared layers in order under `scope`; returns (output, params created).

    `origin` is the spec key of the layer list (e.g. "model.layers"): each layer's nodes
    remember "model.layers[i]", so graphs and error messages point back to the spec.
    """
    before = {n.id for n in graph.params()}
    h = x
    with graph.scope(scope):
        for i, cfg in enumerate(layers):
            kind = cfg.get("type", "dense")
            with graph.scope(f"{kind}{i}", origin=f"{origin}[{i}]" if origin else None):
                layer = LAYERS.get(kind)
                if isinstance(layer, Dense):
                    h = layer.build(graph, h, cfg, rng, None, path=f"{origin}[{i}].units" if origin else "model")
                else:
                    h = layer.build(graph, h, cfg, rng, None)
    return h, [n for n in graph.params() if n.id not in before]


class Network:
    """Dense layers declared as a list, created once and applicable to any input.

    ``build_stack`` creates new parameters at each call; a VAE needs the decoder on the
    posterior samples, on prior samples and on a latent grid with the same weights, an EBM
    its energy on data, on Langevin samples and on a plotting grid. Parameters are named
    ``scope/dense{i}/W`` (the last layer of a head: ``scope/out/W``); `origin` is the spec
    key of the layer list, for error messages.
    """
    def __init__(self, graph, in_dim: int, layers: list[dict], rng, scope: str, out: dict | None = None,
                 origin: str | None = None):
        self.graph, self.scope, self.in_dim = graph, scope, in_dim
        self.layers = []  # (name, W, b or None, activation function)
        dim = in_dim
        specs = [(f"dense{i}", cfg) for i, cfg in enumerate(layers)] + ([("out", out)] if out else [])
        with graph.scope(scope):
            for i, (name, cfg) in enumerate(specs):
                kind = cfg.get("type", "dense")
                if kind != "dense":
                    raise ModelConfigError(f"{origin or scope}[{i}].type", f'layer type "{kind}" is not supported '
                                                                             "here (dense layers only)")
                units, act = cfg["units"], cfg.get("activation", "relu")
                with graph.scope(name):
                    where = f"{origin}[{i}].units" if origin and name != "out" else origin or scope
                    W = graph.param("W", init_weights(cfg.get("init", "auto"), act, rng, dim, units, where))
                    b = graph.param("b", np.zeros(units)) if cfg.get("bias", True) else None
                self.layers.append((name, W, b, ACTIVATIONS.get(act)))
                dim = units
        self.out_dim = dim

    @property
    def params(self):
        return [p for _, W, b, _ in self.layers for p in (W, b) if p is not None]

    def __call__(self, x):
        h = x
        with self.graph.scope(self.scope):
            for name, W, b, act in self.layers:
                with self.graph.scope(name):
                    z = h @ W
                    h = act(z + b if b is not None else z)
        return h


def init_rng(seed: int) -> np.random.Generator:
    """The parameter-initialisation stream, separate from data and noise streams."""
    return seeds.rng(seed, "init")
