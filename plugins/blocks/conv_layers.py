"""Image layers for `layers` lists: conv2d, conv_transpose2d, pool, upsample, group_norm,
layer_norm, flatten, reshape, dropout.

Activations are NCHW and conv weights OIHW (conv_transpose2d: (C_in, C_out, kH, kW)), with
PyTorch's semantics and key names, e.g.

    encoder = [
      { type = "conv2d", channels = 32, kernel = 3, stride = 2, padding = 1 },   # 1x28x28 -> 32x14x14
      { type = "conv2d", channels = 64, kernel = 3, stride = 2, padding = 1 },   # -> 64x7x7
      { type = "flatten" },
      { units = 256 },
    ]
    decoder = [
      { units = 3136 }, { type = "reshape", shape = [64, 7, 7] },
      { type = "conv_transpose2d", channels = 32, kernel = 4, stride = 2, padding = 1 },  # -> 32x14x14
    ]

Each type's ``infer`` is its shape rule (checked for the whole list before anything is
built, so ``gengraph validate`` reports a misfit with the layer's spec key and both shapes).
"""

from __future__ import annotations

import math

import numpy as np

from gengraph.engine import ops
from gengraph.engine.ops.conv import string_padding
from gengraph.engine.ops.registry import ShapeError
from gengraph.plugins.spec.schema import Field, Table

from gengraph.plugins.blocks.layer_base import (ACTIVATIONS, INITIALIZERS, LAYERS, Layer, LayerShapeError,
                                                fmt_shape, init_weights)

PAIR = (int, list)
PADDING = (int, list, str)  # conv2d also takes PyTorch's "same" / "valid"


def pair(cfg, key, minimum=0) -> tuple[int, int]:
    """An int or [a, b] spec value as a pair of ints >= minimum (LayerShapeError otherwise)."""
    v = cfg[key]
    out = (v, v) if isinstance(v, int) else tuple(v)
    if len(out) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in out):
        raise LayerShapeError(f"{key} must be an integer or a pair [height, width], found {v!r}")
    if min(out) < minimum:
        raise LayerShapeError(f"{key} must be >= {minimum}, found {v!r}")
    return out


def _image_input(shape, what):
    if len(shape) != 3:
        raise LayerShapeError(f"needs an image input (channels x height x width), got {fmt_shape(shape)}"
                              + (" (add a reshape layer, e.g. shape = [C, H, W])" if len(shape) == 1 else ""))
    return shape


def _act_fields(default="relu"):
    return {
        "activation": Field(str, default, "activation function", choices=ACTIVATIONS),
        "bias": Field(bool, True, "add a bias per output channel"),
        "init": Field(str, "auto", "weight initializer (auto: he for ReLU-like, xavier otherwise)",
                      choices=["auto"] + INITIALIZERS.names()),
    }


def _bias_act(x, cfg, params):
    if params.get("b") is not None:
        x = x + params["b"]
    return ACTIVATIONS.get(cfg["activation"])(x)


class Conv2d(Layer):
    help = "2-D convolution (NCHW, weight OIHW): activation(conv2d(x, W) + b)"
    image = True
    schema = Table({
        "channels": Field(int, help="output channels", min=1),
        "kernel": Field(PAIR, 3, "kernel size: k or [kH, kW]"),
        "stride": Field(PAIR, 1, "stride: s or [sH, sW]"),
        "padding": Field(PADDING, 0, 'zero padding on each side: p, [pH, pW], "valid" (none) or "same" '
                                     "(stride 1: output sized like the input; an odd total goes bottom / right)"),
        "dilation": Field(PAIR, 1, "spacing of the kernel taps"),
        "groups": Field(int, 1, "channel groups (in and out channels divisible by it)", min=1),
        **_act_fields(),
    }, help=help)

    def _geometry(self, shape, cfg):
        c, h, w = _image_input(shape, "conv2d")
        k, s = pair(cfg, "kernel", 1), pair(cfg, "stride", 1)
        d, g, o = pair(cfg, "dilation", 1), cfg["groups"], cfg["channels"]
        if isinstance(cfg["padding"], str):
            try:
                p, crop = string_padding(cfg["padding"], k, s, d)
            except ShapeError as exc:
                raise LayerShapeError(str(exc)) from None
        else:
            p, crop = pair(cfg, "padding", 0), (0, 0)
        if c % g or o % g:
            raise LayerShapeError(f"groups = {g} must divide the input's {c} channels and the {o} output "
                                  f"channels (input {fmt_shape(shape)})")
        out = []
        for a, size in enumerate((h, w)):
            span = d[a] * (k[a] - 1) + 1
            if size + 2 * p[a] < span:
                raise LayerShapeError(f"input {fmt_shape(shape)} is smaller than the kernel "
                                      f"{fmt_shape(k)} (dilation {d[a]}, padding {p[a]}) along "
                                      f"{'height' if a == 0 else 'width'}: {size} + 2*{p[a]} < {span}")
            out.append((size + 2 * p[a] - span) // s[a] + 1 - crop[a])
        return (c, k, s, p, d, g, o), (o, out[0], out[1])

    def infer(self, shape, cfg):
        return self._geometry(shape, cfg)[1]

    def create(self, graph, shape, cfg, rng):
        (c, k, s, p, d, g, o), _ = self._geometry(shape, cfg)
        fan_in, fan_out = c // g * k[0] * k[1], o // g * k[0] * k[1]
        W = graph.param("W", init_weights(cfg["init"], cfg["activation"], rng, fan_in, fan_out, (o, c // g) + k,
                                          source=f"its input has {c} channels"))
        b = graph.param("b", np.zeros((o, 1, 1))) if cfg["bias"] else None
        return {"W": W, "b": b}

    def apply(self, graph, x, cfg, params, shape):
        padding = cfg["padding"] if isinstance(cfg["padding"], str) else pair(cfg, "padding")
        y = ops.conv2d(x, params["W"], stride=pair(cfg, "stride", 1), padding=padding,
                       dilation=pair(cfg, "dilation", 1), groups=cfg["groups"])
        return _bias_act(y, cfg, params)


class ConvTranspose2d(Layer):
    help = "2-D transposed convolution (weight (C_in, C_out, kH, kW)): activation(conv_transpose2d(x, W) + b)"
    image = True
    schema = Table({
        "channels": Field(int, help="output channels", min=1),
        "kernel": Field(PAIR, 3, "kernel size: k or [kH, kW]"),
        "stride": Field(PAIR, 1, "stride: s or [sH, sW]"),
        "padding": Field(PAIR, 0, "rows/columns cut from each side of the full output: p or [pH, pW]"),
        "output_padding": Field(PAIR, 0, "extra rows/columns at the bottom/right (< stride)"),
        **_act_fields(),
    }, help=help)

    def _geometry(self, shape, cfg):
        c, h, w = _image_input(shape, "conv_transpose2d")
        k, s = pair(cfg, "kernel", 1), pair(cfg, "stride", 1)
        p, op = pair(cfg, "padding", 0), pair(cfg, "output_padding", 0)
        out = []
        for a, size in enumerate((h, w)):
            if op[a] >= s[a]:
                raise LayerShapeError(f"output_padding {fmt_shape(op)} must be smaller than the stride "
                                      f"{fmt_shape(s)} (input {fmt_shape(shape)})")
            n = (size - 1) * s[a] - 2 * p[a] + k[a] + op[a]
            if n < 1:
                raise LayerShapeError(f"padding {fmt_shape(p)} leaves no output from input {fmt_shape(shape)} "
                                      f"(kernel {fmt_shape(k)}, stride {fmt_shape(s)})")
            out.append(n)
        return (c, k, s, p, op), (cfg["channels"], out[0], out[1])

    def infer(self, shape, cfg):
        return self._geometry(shape, cfg)[1]

    def create(self, graph, shape, cfg, rng):
        (c, k, s, p, op), _ = self._geometry(shape, cfg)
        o = cfg["channels"]
        fan_in = max(1, c * k[0] * k[1] // (s[0] * s[1]))  # inputs reaching one output pixel, on average
        W = graph.param("W", init_weights(cfg["init"], cfg["activation"], rng, fan_in, o * k[0] * k[1], (c, o) + k,
                                          source=f"its input has {c} channels"))
        b = graph.param("b", np.zeros((o, 1, 1))) if cfg["bias"] else None
        return {"W": W, "b": b}

    def apply(self, graph, x, cfg, params, shape):
        y = ops.conv_transpose2d(x, params["W"], stride=pair(cfg, "stride", 1), padding=pair(cfg, "padding"),
                                 output_padding=pair(cfg, "output_padding"))
        return _bias_act(y, cfg, params)


class Pool(Layer):
    help = "average or max pooling over kH x kW windows (no padding)"
    image = True
    schema = Table({
        "mode": Field(str, "avg", "avg or max", choices=["avg", "max"]),
        "kernel": Field(PAIR, 2, "window size: k or [kH, kW]"),
        "stride": Field(PAIR, None, "stride (default: the kernel size)"),
    }, help=help)

    def _ks(self, cfg):
        k = pair(cfg, "kernel", 1)
        return k, (k if cfg.get("stride") is None else pair(cfg, "stride", 1))

    def infer(self, shape, cfg):
        c, h, w = _image_input(shape, "pool")
        k, s = self._ks(cfg)
        if h < k[0] or w < k[1]:
            raise LayerShapeError(f"window {fmt_shape(k)} is larger than the input {fmt_shape(shape)}")
        return (c, (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1)

    def apply(self, graph, x, cfg, params, shape):
        k, s = self._ks(cfg)
        return (ops.max_pool2d if cfg["mode"] == "max" else ops.avg_pool2d)(x, k, s)


class Upsample(Layer):
    help = "nearest-neighbour upsampling: each pixel repeated scale x scale times"
    image = True
    schema = Table({"scale": Field(PAIR, 2, "integer factor: s or [sH, sW]")}, help=help)

    def infer(self, shape, cfg):
        c, h, w = _image_input(shape, "upsample")
        s = pair(cfg, "scale", 1)
        return (c, h * s[0], w * s[1])

    def apply(self, graph, x, cfg, params, shape):
        return ops.upsample_nearest2d(x, pair(cfg, "scale", 1))


def _affine(graph, shape, per_channel: bool):
    """Scale (ones) and shift (zeros), per channel (C, 1, 1, ...) or per element of `shape`."""
    s = (shape[0],) + (1,) * (len(shape) - 1) if per_channel else tuple(shape)
    return {"weight": graph.param("weight", np.ones(s)), "bias": graph.param("bias", np.zeros(s))}


class GroupNorm(Layer):
    help = "group normalisation (channels split into groups; per-channel scale and shift), then activation"
    per_example = True
    schema = Table({
        "groups": Field(int, 8, "channel groups (must divide the channels)", min=1),
        "eps": Field(float, 1e-5, "added to the variance", min=0.0),
        "affine": Field(bool, True, "learn a per-channel scale and shift"),
        "activation": Field(str, "identity", "activation after the normalisation", choices=ACTIVATIONS),
    }, help=help)

    def infer(self, shape, cfg):
        if shape[0] % cfg["groups"]:
            raise LayerShapeError(f"groups = {cfg['groups']} does not divide the {shape[0]} channels of the "
                                  f"input {fmt_shape(shape)}")
        if shape[0] // cfg["groups"] * int(np.prod(shape[1:], dtype=np.int64)) == 1:
            raise LayerShapeError(f"groups = {cfg['groups']} over the input {fmt_shape(shape)} puts one value in "
                                  "each group, which the normalisation maps to 0 (nothing passes): use fewer "
                                  "groups, or normalise before the image shrinks to 1x1")
        return tuple(shape)

    def create(self, graph, shape, cfg, rng):
        return _affine(graph, shape, True) if cfg["affine"] else {}

    def apply(self, graph, x, cfg, params, shape):
        if x.ndim == 2 and len(shape) > 1:
            x = ops.reshape(x, (None,) + tuple(shape))
        y = ops.group_norm(x, cfg["groups"], cfg["eps"])
        if params:
            y = y * params["weight"] + params["bias"]
        return ACTIVATIONS.get(cfg["activation"])(y)


class LayerNorm(Layer):
    help = "layer normalisation over all of an example's values (elementwise scale and shift), then activation"
    per_example = True
    schema = Table({
        "eps": Field(float, 1e-5, "added to the variance", min=0.0),
        "affine": Field(bool, True, "learn an elementwise scale and shift"),
        "activation": Field(str, "identity", "activation after the normalisation", choices=ACTIVATIONS),
    }, help=help)

    def create(self, graph, shape, cfg, rng):
        return _affine(graph, shape, False) if cfg["affine"] else {}

    def apply(self, graph, x, cfg, params, shape):
        if x.ndim == 2 and len(shape) > 1:
            x = ops.reshape(x, (None,) + tuple(shape))
        y = ops.layer_norm(x, cfg["eps"])
        if params:
            y = y * params["weight"] + params["bias"]
        return ACTIVATIONS.get(cfg["activation"])(y)


class Flatten(Layer):
    help = "images (C, H, W) -> rows of C*H*W values"
    schema = Table({}, help=help)

    def infer(self, shape, cfg):
        return (int(np.prod(shape, dtype=np.int64)),)

    def apply(self, graph, x, cfg, params, shape):
        return ops.flatten(x) if len(shape) > 1 else x


class Reshape(Layer):
    help = "rows -> images of `shape`, e.g. shape = [16, 7, 7] (the number of values must match)"
    schema = Table({"shape": Field(list, help="the new shape without the batch axis, e.g. [16, 7, 7]",
                                   item=int, min=1)}, help=help)

    def infer(self, shape, cfg):
        new = tuple(cfg["shape"])
        if not new:
            raise LayerShapeError("shape must not be empty")
        n_in, n_out = math.prod(shape), math.prod(new)
        if n_in != n_out:
            raise LayerShapeError(f"input {fmt_shape(shape)} ({n_in} values) does not fit shape "
                                  f"{fmt_shape(new)} ({n_out} values)")
        return new

    def apply(self, graph, x, cfg, params, shape):
        return ops.reshape(x, (None,) + tuple(cfg["shape"]))


class Dropout(Layer):
    help = "inverted dropout with probability p in training programs; the identity when evaluating or sampling"
    schema = Table({"p": Field(float, 0.1, "probability of zeroing a value", min=0.0, max=0.99)}, help=help)

    def apply(self, graph, x, cfg, params, shape):
        return ops.dropout(x, cfg["p"])


for _name, _layer in {"conv2d": Conv2d(), "conv_transpose2d": ConvTranspose2d(), "pool": Pool(),
                      "upsample": Upsample(), "group_norm": GroupNorm(), "layer_norm": LayerNorm(),
                      "flatten": Flatten(), "reshape": Reshape(), "dropout": Dropout()}.items():
    LAYERS.register(_name, _layer)
