"""Run Hugging Face transformers models with dnorm's attention schemes.

One call registers the schemes as attention implementations; any model that
dispatches through ``transformers.AttentionInterface`` (BERT, Llama, Qwen and
most current architectures) then runs with them::

    import dnorm.integrations.transformers as dnorm_hf

    dnorm_hf.register()  # "dnorm_softmax", "dnorm_doubly", ... one per scheme
    model = AutoModel.from_pretrained(path, attn_implementation="dnorm_doubly")

Generation with a KV cache needs the per-key state of the strictly causal
doubly attention (spec DEF-DECODE-STATE) next to the cached keys, which
:func:`cache` provides::

    model.generate(**inputs, cache=dnorm_hf.cache(model.config))  # sliding layers keep their window only

Softcapping, sliding windows (in the mask) and gpt-oss's learned sinks
(``s_aux``, dnorm's ``sink``) work as in eager attention; every other argument
transformers passes is read, known to change nothing, or refused by name.

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
from . import _transformers_arguments as arguments

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

    Sliding-window layers (Gemma 2 and 3, Mistral, gpt-oss): the mask carries
    the window. Without ``config`` every layer keeps all positions; with the
    model's ``config``, as ``DynamicCache(config=...)``, a sliding layer keeps
    only the last ``sliding_window - 1`` keys and their state, which no later
    query needs: the same tokens in less memory. A layer that slid past its
    window cannot be cropped, as in transformers.

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
    schemes: str | Iterable[str] = check.SCHEMES,
    *,
    alpha: float | torch.Tensor = 0.5,
    n_iter: int = 3,
    length_scale: float | torch.Tensor | None = None,
    attend_current: bool = False,
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
        ``"sinkhorn"``, ``"sigmoid"``, ``"stick-breaking"``.
    alpha : float or torch.Tensor, default 0.5
        The hybrid weight of ``"doubly"``, in [0, 1]; a tensor of shape
        ``(heads,)`` gives one per head. Used by ``"hybrid"`` only.
    n_iter : int, default 3
        Sinkhorn iterations. Used by ``"sinkhorn"`` only.
    length_scale : float or torch.Tensor, optional
        Scalable softmax's factor (spec DEF-LENGTH-SCALE), for every scheme:
        a number or one per head.
    attend_current : bool, default False
        Stick-breaking's queries weigh their own position too. Used by
        ``"stick-breaking"`` only.

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
    check.flag(attend_current, "attend_current")
    if isinstance(alpha, Real):
        check.alpha(alpha, (), xp=None)
    registered = []
    for scheme in names:
        name = PREFIX + scheme
        current = attend_current and check.described(scheme).rows == "sticks"
        function = partial(
            attention_forward, scheme=scheme, alpha=alpha, n_iter=n_iter, length_scale=length_scale,
            attend_current=current,
        )  # fmt: skip
        transformers.AttentionInterface.register(name, function)
        transformers.AttentionMaskInterface.register(name, boolean_mask)
        registered.append(name)
    return registered


def boolean_mask(**kwargs: Any) -> torch.Tensor | None:
    """transformers' boolean mask (True = may attend), always materialized for causal models.

    ``transformers.masking_utils.sdpa_mask`` with ``allow_is_causal_skip`` off: a
    causal model gets its triangle (offsets, window) in the mask itself, boolean
    ``(batch, 1, queries, keys)``; a bidirectional one without padding may get None.
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
    length_scale: float | torch.Tensor | None = None,
    attend_current: bool = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' attention-function contract, computed by :func:`dnorm.attention` (or :func:`dnorm.decode`).

    What it does to the arguments, beyond passing them on:

    * **Causality.** ``is_causal`` comes from ``kwargs``, else from
      ``module.is_causal`` (True when absent, as transformers' sdpa
      function assumes). A causal call uses dnorm's strictly causal variant
      together with the mask, the queries the last positions of the keys.
      Under a KV cache made by :func:`cache`, ``"doubly"`` and ``"hybrid"``
      decode with :func:`dnorm.decode` and keep its state in the cache layer
      (prefill included). With another cache (fewer queries than keys and no
      state) they raise, saying how to pass dnorm's: transformers builds the
      cache of ``generate`` itself and lets no attention function choose it.
      The other schemes keep no state and decode with any cache.
    * **Sinks.** gpt-oss's learned sinks (``s_aux``, one per head) are
      dnorm's ``sink`` (spec DEF-SINK); a sink is refused by the schemes that
      weigh each key alone (``"sigmoid"``, ``"stick-breaking"``).
    * **Every other argument** is read, known to change nothing (positions,
      packed-sequence offsets already in the mask, other outputs), or refused
      with an error naming it (T5's ``position_bias``, sparse ``indices``);
      an unknown one raises too (:mod:`._transformers_arguments`).
    * **Float masks.** transformers' additive masks mark "masked" with the
      dtype's most negative finite number. Doubly normalization cancels any
      constant added to a whole key column, so such a key would come back to
      life; every entry at or below half that number becomes ``-inf``.
    * **Padding queries.** transformers' padding mask hides padding *keys*
      only. Every scheme with column statistics normalizes each key over the
      query rows, so in self-attention a position whose key no query may
      attend is taken as padding and its query row is masked too (it gets a
      zero output row). Softmax keeps the mask as given (eager's rows).
    * **Softcapping** (Gemma 2's ``attn_logit_softcapping``, passed as
      ``softcap``) bounds the scaled scores before the mask, as eager does.
    * **Sliding windows.** The window is in the mask that transformers builds
      through :func:`boolean_mask`, for new queries against the cached keys
      too; ``sliding_window`` with no mask that could carry it raises. A
      sliding layer of :func:`cache` that dropped keys tells the sink's
      running statistic how many positions came before.
    * **Dropout.** The model's ``dropout`` drops attention weights after the
      normalization, drawn from torch's default generator. Cached decoding has
      no dropout and raises for one above 0.

    Parameters
    ----------
    module : torch.nn.Module
        The calling attention layer; ``is_causal`` is read from it.
    query : torch.Tensor of shape (batch, heads, T, D)
    key : torch.Tensor of shape (batch, kv_heads, K, D)
    value : torch.Tensor of shape (batch, kv_heads, K, Dv)
    attention_mask : torch.Tensor, optional
        Boolean (True = may attend) or additive float, broadcastable to
        ``(batch, heads, T, K)``.
    scaling : float, optional
        Score scale; ``1 / sqrt(D)`` when None.
    dropout : float, default 0.0
        Dropout probability on the attention weights, in [0, 1).
    scheme, alpha, n_iter, length_scale, attend_current
        Bound by :func:`register`.
    softcap : float, optional
        Cap on the scaled scores, as ``softcap`` of :func:`dnorm.attention`.
    **kwargs
        transformers' other arguments, sorted as above.

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
        For a ``dropout`` above 0 while decoding from a :func:`cache`, a sink
        given to a scheme that takes none, and the errors of dnorm.
    NotImplementedError
        For a causal ``"doubly"`` or ``"hybrid"`` call with fewer queries than
        keys and no cache from :func:`cache`, a causal ``"sinkhorn"``, and an
        argument of transformers that dnorm does not compute.
    TypeError
        For an argument of transformers that dnorm does not know.
    """
    import torch

    sink = arguments.checked(kwargs, mask=attention_mask, n_keys=key.shape[-2])
    if sink is not None and not check.described(scheme).sinks:
        msg = (
            f"the model passes learned attention sinks (s_aux), which scheme={scheme!r} does not take (it weighs "
            "each key alone): use dnorm_softmax, dnorm_doubly, dnorm_hybrid or dnorm_sinkhorn for this model"
        )
        raise ValueError(msg)
    is_causal = kwargs.get("is_causal")
    causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
    n_queries, n_keys = query.shape[-2], key.shape[-2]
    layer = _cache_layer(kwargs)
    running = check.described(scheme).causal == "running"  # causal: the running column statistic
    decoding = causal and running and layer is not None
    if causal and n_queries != n_keys and running and not decoding:
        msg = (
            f"scheme={scheme!r} decodes with the running column statistic of the earlier queries ({n_queries} "
            f"queries, {n_keys} keys), which transformers' own caches do not keep, and transformers lets no "
            "attention implementation choose the cache generate() builds: pass "
            "cache=dnorm.integrations.transformers.cache() to generate() or to the forward call (cache(model.config) "
            "keeps the windows of sliding layers only), or with use_cache=False"
        )
        raise NotImplementedError(msg)
    mask = attention_mask
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.masked_fill(mask <= torch.finfo(mask.dtype).min / 2, float("-inf"))
    if mask is not None and check.described(scheme).biased and n_queries == n_keys:  # padding queries: not queries
        mask = masks.hide_queries(mask, masks.unseen_keys(mask))

    family = {"sink": sink, "length_scale": length_scale, "attend_current": attend_current}
    options: dict[str, Any] = {"alpha": alpha, **family}
    if decoding and layer is not None:
        if dropout:
            msg = (
                f"dropout={dropout} under a dnorm cache: cached decoding has no dropout; call model.eval() "
                "to generate, or train with use_cache=False"
            )
            raise ValueError(msg)
        earlier = getattr(layer, "cumulative_length", n_keys) - n_queries  # a sliding layer dropped keys
        output, state = dnorm.decode(
            query, key, value, layer.state, scheme, mask=mask, scale=scaling, softcap=softcap, position=earlier,
            **options,
        )  # fmt: skip
        layer.set_state(state)
        return output.transpose(1, 2).contiguous(), None
    alignment = ("bottom-right" if n_queries != n_keys else "top-left") if causal else False
    output = dnorm.attention(
        query, key, value, scheme, mask=mask, causal=alignment, scale=scaling, n_iter=n_iter, softcap=softcap,
        dropout_p=dropout, **options,
    )  # fmt: skip
    weights = None
    if kwargs.get("output_attentions"):
        groups = query.shape[1] // key.shape[1]
        keys = key.repeat_interleave(groups, dim=1) if groups > 1 else key
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        scores = query @ keys.transpose(-1, -2) * scale
        if softcap is not None:
            scores = softcap * torch.tanh(scores / softcap)
        weights = dnorm.normalize(scores, scheme, mask=mask, causal=alignment, n_iter=n_iter, **options)
    return output.transpose(1, 2).contiguous(), weights


def _cache_layer(kwargs: dict[str, Any], /) -> Any:
    """The layer of a :func:`cache` that the model's attention keyword arguments carry, or None."""
    from ._transformers_cache import LAYER

    return kwargs.get(LAYER)
