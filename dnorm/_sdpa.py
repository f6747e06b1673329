"""``scaled_dot_product_attention``: torch's signature over every scheme and backend."""

from __future__ import annotations

from typing import Any

from . import _validate as check
from ._api import attention
from ._docs import shared_docstring

Array = Any


@shared_docstring
def scaled_dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    attn_mask: Array | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    scheme: str = "doubly",
    alpha: float | Array = 0.5,
    n_iter: int = 3,
    softcap: float | None = None,
    dropout_key: object = None,
) -> Array:
    """Drop-in for ``torch.nn.functional.scaled_dot_product_attention``, any scheme, any backend.

    Takes torch's arguments with torch's meaning and adds dnorm's options as
    keywords, with the defaults of :func:`attention` (so the default scheme is
    ``"doubly"``; pass ``scheme="softmax"`` for torch's result). Swapping the
    import is the whole change.

    {schemes}

    Parameters
    ----------
    query : array of shape (..., Hq, T, D)
    key : array of shape (..., H, K, D)
    value : array of shape (..., H, K, Dv)
    attn_mask : array, optional
        As ``mask`` of :func:`attention`: boolean (True = may attend) or
        floating (added), broadcastable to ``(..., Hq, T, K)``.
    dropout_p : float, default 0.0
        Dropout probability on the attention weights, in [0, 1), applied
        whenever above 0 (as torch: pass 0 in evaluation); see ``dropout_p``
        and ``dropout_key`` of :func:`attention` (torch, JAX with a key, NumPy
        with a generator; blocked, with gradients).
    is_causal : bool, default False
        As ``causal="top-left"`` of :func:`attention` (torch's alignment;
        strictly causal; combined with ``attn_mask``).
    scale : float, optional
        Defaults to ``1 / sqrt(D)``.
    enable_gqa : bool, default False
        Grouped-query attention: ``Hq`` a multiple of ``H``, each key/value
        head serving ``Hq / H`` consecutive query heads.
    {scheme_param}
    {alpha_param}
    {n_iter_param}
    softcap : float, optional
        As ``softcap`` of :func:`attention`.
    dropout_key : optional
        As ``dropout_key`` of :func:`attention`.

    Returns
    -------
    array of shape (..., Hq, T, Dv)

    {raises}
    """
    xp = check.namespace(query=query, key=key, value=value, attn_mask=attn_mask)
    check.flag(enable_gqa, "enable_gqa")
    _check_heads(query, key, value, enable_gqa, xp=xp)
    check.flag(is_causal, "is_causal")
    causal = "top-left" if is_causal else False  # torch's alignment, whatever T and K
    return attention(  # grouped heads without copies (dnorm._heads)
        query,
        key,
        value,
        scheme,
        mask=attn_mask,
        causal=causal,
        scale=scale,
        alpha=alpha,
        n_iter=n_iter,
        softcap=softcap,
        dropout_p=dropout_p,
        dropout_key=dropout_key,
    )


def _check_heads(query: Array, key: Array, value: Array, enable_gqa: bool, /, *, xp: Any) -> None:
    """Grouped heads as torch has them: only with ``enable_gqa``, query heads a multiple of key heads."""
    for name, x in (("query", query), ("key", key), ("value", value)):
        check.floating(x, name, xp=xp, min_ndim=3 if enable_gqa else 2)
    if not enable_gqa:
        if min(query.ndim, key.ndim) >= 3 and key.shape[-3] not in (1, query.shape[-3]):
            msg = f"query has {query.shape[-3]} heads and key {key.shape[-3]}: pass enable_gqa=True to group them"
            raise ValueError(msg)
        return
    n_q, n_kv = query.shape[-3], key.shape[-3]
    if n_kv == 0 or n_q % n_kv or value.shape[-3] != n_kv:
        msg = (
            f"enable_gqa needs query heads ({n_q}) to be a multiple of key heads ({n_kv}) "
            f"and value heads ({value.shape[-3]}) equal to key heads"
        )
        raise ValueError(msg)
