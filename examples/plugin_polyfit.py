"""A complete third-party gengraph plugin: least-squares polynomial fit of 1-D data.

Load it without installing anything:

    gengraph run my_spec.toml --plugin examples/plugin_polyfit.py

or install it as a package whose pyproject.toml declares

    [project.entry-points."gengraph.plugins"]
    polyfit = "plugin_polyfit:plugin"

The spec then says ``[model] kind = "polyfit"`` with the keys declared in `schema`.
"""

import numpy as np

from gengraph.engine import ops
from gengraph.plugins.model import Model, ModelConfigError, ModelPlugin
from gengraph.plugins.spec.schema import Field, Table


class PolyFit(ModelPlugin):
    kind = "polyfit"
    help = "polynomial y = sum_k theta_k x^k fitted by gradient descent (example plugin)"
    tasks = ("regression",)
    schema = Table({
        "degree": Field(int, 2, "highest power of x", min=0, max=12),
        "l2": Field(float, 0.0, "ridge penalty on the coefficients", min=0.0),
    })

    def build(self, cfg, graph, data, rng):
        if data.n_features != 1:
            raise ModelConfigError("model.kind", f"polyfit needs 1-D inputs, the data has {data.n_features} features")
        x = graph.input("x", (None, 1))
        y = graph.input("y", (None,))
        with graph.scope("polyfit"):
            theta = graph.param("theta", np.zeros(cfg["degree"] + 1))
            # design matrix [1, x, x^2, ...] built in the graph, so `gengraph graph` shows it
            powers = ops.concat([x ** float(k) for k in range(cfg["degree"] + 1)], axis=1)
            pred = powers @ theta
        with graph.scope("loss"):
            mse = ops.mean(ops.square(pred - y))
            loss = mse + cfg["l2"] * ops.sum(ops.square(theta))
        return Model(graph, [theta], loss, {"x": x, "y": y}, metrics={"mse": mse},
                     extras={"theta": theta})

    def report(self, model, data, ctx):
        return {"coefficients": model.graph.value(model.extras["theta"]).tolist()}


plugin = PolyFit()
