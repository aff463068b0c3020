"""Shared building blocks: activations, initializers and layers, each a registry.

Plugins build networks from declared layer lists, e.g.
``layers = [{units = 128, activation = "relu"}, {units = 10, activation = "identity"}]``.
Parameters are named by scope (``encoder/dense1/W``) so graphs and checkpoints read well.
"""

from __future__ import annotations


import math

import numpy as np

from gengraph.engine import ops

from gengraph.plugins.spec.schema import Dispatch, Field, Table
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.blocks import seeds
from gengraph.plugins.blocks.layer_base import (ACTIVATIONS, INITIALIZERS, LAYERS, RELU_LIKE, Layer,  # noqa: F401
                                                LayerShapeError, fmt_shape, init_weights)
from gengraph.plugins.blocks import conv_layers  # noqa: F401  (registers the image layer types)


class Dense(Layer):
    help = "fully connected layer: activation(x @ W + b); an image input is flattened first"
    schema = Table({
        "units": Field(int, help="number of output units", min=1),
        "activation": Field(str, "relu", "activation function", choices=ACTIVATIONS),
        "init": Field(str, "auto", "weight initializer (auto: he for ReLU-like, xavier otherwise)",
                      choices=["auto"] + INITIALIZERS.names()),
        "bias": Field(bool, True, "add a bias vector"),
    }, help=help)

    def infer(self, shape, cfg):
        return (cfg["units"],)

    def create(self, graph, shape, cfg, rng):
        units, act = cfg["units"], cfg.get("activation", "relu")
        fan_in = int(np.prod(shape, dtype=np.int64))
        W = graph.param("W", init_weights(cfg.get("init", "auto"), act, rng, fan_in, units,
                                          source=f"its input has {fan_in} features"))
        b = graph.param("b", np.zeros(units)) if cfg.get("bias", True) else None
        return {"W": W, "b": b}

    def apply(self, graph, x, cfg, params, shape):
        if len(shape) > 1 and x.ndim > 2:  # an image (batch, C, H, W); (samples, batch, features) stays
            x = ops.flatten(x)
        z = x @ params["W"]
        if params.get("b") is not None:
            z = z + params["b"]
        return ACTIVATIONS.get(cfg.get("activation", "relu"))(z)


LAYERS.register("dense", Dense())


class _LayerDispatch(Dispatch):
    """``Dispatch("type", LAYERS)`` with dense as the default type; `fields` (dense's keys plus
    type) lets schema listings describe a layer list like a plain table."""

    @property
    def fields(self):
        return {"type": Field(str, "dense", "layer type: " + ", ".join(LAYERS.names()), choices=LAYERS),
                **LAYERS.get("dense").schema.fields}


def layer_schema() -> Dispatch:
    """Schema of one entry of a `layers` list: `type` (default dense) chooses the layer's keys."""
    return _LayerDispatch("type", LAYERS, default={"type": "dense"},
                          help="one layer: type = " + " | ".join(LAYERS.names()))


MAX_VALUES_PER_EXAMPLE = 1 << 31  # a layer output past this cannot be indexed by NumPy's int32 BLAS paths


def infer_shapes(in_shape, layers: list[dict], origin: str | None, scope: str = "") -> list[tuple]:
    """Shapes after each layer (index 0: the input), checked before anything is built.

    A layer that does not fit is a ModelConfigError at the spec key of the layer
    (``model.layers[2]``) whose message names the input shape and what the layer needs.
    """
    shapes = [tuple(in_shape)]
    for i, cfg in enumerate(layers):
        kind = cfg.get("type", "dense")
        try:
            shapes.append(tuple(int(d) for d in LAYERS.get(kind).infer(shapes[-1], cfg)))
            if math.prod(shapes[-1]) > MAX_VALUES_PER_EXAMPLE:  # padding = 2^63 overflowed later sizes
                raise LayerShapeError(f"its output {fmt_shape(shapes[-1])} has {math.prod(shapes[-1]):,} values per "
                                      f"example, more than {MAX_VALUES_PER_EXAMPLE:,} (from input "
                                      f"{fmt_shape(shapes[-2])})")
        except LayerShapeError as exc:
            raise ModelConfigError(f"{origin or scope}[{i}]", f"{kind} layer: {exc}") from None
    return shapes


def as_image(x, shape):
    """x reshaped to (batch,) + shape when it arrives as rows of prod(shape) features."""
    if x.ndim != 1 + len(shape):
        x = ops.reshape(x, (None,) + tuple(shape))
    return x


def build_stack(graph, x, layers: list[dict], rng, scope: str, origin: str | None = None, image_shape=None):
    """Apply declared layers in order under `scope`; returns (output, params created).

    `origin` is the spec key of the layer list (e.g. "model.layers"): each layer's nodes
    remember "model.layers[i]", so graphs and error messages point back to the spec.
    `image_shape` (C, H, W): x holds rows of C*H*W pixels that image layers see as images.
    Shapes are checked for the whole list before any node is built.
    """
    before = {n.id for n in graph.params()}
    in_shape = tuple(image_shape) if image_shape is not None else tuple(x.shape[1:])
    shapes = infer_shapes(in_shape, layers, origin, scope)
    h = x
    with graph.scope(scope):
        for i, cfg in enumerate(layers):
            kind = cfg.get("type", "dense")
            layer = LAYERS.get(kind)
            with graph.scope(f"{kind}{i}", origin=f"{origin}[{i}]" if origin else None):
                if layer.image:
                    h = as_image(h, shapes[i])
                key = _size_key(f"{origin}[{i}]", cfg) if origin else "model"
                h = layer.apply(graph, h, cfg, create_named(layer, graph, shapes[i], cfg, rng, key), shapes[i])
    return h, [n for n in graph.params() if n.id not in before]


def _size_key(where: str, cfg: dict) -> str:
    """The spec key of the size that sets a layer's weights (units, channels), else the layer's."""
    size = next((k for k in ("units", "channels") if k in cfg), None)
    return f"{where}.{size}" if size else where


def create_named(layer, graph, shape, cfg, rng, key: str) -> dict:
    """layer.create; a parameter too large for memory (init_weights checks before allocating:
    units = 10**9 is a message, not a traceback) is reported at `key`, the layer's size key."""
    try:
        return layer.create(graph, shape, cfg, rng)
    except ModelConfigError as exc:
        if exc.path != "model":  # the layer named the key itself
            raise
        raise ModelConfigError(key, exc.message) from None


class Network:
    """Layers declared as a list, created once and applicable to any input.

    ``build_stack`` creates new parameters at each call; a VAE needs the decoder on the
    posterior samples, on prior samples and on a latent grid with the same weights, an EBM
    its energy on data, on Langevin samples and on a plotting grid. Parameters are named
    ``scope/{type}{i}/W`` (the last layer of a head: ``scope/out/W``); `origin` is the spec
    key of the layer list, for error messages. The input is rows of `in_dim` features,
    seen as images of `image_shape` (C, H, W) by image layers (conv2d, pool, ...); the
    output is ``out_shape``, flattened to rows when ``flat_output`` (the default).
    """
    def __init__(self, graph, in_dim: int, layers: list[dict], rng, scope: str, out: dict | None = None,
                 origin: str | None = None, image_shape=None, flat_output: bool = True):
        self.graph, self.scope, self.in_dim, self.flat_output = graph, scope, in_dim, flat_output
        in_shape = tuple(image_shape) if image_shape is not None else (in_dim,)
        cfgs = list(layers) + ([out] if out else [])
        self.shapes = infer_shapes(in_shape, cfgs, origin, scope)
        self.layers = []  # (name, W, b or None, activation function, layer type, cfg, params, in shape)
        self._origins = []  # spec key of each layer (model.encoder[i]), for graphs and messages
        with graph.scope(scope):
            for i, cfg in enumerate(cfgs):
                kind = cfg.get("type", "dense")
                name = "out" if out and i == len(cfgs) - 1 else f"{kind}{i}"
                layer = LAYERS.get(kind)
                where = (f"{origin}[{i}]" if i < len(layers) else origin) if origin else None
                key = _size_key(where, cfg) if where and name != "out" else (origin or scope)
                with graph.scope(name, origin=where):
                    p = create_named(layer, graph, self.shapes[i], cfg, rng, key)
                act = ACTIVATIONS.get(cfg["activation"]) if "activation" in cfg else None
                self.layers.append((name, p.get("W"), p.get("b"), act, layer, cfg, p, self.shapes[i]))
                self._origins.append(where)
        self.out_shape = self.shapes[-1]
        self.out_dim = int(np.prod(self.out_shape, dtype=np.int64))

    @property
    def params(self):
        return [p for layer in self.layers for p in layer[6].values() if p is not None]

    def __call__(self, x):
        h, lead, s0 = x, None, tuple(self.shapes[0])
        rank = len(s0) if tuple(x.shape[-len(s0):]) == s0 else 1  # images or rows of features
        if x.ndim > 1 + rank and (any(len(s) > 1 for s in self.shapes)
                                  or any(entry[4].per_example for entry in self.layers)):
            # e.g. (samples, batch, features) into image or normalisation layers: fold the leading axes
            # into one batch axis
            lead = tuple(x.shape[:x.ndim - rank])
            h = ops.reshape(x, (None,) + s0)
        with self.graph.scope(self.scope):
            for (name, _, _, _, layer, cfg, p, shape), where in zip(self.layers, self._origins):
                with self.graph.scope(name, origin=where):
                    if layer.image:
                        h = as_image(h, shape)
                    h = layer.apply(self.graph, h, cfg, p, shape)
        if self.flat_output and len(self.out_shape) > 1:
            h = ops.flatten(h)
        if lead is not None:
            h = ops.reshape(h, lead + tuple(h.shape[1:]))
        return h


def init_rng(seed: int) -> np.random.Generator:
    """The parameter-initialisation stream, separate from data and noise streams."""
    return seeds.rng(seed, "init")
