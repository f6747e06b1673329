"""The public functions: check the arguments, resolve the namespace once, hand over to :mod:`dnorm._routing`.

Nothing here computes attention itself: the routing layer picks the
implementation (the array-API kernels of :mod:`dnorm._kernels`, on any
namespace, or a backend's fast path in :mod:`dnorm._fastpath`) and runs it.
"""

from __future__ import annotations

from typing import Any

from . import _random as random
from . import _routing as routing
from . import _validate as check
from ._docs import shared_docstring
from ._kernels import budget, masks

Array = Any


@shared_docstring
def normalize(
    scores: Array,
    /,
    scheme: str = "doubly",
    *,
    mask: Array | None = None,
    causal: bool | str = False,
    alpha: float | Array = 0.5,
    n_iter: int = 3,
    log: bool = False,
    sink: float | Array | None = None,
    length_scale: float | Array | None = None,
    bias: float | Array | None = None,
    attend_current: bool = False,
) -> Array:
    """Attention weights of a scheme, from scores of shape ``(..., T, K)``.

    {schemes}

    Parameters
    ----------
    scores : array of shape (..., T, K)
        Real floating scores ``S``: ``T`` queries, ``K`` keys. ``-inf`` entries
        are masked.
    {scheme_param}
    {mask_param}
    {causal_param}
    {alpha_param}
    {n_iter_param}
    log : bool, default False
        Return the log-weights, computed in the log domain (masked entries are
        ``-inf``; no ``log(0)`` is ever evaluated).
    {family_params}
        Here ``length_scale`` multiplies the given scores, and ``bias`` is
        added to them, before the mask.

    Returns
    -------
    array of shape (..., T, K)
        Weights ``A`` (rows of the normalized schemes sum to one, spec
        THM-ROWS-SUM-TO-ONE; with a sink, to one less the sink's weight), or
        their logarithm, in the namespace, device and dtype of ``scores``.

    {raises}

    See Also
    --------
    attention : the same weights applied to values, optionally in blocks.
    received_mass : the total weight each key receives.

    Examples
    --------
    >>> import numpy as np, dnorm
    >>> scores = np.array([[4.0, 0.0], [4.0, 0.0]])
    >>> dnorm.normalize(scores, "softmax").sum(axis=0).round(3)
    array([1.964, 0.036])
    >>> dnorm.normalize(scores, "doubly").sum(axis=0)
    array([1., 1.])
    """
    per_head = check.PerHead(alpha, sink, length_scale, bias)
    xp = check.namespace(scores=scores, mask=mask, **per_head.arrays())
    check.floating(scores, "scores", xp=xp)
    scheme, offset = check.scheme_and_offset(scheme, causal=causal, n_iter=n_iter, shape=tuple(scores.shape[-2:]))
    check.flag(log, "log")
    check.mask(mask, tuple(scores.shape), name="mask", xp=xp)
    check.alpha(alpha, tuple(scores.shape[:-2]), xp=xp)
    asked = check.Asked(scheme, sink=sink, length_scale=length_scale, bias=bias, attend_current=attend_current)
    check.attention_family(scheme, asked, tuple(scores.shape[:-2]), xp=xp)
    request = check.Request(
        scheme, offset, 1.0, tuple(scores.shape[:-2]), 1, n_iter=n_iter, sink=sink is not None,
        attend_current=attend_current,
    )  # fmt: skip
    return routing.weights(scores, mask, per_head, request, log=log, xp=xp)


@shared_docstring
def attention(
    query: Array,
    key: Array,
    value: Array,
    /,
    scheme: str = "doubly",
    *,
    mask: Array | None = None,
    causal: bool | str = False,
    scale: float | None = None,
    alpha: float | Array = 0.5,
    n_iter: int = 3,
    block_size: int | None = None,
    softcap: float | None = None,
    dropout_p: float = 0.0,
    dropout_key: object = None,
    kernel: str = "auto",
    sink: float | Array | None = None,
    length_scale: float | Array | None = None,
    bias: float | Array | None = None,
    attend_current: bool = False,
) -> Array:
    """Attention output ``A @ value`` of a scheme, with ``S = query @ key.T * scale``.

    {schemes}

    Parameters
    ----------
    query : array of shape (..., T, D)
    key : array of shape (..., K, D)
    value : array of shape (..., K, Dv)
        The leading dimensions of the three broadcast together, or, for
        grouped-query attention, those before the heads (axis -3) do and the
        query heads are a multiple ``G`` of the key and value heads: key head
        ``h`` serves query heads ``h * G`` to ``h * G + G - 1``; the kernels
        copy no keys or values (the CPU torch fast path repeats them for
        torch's 4-D fused kernels). torch nested jagged tensors of shape
        ``(B, ..., j, D)`` (ragged along axis -2, as torch's
        ``scaled_dot_product_attention`` takes them) are a packed batch: each
        sequence is normalized on its own (see :func:`varlen_attention`), and
        the output is nested too; they take no ``mask``.
    {scheme_param}
    {mask_param}
    {causal_param}
    scale : float, optional
        Multiplies ``query @ key.T``; defaults to ``1 / sqrt(D)``.
    {alpha_param}
    {n_iter_param}
    block_size : int, optional
        Query rows per block. The scores are materialized when they fit in
        256 MiB, else processed in blocks of about 16 MiB; ``causal`` streams
        blocks of about 2 MiB, each computing only the keys up to its last
        row; an explicit ``block_size`` decides instead. In blocks, peak
        memory is ``O((T + K) * D + block_size * K)`` per head (spec:
        chunked.md); the scores are recomputed once per pass over them (two
        for ``doubly``, ``n_iter + 1`` for ``sinkhorn``, one for ``softmax``
        and the causal variants). On an accelerator (CUDA torch tensors, CuPy)
        every byte budget is 64 times larger.

        Gradients (torch autograd, JAX ``grad``) come from a backward pass
        that recomputes blocks of scores from O(T + K) saved statistics per
        head (spec DEF-BLOCKED-BACKWARD): training takes the memory of the
        forward pass, never the ``(T, K)`` scores, for every scheme, mask and
        block size. Gradients reach ``query``, ``key``, ``value``, a floating
        ``mask`` and an array ``alpha``. On torch they are first order only
        (``create_graph=True`` raises); JAX differentiates them again.

        On CPU torch tensors, ``"softmax"``, ``"doubly"`` and ``"hybrid"``
        without ``causal`` and without ``block_size`` run forward and backward
        through torch's fused attention kernels with the bias ``-c`` (spec
        THM-DNAS-AS-BIASED-SOFTMAX, THM-GRADIENT-AS-ATTENTION) and never hold
        the ``(T, K)`` scores; a floating ``mask`` that requires a gradient
        takes the kernels instead. There ``c`` is one float per key, so at
        scores of magnitude 1e4 in float32 the weights carry relative errors
        near 1e-3; pass ``block_size`` for the kernels' exact split.
    softcap : float, optional
        Bound the scores before masking and normalization: ``softcap *
        tanh(S / softcap)`` (Gemma's logit softcapping, spec DEF-SOFTCAP).
        The column statistic is that of the capped scores.
    dropout_p : float, default 0.0
        Drop each attention weight with this probability after the
        normalization and scale the kept ones by ``1 / (1 - dropout_p)``, as
        torch does (spec DEF-DROPOUT); the column statistic is that of all the
        weights. Applied whenever it is above 0 (as torch's
        ``scaled_dot_product_attention``: pass 0 in evaluation). The mask is a
        hash of one seed and the positions, regenerated block by block: no
        ``(T, K)`` mask is stored, and gradients use the same mask.
    dropout_key : optional
        Where the seed comes from: for torch tensors torch's default generator
        (None) or a ``torch.Generator``; for JAX arrays a key
        (``jax.random.key``), required; for NumPy arrays a
        ``numpy.random.Generator``, required. Other libraries raise
        ``TypeError`` for ``dropout_p > 0``.
    {kernel_param}
    {family_params}

    Returns
    -------
    array of shape (..., T, Dv)
        In the namespace, device and dtype of ``query``. A query that may
        attend no key gets a zero row.

    {raises}

    See Also
    --------
    normalize : the weights themselves.
    scaled_dot_product_attention : the same with torch's signature.
    """
    if getattr(query, "is_nested", False):  # torch's nested jagged tensors: a packed batch
        from ._packed import nested_attention

        extra = {} if mask is None else {"mask": mask}
        family = {"sink": sink, "length_scale": length_scale, "bias": bias, "attend_current": attend_current}
        return nested_attention(
            query,
            key,
            value,
            scheme,
            causal=causal,
            scale=scale,
            alpha=alpha,
            n_iter=n_iter,
            block_size=block_size,
            softcap=softcap,
            dropout_p=dropout_p,
            dropout_key=dropout_key,
            kernel=kernel,
            **family,
            **extra,
        )
    asked = check.Asked(
        scheme=scheme, causal=causal, scale=scale, n_iter=n_iter, block_size=block_size, softcap=softcap,
        dropout_p=dropout_p, kernel=kernel, sink=sink, length_scale=length_scale, bias=bias,
        attend_current=attend_current,
    )  # fmt: skip
    per_head = check.per_head_of(alpha, asked)
    xp = check.namespace(query=query, key=key, value=value, mask=mask, **per_head.arrays())
    request = check.attention_request(query, key, value, mask, alpha, asked, xp=xp)
    seed = random.seed(dropout_key, query, xp=xp) if request.dropout_p > 0 else None
    return routing.attention(query, key, value, mask, per_head, seed, request, xp=xp)


def received_mass(weights: Array, /, *, mask: Array | None = None, sink: bool = False) -> Array:
    """Total attention each key receives: ``m_j = sum_i A[i, j]`` (spec DEF-RECEIVED-MASS).

    Parameters
    ----------
    weights : array of shape (..., T, K)
        Attention weights, for instance from :func:`normalize`.
    mask : array, optional
        Which entries count, broadcastable to ``(..., T, K)``: boolean (True =
        counted) or floating (entries that are ``-inf`` do not count), as the
        attention mask. Use it to leave out padding queries.
    sink : bool, default False
        The weights are those of the real keys of rows with a sink (spec
        DEF-SINK): append the sink's mass, ``sum_i (1 - sum_j A[i, j])`` over
        the rows the mask counts (every row without a mask), as key ``K``.

    Returns
    -------
    array of shape (..., K), or (..., K + 1) with ``sink``
        In the namespace, device and dtype of ``weights``. Rows of every
        normalized scheme sum to one (with a sink, counting the sink's
        weight), so the masses sum to ``T``.

    Raises
    ------
    TypeError
        For non-floating ``weights``, a mask of another dtype or library.
    ValueError
        For fewer than two dimensions or a mask that does not broadcast.

    Examples
    --------
    >>> import numpy as np, dnorm
    >>> dnorm.received_mass(np.array([[0.5, 0.5], [1.0, 0.0]]))
    array([1.5, 0.5])
    """
    xp = check.namespace(weights=weights, mask=mask)
    check.floating(weights, "weights", xp=xp)
    check.mask(mask, tuple(weights.shape), name="mask", xp=xp)
    check.flag(sink, "sink")
    work, out_dtype = budget.compute_dtype(weights.dtype, xp=xp)
    w = budget.cast(weights, work, xp=xp)
    if mask is not None:
        w = xp.where(masks.allowed(mask, xp=xp), w, 0.0)
    mass = xp.sum(w, axis=-2)
    if sink:
        rows = 1.0 - xp.sum(w, axis=-1)
        if mask is not None:  # a row the mask counts: one that may attend some key
            counted = xp.any(xp.broadcast_to(masks.allowed(mask, xp=xp), tuple(weights.shape)), axis=-1)
            rows = xp.where(counted, rows, 0.0)
        mass = xp.concat((mass, xp.sum(rows, axis=-1, keepdims=True)), axis=-1)
    return budget.cast(mass, out_dtype, xp=xp)
