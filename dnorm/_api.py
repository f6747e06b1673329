"""The public functions: check the arguments, resolve the namespace once, hand over to :mod:`dnorm._dispatch`.

Nothing here computes attention itself: :mod:`dnorm._kernels` does, on any
array-API namespace, and :mod:`dnorm._fastpath` holds backend fast paths that
the tests check against the kernels.
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType
from typing import Any

from . import _dispatch as dispatch
from . import _heads as heads
from . import _random as random
from . import _validate as check
from ._docs import shared_docstring
from ._kernels import attention as kernels
from ._kernels import blocked
from ._kernels.scores import from_matrix

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

    Returns
    -------
    array of shape (..., T, K)
        Weights ``A`` (rows sum to one; spec THM-ROWS-SUM-TO-ONE), or their
        logarithm, in the namespace, device and dtype of ``scores``.

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
    xp = check.namespace(scores=scores, mask=mask, alpha=dispatch.array_or_none(alpha))
    check.floating(scores, "scores", xp=xp)
    scheme, offset = _options(scheme, causal=causal, n_iter=n_iter, shape=tuple(scores.shape[-2:]))
    check.flag(log, "log")
    check.mask(mask, tuple(scores.shape), name="mask", xp=xp)
    check.alpha(alpha, tuple(scores.shape[:-2]), xp=xp)
    work, out_dtype = dispatch.compute_dtype(scores.dtype, xp=xp)
    work_mask = dispatch.cast_mask(mask, work, xp=xp)
    source = from_matrix(
        dispatch.cast(scores, work, xp=xp), mask=work_mask, causal=offset is not None, offset=offset or 0
    )
    result = blocked.weights(
        source,
        ((0, scores.shape[-2]),),
        scheme=scheme,
        causal=offset is not None,
        alpha=dispatch.alpha_array(alpha, work, scores, xp=xp),
        n_iter=n_iter,
        log=log,
        xp=xp,
        doubling=dispatch.symbolic_lengths(xp),
    )
    return dispatch.cast(result, out_dtype, xp=xp)


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
            **extra,
        )
    xp = check.namespace(query=query, key=key, value=value, mask=mask, alpha=dispatch.array_or_none(alpha))
    lead, groups = checked_qkv(query, key, value, xp=xp)
    n_queries, n_keys = query.shape[-2], key.shape[-2]
    scheme, offset = _options(scheme, causal=causal, n_iter=n_iter, shape=(n_queries, n_keys))
    causal = offset is not None
    factor = check.scale(scale, query.shape[-1])
    check.mask(mask, (*lead, n_queries, n_keys), name="mask", xp=xp)
    check.alpha(alpha, lead, xp=xp)
    if block_size is not None:
        check.positive_int(block_size, "block_size")
    softcap = check.softcap(softcap)
    dropout_p = check.probability(dropout_p, "dropout_p")
    seed = random.seed(dropout_key, query, xp=xp) if dropout_p > 0 else None
    if check.library(xp) == "dask":
        from ._fastpath import dask as chunkwise

        if chunkwise.supported(query, key, value, mask, alpha, groups=groups):  # one task per chunk
            aligned = False if offset is None else "top-left" if offset == 0 else "bottom-right"
            inner = {"causal": aligned, "scale": factor, "n_iter": n_iter, "block_size": block_size}
            return chunkwise.attention(query, key, value, mask, alpha, scheme, softcap=softcap, **inner)
    work, out_dtype = dispatch.compute_dtype(query.dtype, xp=xp)
    q, k, v = (dispatch.cast(x, work, xp=xp) for x in (query, key, value))
    work_alpha = dispatch.alpha_array(alpha, work, query, xp=xp)
    work_mask = dispatch.cast_mask(mask, work, xp=xp)
    # grouped-query attention: (..., H, G, T, D) queries over (..., H, 1, K, D) keys
    (q, work_mask, work_alpha), (k, v) = heads.split((q, work_mask, work_alpha), (k, v), groups, xp=xp)
    if groups > 1:
        lead = (*lead[:-1], lead[-1] // groups, groups)
    impl: ModuleType = kernels
    options: Any
    if (
        block_size is None
        and not causal
        and scheme != "sinkhorn"
        and softcap is None
        and seed is None
        and dispatch.torch_fastpath_supports(q, k, v, work_mask, work_alpha, xp=xp)
    ):
        from ._fastpath import torch as fused

        impl, options = fused, fused.Options(scheme, factor)
    else:
        scale_up = dispatch.ACCELERATOR_SCALE if check.accelerated(q, xp) else 1
        lead = dispatch.task_lead(lead, q, k, work_mask, xp=xp)  # Dask: the budgets apply to one chunk
        options = dispatch.kernel_options(
            scheme, offset, n_iter, factor, lead, n_queries, n_keys, block_size, work, xp=xp, budget=scale_up
        )
        options = replace(options, softcap=softcap, dropout=dropout_p)
    out = dispatch.run(impl, q, k, v, work_mask, work_alpha, seed, options=options, xp=xp)
    return dispatch.cast(heads.merge(out, groups, xp=xp), out_dtype, xp=xp)


def received_mass(weights: Array, /, *, mask: Array | None = None) -> Array:
    """Total attention each key receives: ``m_j = sum_i A[i, j]`` (spec DEF-RECEIVED-MASS).

    Parameters
    ----------
    weights : array of shape (..., T, K)
        Attention weights, for instance from :func:`normalize`.
    mask : array, optional
        Which entries count, broadcastable to ``(..., T, K)``: boolean (True =
        counted) or floating (entries that are ``-inf`` do not count), as the
        attention mask. Use it to leave out padding queries.

    Returns
    -------
    array of shape (..., K)
        In the namespace, device and dtype of ``weights``. Rows of every
        scheme sum to one, so the masses sum to ``T``.

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
    work, out_dtype = dispatch.compute_dtype(weights.dtype, xp=xp)
    w = dispatch.cast(weights, work, xp=xp)
    if mask is not None:
        counted = mask if xp.isdtype(mask.dtype, "bool") else mask != -xp.inf
        w = xp.where(counted, w, 0.0)
    return dispatch.cast(xp.sum(w, axis=-2), out_dtype, xp=xp)


def checked_qkv(query: Array, key: Array, value: Array, /, *, xp: Any) -> tuple[tuple[int, ...], int]:
    """Check query, key and value against each other; return the leading shape of the output and the head groups.

    The leading dimensions broadcast together, or (grouped-query attention)
    those before axis -3 do and the query heads (axis -3) are a multiple of
    the key heads, which equal the value heads; the second number is then
    query heads per key head, else 1.
    """
    for name, x in (("query", query), ("key", key), ("value", value)):
        check.floating(x, name, xp=xp)
    if not query.dtype == key.dtype == value.dtype:
        msg = f"query, key and value must share one dtype, got {query.dtype}, {key.dtype}, {value.dtype}"
        raise TypeError(msg)
    if query.shape[-1] != key.shape[-1]:
        msg = f"query and key must have the same feature size D, got {query.shape[-1]} and {key.shape[-1]}"
        raise ValueError(msg)
    if key.shape[-2] != value.shape[-2]:
        msg = f"key and value must have the same length K, got {key.shape[-2]} and {value.shape[-2]}"
        raise ValueError(msg)
    shapes = {"query": query.shape[:-2], "key": key.shape[:-2], "value": value.shape[:-2]}
    heads, kv_heads = (query.shape[-3], key.shape[-3]) if min(query.ndim, key.ndim, value.ndim) >= 3 else (0, 0)
    if kv_heads in (0, 1) or heads == kv_heads or heads % kv_heads or value.shape[-3] != kv_heads:
        return check.broadcast_shapes(shapes, "leading dimensions"), 1
    outer = check.broadcast_shapes({n: s[:-1] for n, s in shapes.items()}, "leading dimensions before the heads")
    return (*outer, heads), heads // kv_heads


def _options(scheme: object, /, *, causal: object, n_iter: object, shape: tuple[int, int]) -> tuple[str, int | None]:
    """Check the options every scheme function takes; return the scheme and the causal offset (None: not causal)."""
    name = check.scheme(scheme)
    check.positive_int(n_iter, "n_iter")
    if name == "sinkhorn" and causal is not False and isinstance(causal, bool | str):
        msg = (
            "scheme='sinkhorn' has no strictly causal definition: use causal=False with an "
            "explicit triangular mask (bidirectional), or scheme='doubly' with causal=True"
        )
        raise NotImplementedError(msg)
    offset = check.causal(causal, *shape)
    if offset is not None and offset > 0 and name in ("doubly", "hybrid"):
        msg = (
            f"causal='bottom-right' with {shape[0]} queries for {shape[1]} keys needs the running column statistic "
            f"of the {offset} earlier queries, which scheme={name!r} cannot recover from the keys: use dnorm.decode "
            "with the state of the earlier positions"
        )
        raise ValueError(msg)
    return name, offset
