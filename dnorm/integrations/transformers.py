"""Run Hugging Face transformers models with dnorm's attention schemes.

One call registers the schemes as attention implementations; any model that
dispatches through ``transformers.AttentionInterface`` (BERT, Llama, Qwen and
most current architectures) then runs with them::

    import dnorm.integrations.transformers as dnorm_hf

    dnorm_hf.register()  # "dnorm_softmax", "dnorm_doubly", "dnorm_hybrid", "dnorm_sinkhorn"
    model = AutoModel.from_pretrained(path, attn_implementation="dnorm_doubly")
    # or, on a loaded model: model.set_attn_implementation("dnorm_doubly")

Generation with a KV cache needs the per-key state of the strictly causal
doubly attention (spec DEF-DECODE-STATE) next to the cached keys, which
:func:`cache` provides::

    model.generate(**inputs, cache=dnorm_hf.cache())
    model.generate(**inputs, cache=dnorm_hf.cache(model.config))  # sliding layers keep their window only

Gemma-style logit softcapping and sliding-window layers work as in eager
attention: the softcap bounds the scores before the mask, and the window is
in the mask.

``transformers`` is imported inside :func:`register` and :func:`cache` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from numbers import Real
from typing import TYPE_CHECKING, Any

import dnorm
from dnorm import masks

from .. import _validate as check

if TYPE_CHECKING:
    import torch

__all__ = ["PREFIX", "attention_forward", "boolean_mask", "cache", "register"]

#: Registered names are this prefix followed by the scheme name.
PREFIX = "dnorm_"


def cache(config: Any = None) -> Any:
    """A ``transformers.DynamicCache`` whose layers also keep dnorm's decoding state.

    Pass it to ``generate(..., cache=cache())`` (or to a forward call with
    ``use_cache=True``) for ``"dnorm_doubly"`` and ``"dnorm_hybrid"``
    models. Each layer keeps, beside its keys and values, the state of
    :func:`dnorm.decode` (two floats per key and query head) and follows the
    cache: ``reorder_cache`` (beam search), ``batch_select_indices``,
    ``batch_repeat_interleave``, ``reset``, and ``crop`` back to the end of an
    earlier call (the state inside a call is not kept, so a crop into the
    middle of one, as assisted generation does, raises).

    Sliding-window layers (Gemma 2 and 3, Mistral, Qwen 2): the mask that
    transformers builds for them carries the window, and decoding applies it
    to the new queries against the cached keys. Without ``config`` every
    layer keeps all positions (the window is the mask's alone); with the
    model's ``config``, as ``DynamicCache(config=...)``, a sliding layer keeps
    only the last ``sliding_window - 1`` keys and their state, which no later
    query needs beyond: the same tokens in less memory. A layer that slid
    past its window cannot be cropped, as in transformers.

    Parameters
    ----------
    config : transformers.PretrainedConfig, optional
        The model's config, for its layer types (full and sliding attention).

    Returns
    -------
    transformers.DynamicCache
        A new, empty cache.

    Raises
    ------
    ValueError
        For a config with layers other than full or sliding attention
        (linear attention, shared keys).
    """
    from ._transformers_cache import DecodingCache

    return DecodingCache(config)


def register(
    schemes: str | Iterable[str] = check.SCHEMES, *, alpha: float | torch.Tensor = 0.5, n_iter: int = 3
) -> list[str]:
    """Register dnorm's schemes as transformers attention implementations.

    For every scheme, ``"dnorm_<scheme>"`` is registered in
    ``transformers.AttentionInterface`` (the attention function,
    :func:`attention_forward`) and in ``transformers.AttentionMaskInterface``
    (the mask builder, :func:`boolean_mask`). Both are needed: without a mask
    builder registered under the same name, transformers builds no mask for a
    custom implementation and silently drops the padding mask.

    The registries are global: a later call for the same scheme replaces the
    earlier ``alpha`` and ``n_iter``.

    Parameters
    ----------
    schemes : str or iterable of str, default all of ``dnorm.SCHEMES``
        Schemes to register: ``"softmax"``, ``"doubly"``, ``"hybrid"``,
        ``"sinkhorn"``.
    alpha : float or torch.Tensor, default 0.5
        The hybrid weight of ``"doubly"``, in [0, 1]; a tensor of shape
        ``(heads,)`` gives one per head. Used by ``"hybrid"`` only.
    n_iter : int, default 3
        Sinkhorn iterations. Used by ``"sinkhorn"`` only.

    Returns
    -------
    list of str
        The registered names, in the order of `schemes`.

    Raises
    ------
    TypeError, ValueError
        For an unknown scheme, an ``alpha`` outside [0, 1] or an ``n_iter``
        that is not a positive integer.

    See Also
    --------
    attention_forward : what the registered implementations compute.

    Examples
    --------
    >>> import dnorm.integrations.transformers as dnorm_hf
    >>> dnorm_hf.register(["doubly", "softmax"])  # doctest: +SKIP
    ['dnorm_doubly', 'dnorm_softmax']
    """
    import transformers

    names = [check.scheme(scheme) for scheme in ([schemes] if isinstance(schemes, str) else schemes)]
    check.positive_int(n_iter, "n_iter")
    if isinstance(alpha, Real):
        check.alpha(alpha, (), xp=None)
    registered = []
    for scheme in names:
        name = PREFIX + scheme
        function = partial(attention_forward, scheme=scheme, alpha=alpha, n_iter=n_iter)
        transformers.AttentionInterface.register(name, function)
        transformers.AttentionMaskInterface.register(name, boolean_mask)
        registered.append(name)
    return registered


def boolean_mask(**kwargs: Any) -> torch.Tensor | None:
    """transformers' boolean mask (True = may attend), always materialized for causal models.

    It is ``transformers.masking_utils.sdpa_mask`` with ``allow_is_causal_skip``
    turned off: a causal model gets its triangle (with the right offsets under
    a cache) in the mask itself, and not only as an ``is_causal`` flag. A
    bidirectional model without padding may still get ``None``.

    Parameters
    ----------
    **kwargs
        The arguments transformers passes to a mask builder.

    Returns
    -------
    torch.Tensor or None
        Boolean, shape ``(batch, 1, queries, keys)``.
    """
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(**{**kwargs, "allow_is_causal_skip": False})


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    *,
    scheme: str,
    alpha: float | torch.Tensor = 0.5,
    n_iter: int = 3,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' attention-function contract, computed by :func:`dnorm.scaled_dot_product_attention`.

    What it does to the arguments, beyond passing them on:

    * **Causality.** ``is_causal`` comes from ``kwargs``, else from
      ``module.is_causal`` (True when absent, as transformers' sdpa
      function assumes). A causal call uses dnorm's strictly causal variant
      together with the mask. Under a KV cache made by :func:`cache`,
      ``"doubly"`` and ``"hybrid"`` decode with :func:`dnorm.decode` and keep
      its state in the cache layer (prefill included); with another cache
      (fewer queries than keys and no state) they raise. ``"softmax"`` needs
      no state and uses the mask alone, whose triangle carries the offset.
    * **Float masks.** transformers' additive masks mark "masked" with the
      dtype's most negative finite number. Doubly normalization cancels any
      constant added to a whole key column, so such a key would come back to
      life; every entry at or below half that number becomes ``-inf``.
    * **Padding queries.** transformers' padding mask hides padding *keys*
      only, and padding query rows still see the real keys. Softmax rows are
      independent, but every other scheme normalizes each key over the query
      rows, so padding rows would shift the real rows' weights, and a
      sentence's output would depend on the padding in its batch. When there
      are as many queries as keys (self-attention), a position whose key no
      query may attend is taken as padding, and its query row is masked too:
      it leaves every column statistic and gets a zero output row. The
      softmax scheme keeps the mask as given, so it equals eager attention
      everywhere, padding positions included. With fewer or more queries
      than keys (cross-attention), padding queries cannot be told from a
      key-padding mask and are left as they are.
    * **Softcapping** (Gemma 2's ``attn_logit_softcapping``, passed as
      ``softcap``) bounds the scaled scores at ``softcap * tanh(S / softcap)``
      before the mask, as eager attention does; under a cache the decoding
      state holds statistics of the capped scores.
    * **Sliding windows.** The ``sliding_window`` that windowed layers pass
      (Gemma 2 and 3, Mistral, Qwen 2) is not read: the mask that
      transformers builds for those layers (through :func:`boolean_mask`)
      already carries the window, for the full sequence and for new queries
      against the cached keys alike, as for transformers' eager and sdpa
      functions. See :func:`cache` for the keys a sliding layer keeps.
    * **Dropout.** The model's ``dropout`` (its ``attention_dropout`` in
      training mode, 0 in eval mode) drops attention weights after the
      normalization, drawn from torch's default generator (seed it with
      ``torch.manual_seed``). Cached decoding has no dropout and raises for
      one above 0.

    Parameters
    ----------
    module : torch.nn.Module
        The calling attention layer; ``num_key_value_groups`` (grouped-query
        attention) and ``is_causal`` are read from it.
    query : torch.Tensor of shape (batch, heads, T, D)
    key : torch.Tensor of shape (batch, kv_heads, K, D)
    value : torch.Tensor of shape (batch, kv_heads, K, Dv)
    attention_mask : torch.Tensor, optional
        Boolean (True = may attend) or additive float, broadcastable to
        ``(batch, heads, T, K)``.
    scaling : float, optional
        Score scale; ``1 / sqrt(D)`` when None.
    dropout : float, default 0.0
        Dropout probability on the attention weights, in [0, 1) (the model
        passes 0 in eval mode).
    scheme : str
        The dnorm scheme, bound by :func:`register`.
    alpha : float or torch.Tensor, default 0.5
        As in :func:`register`.
    n_iter : int, default 3
        As in :func:`register`.
    softcap : float, optional
        Cap on the scaled scores, as ``softcap`` of :func:`dnorm.attention`.
    **kwargs
        transformers' extra arguments: ``is_causal`` and
        ``output_attentions`` are read, the rest (``sliding_window`` among
        them) is ignored as by transformers' sdpa function.

    Returns
    -------
    output : torch.Tensor of shape (batch, T, heads, Dv)
    weights : torch.Tensor of shape (batch, heads, T, K) or None
        The attention weights (softcapped, before dropout) when
        ``output_attentions`` is set, computed by :func:`dnorm.normalize` in a
        second pass; else None.

    Raises
    ------
    ValueError
        For a ``dropout`` above 0 while decoding from a :func:`cache`, and
        (from dnorm) a ``softcap`` that is not positive and finite or a
        ``dropout`` outside [0, 1).
    NotImplementedError
        For a causal ``"doubly"`` or ``"hybrid"`` call with fewer queries than
        keys and no cache from :func:`cache`, and (from dnorm) a causal
        ``"sinkhorn"``.
    """
    import torch

    is_causal = kwargs.get("is_causal")
    causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
    n_queries, n_keys = query.shape[-2], key.shape[-2]
    layer = _cache_layer(kwargs)
    running = check.described(scheme).causal == "running"  # causal: the running column statistic
    decoding = causal and running and layer is not None
    if causal and n_queries != n_keys and not decoding:
        if check.described(scheme).biased:
            msg = (
                f"scheme={scheme!r} with causal attention needs the running column statistic of the earlier "
                f"queries ({n_queries} queries, {n_keys} keys): generate with "
                "cache=dnorm.integrations.transformers.cache(), or with use_cache=False"
            )
            raise NotImplementedError(msg)
        causal = False
    mask = attention_mask
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.masked_fill(mask <= torch.finfo(mask.dtype).min / 2, float("-inf"))
    if mask is not None and check.described(scheme).biased and n_queries == n_keys:  # padding queries: not queries
        mask = masks.hide_queries(mask, masks.unseen_keys(mask))

    groups = getattr(module, "num_key_value_groups", 1)
    options: dict[str, Any] = {"scheme": scheme, "alpha": alpha, "n_iter": n_iter}
    if decoding and layer is not None:
        if dropout:
            msg = (
                f"dropout={dropout} under a dnorm cache: cached decoding has no dropout; call model.eval() "
                "to generate, or train with use_cache=False"
            )
            raise ValueError(msg)
        output, state = dnorm.decode(
            query, key, value, layer.state, scheme, mask=mask, scale=scaling, alpha=alpha, softcap=softcap
        )
        layer.set_state(state)
        return output.transpose(1, 2).contiguous(), None
    output = dnorm.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        dropout_p=dropout,
        is_causal=causal,
        scale=scaling,
        enable_gqa=groups > 1,
        softcap=softcap,
        **options,
    )
    weights = None
    if kwargs.get("output_attentions"):
        keys = key.repeat_interleave(groups, dim=1) if groups > 1 else key
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        scores = query @ keys.transpose(-1, -2) * scale
        if softcap is not None:
            scores = softcap * torch.tanh(scores / softcap)
        weights = dnorm.normalize(scores, mask=mask, causal=causal, **options)
    return output.transpose(1, 2).contiguous(), weights


def _cache_layer(kwargs: dict[str, Any], /) -> Any:
    """The layer of a :func:`cache` that the model's attention keyword arguments carry, or None."""
    from ._transformers_cache import LAYER

    return kwargs.get(LAYER)
