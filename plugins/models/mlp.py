"""`kind = "mlp"`: feed-forward networks for regression, binary and multi-class outputs.

`layers` declares the hidden layers; the output layer is added from the data and
the `loss` (a name in the LOSSES registry, plugins/losses.py): 1 unit per regression
target for mse/mae, 1 logit for bce, n_classes logits for cross_entropy. Optional
l1/l2 penalties on the weights (not the biases).
"""

from __future__ import annotations

import numpy as np

from gengraph.engine import ops, to_numpy

from gengraph.plugins.blocks.layers import INITIALIZERS, build_stack, layer_schema
from gengraph.plugins.blocks.losses import LOSSES, default_loss
from gengraph.plugins.model import Model, ModelConfigError, ModelPlugin
from gengraph.plugins.spec.schema import Field, ListOf, Table
from gengraph.plugins.blocks.plots import fit_1d
from gengraph.plugins.blocks.plots import confusion_matrix


class MLP(ModelPlugin):
    kind = "mlp"
    summary_metric_names = ("test_mse", "test_r2", "test_accuracy", "params")
    summary_data_names = ("params",)

    def loss_label(self, cfg):
        return "loss (training objective; on standardized targets when data.scale_target = true)"
    help = "feed-forward network (regression, binary or multi-class classification)"
    tasks = ("regression", "classification")

    @property
    def schema(self):
        return Table({
            "layers": ListOf(layer_schema(), default=[], help="hidden layers, in order"),
            "loss": Field(str, "auto", "loss and output head: auto (mse for regression data, cross_entropy "
                                       "for classes), " + ", ".join(LOSSES.names()),
                          choices=["auto"] + LOSSES.names()),
            "output_init": Field(str, "xavier", "initializer of the output layer", choices=INITIALIZERS),
            "l1": Field(float, 0.0, "L1 penalty on weights (lambda * sum |W|)", min=0.0),
            "l2": Field(float, 0.0, "L2 penalty on weights (lambda * sum W^2)", min=0.0),
        }, help=self.help)

    def build(self, cfg, graph, data, rng):
        loss_fn = LOSSES.get(default_loss(data) if cfg["loss"] == "auto" else cfg["loss"])
        if loss_fn.head != "regression" and data.task != "classification":
            raise ModelConfigError("model.loss", f'"{cfg["loss"]}" needs class labels; the data is {data.task}')
        if loss_fn.head == "binary" and data.n_classes != 2:
            raise ModelConfigError("model.loss", f'"{cfg["loss"]}" is for two classes; the data has {data.n_classes} '
                                                 '(use "cross_entropy")')
        x = graph.input("x", (None, data.n_features))
        h, params = build_stack(graph, x, cfg["layers"], rng, "hidden", origin="model.layers",
                                image_shape=data.image_shape)  # conv layers see the rows as images
        if loss_fn.head == "regression":
            units = 1 if data.y_train.ndim == 1 else data.y_train.shape[1]
        else:
            units = 1 if loss_fn.head == "binary" else data.n_classes
        z, out_params = build_stack(graph, h, [{"units": units, "activation": "identity",
                                                "init": cfg["output_init"]}], rng, "output", origin="model.output")
        params += out_params
        with graph.scope("loss"):
            y, loss, metrics, feeds = loss_fn.build(graph, z, units)
            if data.meta.get("y_scaling") is not None:  # logged on standardized targets: say so in the name;
                # report() gives test_mse / test_r2 in the data's own units
                metrics = {f"{k}_scaled" if k in ("mse", "mae") else k: v for k, v in metrics.items()}
            pen = penalty(graph, params, cfg["l1"], cfg["l2"])
            objective = loss if isinstance(pen, float) and pen == 0.0 else loss + pen
        return Model(graph, params, objective, {"x": x, "y": y}, metrics=metrics, feeds=feeds,
                     programs={"predict": (z, {})}, prediction=z, extras={"output": z, "head": loss_fn.head, "data_loss": loss})

    def report(self, model, data, ctx):
        return report_supervised(model, data, ctx)


def penalty(graph, params, l1, l2):
    """l1 * sum|W| + l2 * sum W^2 over weight matrices (biases are not penalised)."""
    total = 0.0
    for p in params:
        if p.ndim < 2:
            continue
        if l1:
            total = total + l1 * ops.sum(ops.abs(p))
        if l2:
            total = total + l2 * ops.sum(ops.square(p))
    return total


def predict(model, x, ctx=None, batch=4096):
    """The network's output for rows x (through the model's `predict` program)."""
    prog = model.program("predict", ctx)
    return np.concatenate([to_numpy(prog.run(x=x[i:i + batch])) for i in range(0, len(x), batch)])


def r2_score(resid, y_true) -> float | None:
    """1 - SS_res / SS_tot per target, averaged over targets (scikit-learn's r2_score and its
    default multioutput="uniform_average"; one pooled ratio let a large-scale target hide a badly
    fitted small one), with its conventions where it is undefined (it was -inf or NaN there, and
    the finished run was reported as diverged): None (null in summary.json) for fewer than two
    rows; for a target without spread 1.0 if its fit is perfect, else 0.0."""
    if len(y_true) < 2:
        return None
    resid, y_true = resid.reshape(len(resid), -1), y_true.reshape(len(y_true), -1)
    ss_res = np.sum(resid ** 2, axis=0)
    ss_tot = np.sum((y_true - y_true.mean(0)) ** 2, axis=0)
    flat = ss_tot == 0.0
    scores = np.where(flat, np.where(ss_res == 0.0, 1.0, 0.0), 1.0 - ss_res / np.where(flat, 1.0, ss_tot))
    return float(np.mean(scores))


def report_supervised(model, data, ctx) -> dict:
    """test_mse/test_r2 (in data units) or test_accuracy, plus fit/confusion plots."""
    if data.x_test is None or data.n_test == 0:
        return {}
    z = predict(model, data.x_test, ctx)
    head, out = model.extras["head"], {}
    if head == "regression":
        y_true = np.asarray(data.unscale_y(data.y_test), np.float64).reshape(len(z), -1)
        y_pred = np.asarray(data.unscale_y(z.reshape(data.y_test.shape)), np.float64).reshape(len(z), -1)
        resid = y_true - y_pred
        out["test_mse"] = float(np.mean(resid ** 2))
        out["test_r2"] = r2_score(resid, y_true)
        if ctx.plots and data.n_features == 1:
            xs = np.linspace(data.x_train.min(), data.x_train.max(), 200)[:, None]
            ys = data.unscale_y(predict(model, xs, ctx).reshape(-1))
            fit_1d(data.unscale_x(data.x_train)[:, 0], data.unscale_y(data.y_train).reshape(-1),
                   data.unscale_x(xs)[:, 0], ys, ctx.path("fit.png"))
    else:
        pred = (z[:, 0] > 0).astype(int) if head == "binary" else z.argmax(axis=1)
        out["test_accuracy"] = float(np.mean(pred == data.y_test))
        if ctx.plots:
            confusion_matrix(data.y_test, pred, data.n_classes or 2, ctx.path("confusion.png"),
                             labels=data.meta.get("classes"))  # the file's own labels (3, 7, 9; "neg", "pos")
    n_params = sum(int(np.prod(model.graph.value(p).shape)) for p in model.params)
    if n_params <= 16:
        out["params"] = {p.label: model.graph.value(p).reshape(-1).tolist() for p in model.params}
    return out


plugin = MLP()
