"""`kind = "hvae"`: the Markovian hierarchical VAE of the lecture, with T declared levels.

    p(x, h_1:T) = p(h_T) p(x|h_1) prod_{t=2..T} p(h_{t-1}|h_t),   p(h_T) = N(0, I)
    q(h_1:T|x)  = q(h_1|x) prod_{t=2..T} q(h_t|h_{t-1})

Every conditional but p(x|h_1) is a Gaussian network (hidden layers, then a linear layer
split into mean and log-variance); p(x|h_1) ends in the likelihood's output layer. The
levels are declared in order from the data upwards:

    encoder = [{ units = 128, activation = "relu" }]   # template for every q(h_t|h_{t-1})
    decoder = [{ units = 128, activation = "relu" }]   # template for p(x|h_1) and every p(h_{t-1}|h_t)
    levels = [{ size = 16 }, { size = 8, encoder = [{ units = 64 }] }]   # per-level overrides

The negative ELBO (single-sample Monte Carlo by default) is

    -E_q[ log p(x|h_1) + sum_{t=2..T} log p(h_{t-1}|h_t) + log p(h_T)
          - log q(h_1|x) - sum_{t=2..T} log q(h_t|h_{t-1}) ]
    = reconstruction + sum_t kl_t,  kl_t = E_q[log q(h_t|h_{t-1}) - log p(h_t|h_{t+1})]

with the top level's kl_T in closed form (E_q[KL(q(h_T|h_{T-1}) || N(0, I))]) when
``[model.elbo] kl = "analytic"``. Logged: neg_elbo, reconstruction, kl and kl_1..kl_T;
the report is the VAE's (test_nll_iw uses the joint proposal q(h_1:T|x)).
"""

from __future__ import annotations

from gengraph.plugins.model import ModelConfigError
from gengraph.plugins.models.latent_common import DEFAULT_HIDDEN, Hierarchy, LatentPlugin, build_latent_model, \
    check_likelihood, elbo_schema, likelihood_schema
from gengraph.plugins.blocks.layers import layer_schema
from gengraph.plugins.spec.schema import Field, ListOf, Table


class HVAE(LatentPlugin):
    kind = "hvae"
    help = "Markovian hierarchical VAE: T Gaussian latent levels, p(h_T) = N(0, I)"

    @property
    def schema(self):
        level = Table({
            "size": Field(int, help="dimension of h_t", min=1),
            "encoder": ListOf(layer_schema(), default=None,
                              help="hidden layers of q(h_t|h_{t-1}) (default: the model's encoder template)"),
            "decoder": ListOf(layer_schema(), default=None,
                              help="hidden layers of p(h_{t-1}|h_t), p(x|h_1) for t = 1 (default: the decoder "
                                   "template)"),
        })
        return Table({
            "levels": ListOf(level, help="latent levels h_1..h_T, from the data upwards"),
            "encoder": ListOf(layer_schema(), default=DEFAULT_HIDDEN,
                              help="hidden layers of every q(h_t|h_{t-1}) unless a level declares its own"),
            "decoder": ListOf(layer_schema(), default=DEFAULT_HIDDEN,
                              help="hidden layers of p(x|h_1) and every p(h_{t-1}|h_t) unless a level declares "
                                   "its own"),
            "likelihood": likelihood_schema(),
            "elbo": elbo_schema(),
        }, help=self.help)

    def build(self, cfg, graph, data, rng):
        if not cfg["levels"]:
            raise ModelConfigError("model.levels", "declare at least one latent level")
        levels = [{"size": lv["size"],
                   "encoder": cfg["encoder"] if lv.get("encoder") is None else lv["encoder"],
                   "decoder": cfg["decoder"] if lv.get("decoder") is None else lv["decoder"]}
                  for lv in cfg["levels"]]
        hier = Hierarchy(graph, data.n_features, levels, cfg["likelihood"], rng,
                         lambda role, t: f"{role}{t + 1}", image_shape=data.image_shape,
                         origins=lambda role, t: f"model.levels[{t}].{role}"
                         if cfg["levels"][t].get(role) is not None else f"model.{role}")
        check_likelihood(cfg["likelihood"], data)  # after the layers' shape errors, which are the spec's own
        return build_latent_model(graph, hier, cfg["elbo"])


plugin = HVAE()
