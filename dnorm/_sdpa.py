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
    kernel: str = "auto",
    sink: float | Array | None = None,
    length_scale: float | Array | None = None,
    bias: float | Array | None = None,
    attend_current: bool = False,
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
        strictly causal; combined with ``attn_mask``). ``"sinkhorn"`` has no
        causal form and raises ``NotImplementedError``.
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
    {kernel_param}
    {family_params}

    Returns
    -------
    array of shape (..., Hq, T, Dv)

    {raises}
    """
    xp = check.namespace(query=query, key=key, value=value, attn_mask=attn_mask)
    check.flag(enable_gqa, "enable_gqa")
    check.qkv(query, key, value, xp=xp, grouped=enable_gqa)  # grouped heads only with enable_gqa, as torch
    check.flag(is_causal, "is_causal")
    causal = "top-left" if is_causal else False  # torch's alignment, whatever T and K
    return attention(  # grouped heads without copies (dnorm._routing.heads)
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
        kernel=kernel,
        sink=sink,
        length_scale=length_scale,
        bias=bias,
        attend_current=attend_current,
    )
