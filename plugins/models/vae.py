"""`kind = "vae"`: a variational autoencoder with a Gaussian encoder and a declared likelihood.

    q(h|x) = N(mu(x), diag sigma^2(x)),  p(h) = N(0, I),  p(x|h) from the likelihood registry

The encoder's hidden layers end in a linear layer of 2 * latent units, split into the
mu and log-variance heads; the decoder's hidden layers end in a linear layer of one
unit per data dimension (Bernoulli logits or Gaussian means; `levels` logits per
dimension for the categorical likelihood over grey levels). Training minimises the
negative ELBO per example (nats), a sum of declared terms (``[model.elbo] terms``):

    E_q[-log p(x|h)]  +  beta * KL(q(h|x) || p(h))

with h = mu + exp(logvar / 2) * eps (reparameterisation), `samples` draws per example,
and the KL analytic or Monte Carlo. Logged per epoch: neg_elbo, reconstruction, kl.
The report adds test_nll_iw, the importance-weighted bound with k = iw_samples (and
test_bpd for a pmf likelihood), every bound with its standard error NAME_se, and
writes reconstructions.png, samples.png, samples.npy, elbo_terms.png and, for a 2-D
latent, latent.png (posterior means) and manifold.png (decoder over a latent grid).

With ``condition = "label"`` it is a conditional VAE (Sohn et al. 2015; the conditioning
of Kingma et al. 2014's M2 with the label observed): q(h|x, y) and p(x|h, y) get a one-hot
of the class label appended to their inputs, p(h) = N(0, I), and every bound is on
-log p(x|y) at the test labels. The report adds cond_accuracy (class_condition.py): the
digit classifier's reading of samples drawn at each label; `gengraph sample --label K`
draws at y = K, without a label at y ~ the training split's class frequencies.

A VAE is the one-level case of the Markovian hierarchical VAE (`hvae`); both are
built by `latent_common.Hierarchy`.
"""

from __future__ import annotations

from gengraph.plugins.models.latent_common import DEFAULT_HIDDEN, Hierarchy, LatentPlugin, build_latent_model, \
    check_likelihood, elbo_schema, likelihood_schema
from gengraph.plugins.blocks.layers import layer_schema
from gengraph.plugins.models.class_condition import condition_field, n_labels_of
from gengraph.plugins.spec.schema import Field, ListOf, Table


class VAE(LatentPlugin):
    kind = "vae"
    help = "variational autoencoder: Gaussian encoder, N(0, I) prior, Bernoulli, Gaussian or categorical likelihood"

    @property
    def schema(self):
        return Table({
            "latent": Field(int, help="dimension of the latent h", min=1),
            "encoder": ListOf(layer_schema(), default=DEFAULT_HIDDEN,
                              help="hidden layers of q(h|x); a linear layer of 2*latent units (mu, logvar) follows"),
            "decoder": ListOf(layer_schema(), default=DEFAULT_HIDDEN,
                              help="hidden layers of p(x|h); a linear layer of one unit per feature follows"),
            "likelihood": likelihood_schema(),
            "elbo": elbo_schema(),
            "condition": condition_field(),
        }, help=self.help)

    def build(self, cfg, graph, data, rng):
        level = {"size": cfg["latent"], "encoder": cfg["encoder"], "decoder": cfg["decoder"]}
        hier = Hierarchy(graph, data.n_features, [level], cfg["likelihood"], rng, lambda role, t: role,
                         image_shape=data.image_shape, origins=lambda role, t: f"model.{role}",
                         n_labels=n_labels_of(cfg, data))
        check_likelihood(cfg["likelihood"], data)  # after the layers' shape errors, which are the spec's own
        return build_latent_model(graph, hier, cfg["elbo"])


plugin = VAE()
