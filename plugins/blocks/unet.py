"""A U-Net noise-prediction network for image diffusion (Ho et al. 2020, smaller).

    [model.network]
    kind = "unet"
    channels = [32, 64]     # channels per resolution level (the image is halved between levels)
    blocks = 1              # residual blocks per level on the way down (one more on the way up)
    attention = true        # single-head self-attention at the lowest resolution
    groups = 8              # group-norm groups
    downsample = "conv"     # stride-2 3x3 conv, or "avg_pool"

Layout, for an input x of (C, H, W) and levels l = 0..L-1 with channels c_l:

* time embedding: sinusoidal emb(t) -> dense(4 c_0, SiLU) -> dense(4 c_0): temb;
* stem: 3x3 conv C -> c_0;
* down, per level: `blocks` residual blocks (skips kept), then (not at the last level) a
  downsampling to half the height and width (skip kept);
* middle: residual block, self-attention (optional), residual block;
* up, per level from the bottom: `blocks` + 1 residual blocks, each on [h, skip] concatenated
  along the channels, then (not at level 0) nearest upsampling x2 and a 3x3 conv;
* out: group norm, SiLU, 3x3 conv to C channels (initialised at zero).

``in_channels`` / ``out_channels`` (default C) let a caller feed more channels per pixel than the
image has (the continuous-time VDM adds Fourier features of x_t) and read more out (its
per-pixel logits over the grey levels); the height and width are the image's.

Residual block: h = conv3x3(SiLU(GN(x))) + dense(SiLU(temb)) per channel; h = conv3x3(SiLU(GN(h)));
out = h + x (a 1x1 conv on x when the channels change). Attention: q, k, v = 1x1 projections of
GN(x) as (HW, c) matrices; out = x + proj(softmax(q k^T / sqrt(c)) v).

The network takes rows of C*H*W values and returns rows (the diffusion model's D-vectors).
"""

from __future__ import annotations

import math

import numpy as np

from gengraph.engine import ops
from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.registry import PLUGIN_GROUP, Registry
from gengraph.plugins.spec.schema import Field, Table

from .layers import fmt_shape


def unet_schema() -> Table:
    return Table({
        "channels": Field(list, [32, 64], "channels per resolution level (height and width halve between "
                          "levels)", item=int, min=1),
        "blocks": Field(int, 1, "residual blocks per level (one more on the way up)", min=1),
        "attention": Field(bool, True, "single-head self-attention at the lowest resolution"),
        "groups": Field(int, 8, "group-norm groups (must divide every level's channels)", min=1),
        "downsample": Field(str, "conv", 'downsampling: "conv" (3x3, stride 2) or "avg_pool" (2x2)',
                            choices=["conv", "avg_pool"]),
        "time_dim": Field(int, 0, "width of the time-embedding MLP (0: 4 x channels[0])", min=0),
        "dropout": Field(float, 0.0, "dropout inside residual blocks (training only)", min=0.0, max=0.9),
    }, help="the noise-prediction network for image data")


class UNetConfigError(ValueError):
    """(key, message) of a U-Net setting that does not fit the data; `also`: the other keys the
    check is about."""

    def __init__(self, key, message, also=()):
        self.key, self.message, self.also = key, message, tuple(also)
        super().__init__(f"{key}: {message}")

    def at(self, table: str):
        """As the ModelConfigError of the spec table `table` the network's keys are under."""
        return ModelConfigError(f"{table}.{self.key}", self.message, tuple(f"{table}.{k}" for k in self.also))


def image_shape_of(data) -> tuple:
    """The data's (C, H, W), or a UNetConfigError on "kind" when the rows are not images."""
    shape = data.image_shape
    if shape is None or len(shape) != 3 or int(np.prod(shape)) != data.n_features:
        raise UNetConfigError("kind", f'"unet" needs image data (C, H, W); the data are rows of '
                                      f"{data.n_features} features")
    return tuple(int(v) for v in shape)


def check_config(image_shape, cfg) -> None:
    chans = cfg["channels"]
    if not chans:
        raise UNetConfigError("channels", "declare at least one level")
    bad = [c for c in chans if c % cfg["groups"]]
    if bad:
        raise UNetConfigError("groups", f"groups = {cfg['groups']} does not divide the channels {bad}",
                              also=("channels",))
    c, h, w = image_shape
    f = 2 ** (len(chans) - 1)
    if h % f or w % f:
        raise UNetConfigError("channels", f"{len(chans)} levels halve the image {len(chans) - 1} times: the "
                              f"data's {fmt_shape(image_shape)} needs height and width divisible by {f}")
    # the lowest level's group norms see its own channels and, in its first block, the level above's
    lowest = {chans[-1]} | ({chans[-2]} if len(chans) > 1 else set())
    if h // f * (w // f) == 1 and cfg["groups"] in lowest:
        raise UNetConfigError("groups", f"the lowest of the {len(chans)} levels is 1x1 on the data's "
                              f"{fmt_shape(image_shape)}: a group norm there over {cfg['groups']} channels in groups "
                              f"= {cfg['groups']} sees one value per group and outputs 0 (that norm passes nothing): "
                              "use fewer groups or fewer levels", also=("channels",))


class UNet:
    """Parameters created at construction; ``unet(x_rows, temb_input)`` builds the output rows."""

    def __init__(self, graph, image_shape, emb_dim: int, cfg: dict, rng, scope: str = "denoiser",
                 in_channels: int | None = None, out_channels: int | None = None):
        check_config(image_shape, cfg)
        c_in = int(in_channels or image_shape[0])
        c_out = int(out_channels or image_shape[0])
        self.graph, self.cfg, self.rng, self.scope = graph, cfg, rng, scope
        self.shape = (c_in,) + tuple(image_shape[1:])  # what the input rows are reshaped to
        self.out_channels = c_out
        self.params = []
        chans, nb = cfg["channels"], cfg["blocks"]
        tdim = cfg["time_dim"] or 4 * chans[0]
        self.tdim = tdim
        with graph.scope(scope):
            with graph.scope("time_mlp"):
                self.t1 = self._dense("dense0", emb_dim, tdim)
                self.t2 = self._dense("dense1", tdim, tdim)
            self.stem = self._conv("stem", c_in, chans[0], 3)
            self.down, skips, ch = [], [chans[0]], chans[0]
            for lv, c in enumerate(chans):
                level = {"blocks": [], "down": None}
                for b in range(nb):
                    level["blocks"].append(self._res(f"down{lv}/res{b}", ch, c))
                    ch = c
                    skips.append(ch)
                if lv < len(chans) - 1:
                    if cfg["downsample"] == "conv":
                        level["down"] = self._conv(f"down{lv}/downsample", ch, ch, 3)
                    skips.append(ch)
                self.down.append(level)
            self.mid1 = self._res("mid/res0", ch, ch)
            self.attn = self._attention("mid/attention", ch) if cfg["attention"] else None
            self.mid2 = self._res("mid/res1", ch, ch)
            self.up = []
            for lv in reversed(range(len(chans))):
                c = chans[lv]
                level = {"level": lv, "blocks": [], "up": None}
                for b in range(nb + 1):
                    level["blocks"].append(self._res(f"up{lv}/res{b}", ch + skips.pop(), c))
                    ch = c
                if lv > 0:
                    level["up"] = self._conv(f"up{lv}/upsample", ch, ch, 3)
                self.up.append(level)
            with graph.scope("out"):
                self.out_norm = self._norm("norm", ch)
            self.out_conv = self._conv("out", ch, c_out, 3, zero=True)

    # --- parameters ------------------------------------------------------------------------
    def _param(self, name, value):
        p = self.graph.param(name, value)
        self.params.append(p)
        return p

    def _dense(self, name, fan_in, fan_out):
        with self.graph.scope(name):
            W = self._param("W", self.rng.uniform(-1, 1, (fan_in, fan_out)) * math.sqrt(6 / (fan_in + fan_out)))
            b = self._param("b", np.zeros(fan_out))
        return W, b

    def _conv(self, name, c_in, c_out, k, zero=False):
        with self.graph.scope(name):
            fan_in = c_in * k * k
            W = np.zeros((c_out, c_in, k, k)) if zero else \
                self.rng.uniform(-1, 1, (c_out, c_in, k, k)) * math.sqrt(3 / fan_in)  # PyTorch's default scale
            W = self._param("W", W)
            b = self._param("b", np.zeros((c_out, 1, 1)))
        return W, b, k

    def _norm(self, name, c):
        with self.graph.scope(name):
            return self._param("weight", np.ones((c, 1, 1))), self._param("bias", np.zeros((c, 1, 1)))

    def _res(self, name, c_in, c_out):
        with self.graph.scope(name):
            return {"norm1": self._norm("norm1", c_in), "conv1": self._conv("conv1", c_in, c_out, 3),
                    "temb": self._dense("temb", self.tdim, c_out), "norm2": self._norm("norm2", c_out),
                    "conv2": self._conv("conv2", c_out, c_out, 3, zero=False),
                    "skip": self._conv("skip", c_in, c_out, 1) if c_in != c_out else None}

    def _attention(self, name, c):
        with self.graph.scope(name):
            return {"norm": self._norm("norm", c), "qkv": self._dense("qkv", c, 3 * c),
                    "proj": self._dense("proj", c, c)}

    # --- graph code ------------------------------------------------------------------------
    def _gn(self, x, p):
        return ops.group_norm(x, self.cfg["groups"], 1e-5) * p[0] + p[1]

    @staticmethod
    def _apply_conv(x, p, stride=1):
        W, b, k = p
        return ops.conv2d(x, W, stride=stride, padding=k // 2) + b

    def _apply_res(self, x, p, temb):
        h = self._apply_conv(ops.silu(self._gn(x, p["norm1"])), p["conv1"])
        W, b = p["temb"]
        t = ops.silu(temb) @ W + b  # (N, c_out)
        h = h + ops.expand_dims(t, axis=(2, 3))
        h = ops.silu(self._gn(h, p["norm2"]))
        if self.cfg["dropout"]:
            h = ops.dropout(h, self.cfg["dropout"])
        h = self._apply_conv(h, p["conv2"])
        skip = x if p["skip"] is None else self._apply_conv(x, p["skip"])
        return h + skip

    def _apply_attention(self, x, p):
        n, c, hh, ww = x.shape
        hw = hh * ww
        h = self._gn(x, p["norm"])
        seq = ops.transpose(ops.reshape(h, (None, c, hw)), axes=(0, 2, 1))  # (N, HW, c)
        W, b = p["qkv"]
        qkv = seq @ W + b  # (N, HW, 3c)
        q, k, v = qkv[:, :, :c], qkv[:, :, c:2 * c], qkv[:, :, 2 * c:]
        scores = (q @ ops.transpose(k, axes=(0, 2, 1))) * (1.0 / math.sqrt(c))  # (N, HW, HW)
        att = ops.softmax(scores, axis=-1) @ v  # (N, HW, c)
        W, b = p["proj"]
        out = att @ W + b
        return x + ops.reshape(ops.transpose(out, axes=(0, 2, 1)), (None, c, hh, ww))

    def __call__(self, x_rows, emb):
        g = self.graph
        with g.scope(self.scope):
            with g.scope("time_mlp"):
                temb = ops.silu(emb @ self.t1[0] + self.t1[1]) @ self.t2[0] + self.t2[1]
            # each block's ops in the scope its parameters were made in (down0/res1, mid/attention,
            # ...): `gengraph graph --collapse` then gives each block its own row and FLOPs
            with g.scope("stem"):
                h = self._apply_conv(ops.reshape(x_rows, (None,) + self.shape), self.stem)
            skips = [h]
            for lv, level in enumerate(self.down):
                with g.scope(f"down{lv}"):
                    for b, p in enumerate(level["blocks"]):
                        with g.scope(f"res{b}"):
                            h = self._apply_res(h, p, temb)
                        skips.append(h)
                    if lv < len(self.down) - 1:
                        with g.scope("downsample"):
                            h = self._apply_conv(h, level["down"], stride=2) if level["down"] is not None \
                                else ops.avg_pool2d(h, 2, 2)
                        skips.append(h)
            with g.scope("mid"):
                with g.scope("res0"):
                    h = self._apply_res(h, self.mid1, temb)
                if self.attn is not None:
                    with g.scope("attention"):
                        h = self._apply_attention(h, self.attn)
                with g.scope("res1"):
                    h = self._apply_res(h, self.mid2, temb)
            for level in self.up:
                with g.scope(f"up{level['level']}"):
                    for b, p in enumerate(level["blocks"]):
                        with g.scope(f"res{b}"):
                            h = self._apply_res(ops.concat([h, skips.pop()], axis=1), p, temb)
                    if level["up"] is not None:
                        with g.scope("upsample"):
                            h = self._apply_conv(ops.upsample_nearest2d(h, 2), level["up"])
            with g.scope("out"):
                h = self._apply_conv(ops.silu(self._gn(h, self.out_norm)), self.out_conv)
            return ops.flatten(h)


class _Denoiser:
    def __init__(self, help, schema):
        self.help, self.schema = help, schema


#: the diffusion model's noise-prediction networks (``[model.network] kind = ...``)
DENOISERS = Registry("denoiser network", PLUGIN_GROUP, part=True)
DENOISERS.register("mlp", _Denoiser("dense layers over [x_t, emb(t)] (model.layers)", Table({})))
DENOISERS.register("unet", _Denoiser("U-Net over images (residual blocks, time embedding in every block, "
                                     "skip connections, optional self-attention)", unet_schema()))
