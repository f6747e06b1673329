"""Drop-in integrations of dnorm's attention schemes into deep-learning frameworks.

Each submodule is imported explicitly and needs its framework installed;
importing :mod:`dnorm` or this package imports neither:

* :mod:`dnorm.integrations.transformers`: :func:`~dnorm.integrations.transformers.register`
  adds ``attn_implementation="dnorm_doubly"`` (and the other schemes) to
  Hugging Face transformers.
* :mod:`dnorm.integrations.torch`: :class:`~dnorm.integrations.torch.MultiheadAttention`,
  a drop-in for ``torch.nn.MultiheadAttention`` (self and cross attention,
  grouped-query heads, torch's weights through ``from_torch``) with a learnable
  per-head hybrid ``alpha``.
"""
