"""Image-type heterogeneity: a variational model of treatment-effect types read from images.

The model of Jerzak, Johansson and Daoud (CLeaR 2023; R package ``causalimages``)
as described in METHODS.md section 6. Each unit's image M_i decides, through a
network f, a soft assignment to one of K latent *image types*; each type k has
its own treatment effect τ_k, and the per-unit effect is the assignment-weighted
mix of the type effects:

.. math::

    Y_i \\sim \\mathcal N\\big(\\mu_0(M_i, X_i) + W_i \\textstyle\\sum_k z_{ik}\\tau_k,\\ \\sigma^2\\big),
    \\quad z_i \\sim \\mathrm{RelaxedOneHotCategorical}(f(M_i), t),
    \\quad \\tau_k \\sim \\mathcal N(m_k, s_k^2).

This is a torch stage: it lives outside :mod:`eocausal.estimate`, whose modules
never import torch. It accepts chips (a small convolutional network) or
precomputed embeddings (an MLP).

Modules, one concept each:

- :mod:`~eocausal.image_types.model`: :class:`ImageTypeModel`, the estimator.
- :mod:`~eocausal.image_types.networks`: the torch modules (trunks, type logits
  f(M), baseline μ0(M, X), variational posteriors of τ).
- :mod:`~eocausal.image_types.training`: the minibatch ELBO and the training loop.
- :mod:`~eocausal.image_types.salience`: gradient maps of the type assignments.
- :mod:`~eocausal.image_types.io`: save and load without unpickling objects.
- :mod:`~eocausal.image_types.tensors`: input standardisation and seeded random streams.
- :mod:`~eocausal.image_types.result`: :class:`ImageTypeResult`, the JSON-ready summary.

References
----------
Jerzak, C. T., Johansson, F., Daoud, A. (2023). "Image-based treatment effect
heterogeneity". Proceedings of the Second Conference on Causal Learning and
Reasoning (CLeaR), PMLR 213. https://arxiv.org/abs/2206.06417
Jang, E., Gu, S., Poole, B. (2017). "Categorical reparameterization with
Gumbel-softmax"; Maddison, Mnih, Teh (2017), "The concrete distribution".
"""

from eocausal.image_types.model import ImageTypeModel
from eocausal.image_types.result import ImageTypeResult

__all__ = ["ImageTypeModel", "ImageTypeResult"]
