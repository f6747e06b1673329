"""Docstring sections shared by the public functions, so each is written once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

#: The guarantee of the theorems on received mass, in the words README.md and docs/index.md use too
#: (tests/test_claims.py compares the three, markup aside).
GUARANTEE = """Without a mask, under ``"doubly"`` every key ``j`` receives the mass
    ``m_j = sum_i A[i, j] >= 1/K``, where the ``T`` rows of ``A`` each sum to 1, so
    the ``K`` masses sum to ``T`` (spec THM-MASS-LOWER-BOUND). Under a mask, a key
    that some query may attend receives ``m_j >= 1/k_j``, with ``k_j`` the largest
    number of keys that a query attending ``j`` may attend, and a key that no
    query may attend receives 0 (spec THM-MASS-LOWER-BOUND-MASKED); with
    ``causal=True``, ``k_j`` is the number of keys that the first query attending
    ``j`` may attend (spec THM-CAUSAL-MASS-LOWER-BOUND). ``"sinkhorn"`` has the
    same bounds (it has no causal form), ``"hybrid"`` ``alpha`` times them (spec
    THM-HYBRID-MASS-BOUND) and ``"softmax"`` none (spec
    THM-SOFTMAX-EXPLAINS-AWAY). The computed weights keep the bounds up to
    rounding (spec THM-MASS-BOUND-FLOAT)."""

_SECTIONS = {
    "schemes": """The normalized schemes are a row softmax of the scores plus a per-key
    bias (spec DEF-SOFTMAX, DEF-DNAS, DEF-HYBRID, DEF-SINKHORN); the rows of
    sigmoid and stick-breaking attention need not sum to one:

    * ``"softmax"``: ``A[i, j] = exp(S[i, j]) / sum_j' exp(S[i, j'])``.
    * ``"doubly"`` (the default; doubly-normalized attention, Ding et al. 2020):
      normalize over the queries, then over the keys, computed as
      ``rowsoftmax(S - c)`` with ``c_j = logsumexp_i S[i, j]`` over the
      queries allowed to see key ``j`` (spec THM-DNAS-AS-BIASED-SOFTMAX).
    * ``"hybrid"``: ``alpha * doubly + (1 - alpha) * softmax``.
    * ``"sinkhorn"``: ``n_iter`` alternating column and row normalizations,
      column first, in the log domain; ``n_iter=1`` is ``"doubly"`` exactly.
    * ``"sigmoid"``: ``A = sigmoid(S + b)``, each key weighed alone; rows need
      not sum to one (spec DEF-SIGMOID).
    * ``"stick-breaking"`` (causal only): with ``beta = sigmoid(S)``, the
      nearest earlier key takes ``beta`` of the stick, the next ``beta`` of
      what is left, and so on; the remainder goes nowhere (spec
      DEF-STICK-BREAKING).

    No key is explained away under the doubly-normalized schemes.
    {guarantee}

    All of it is computed in the log domain: the column statistic is kept as
    (column max, log-sum) and applied as ``(S - max) - log(sum)``, and no
    product of probabilities that could underflow is ever formed
    (spec numerics.md).""",
    "scheme_param": """scheme : str, default "doubly"
        The normalization scheme: ``"doubly"``, ``"softmax"``, ``"hybrid"``,
        ``"sinkhorn"``, ``"sigmoid"`` or ``"stick-breaking"``.""",
    "family_params": """sink : float or array, optional
        A learned sink (spec DEF-SINK): one more key, seen by every query, with
        score ``sink`` (added as it is: no scale, mask or softcap) and value 0;
        a number or a real floating array broadcastable to the leading (batch,
        head) dimensions, differentiable. Its weight is what a row leaves of 1
        to the real keys. ``"softmax"`` with ``sink=0.0`` is the off-by-one
        softmax (softmax plus one); under ``"doubly"`` every real key keeps a
        mass of at least ``1/(K + 1)`` (spec THM-SINK-MASS-BOUND). The
        normalized schemes only (not ``"sigmoid"`` or ``"stick-breaking"``).
    length_scale : float or array, optional
        Scalable softmax (SSMax, spec DEF-LENGTH-SCALE): the scores of query
        ``i`` multiplied by ``length_scale * log(n_i)``, ``n_i`` the keys it may
        attend after masking, causal included; a number or an array over the
        leading dimensions (one per head, say), differentiable. Every scheme.
    bias : float or array, optional
        The bias ``b`` of ``"sigmoid"`` (spec DEF-SIGMOID), ``A = sigmoid(S +
        b)``: a number or an array over the leading dimensions, differentiable;
        by default ``-log(n_i)`` for query ``i``, which is ``-log K`` without a
        mask or ``causal``.
    attend_current : bool, default False
        ``"stick-breaking"`` only: query ``i`` weighs its own position too (as
        flash-linear-attention's ``attend_current``); by default the keys
        strictly before it, as the reference implementations.""",
    "mask_param": """mask : array, optional
        Broadcastable to ``(..., T, K)``, as in torch's
        ``scaled_dot_product_attention``: boolean (True = may attend) or
        floating (added to the scores). A query with no allowed key gets an
        all-zero row; a key no query may see gets zero mass. Passing a
        triangular mask gives the bidirectional masked definition, whose
        column statistic reads later queries (spec THM-MASKED-DNAS-NOT-CAUSAL).""",
    "causal_param": """causal : {False, True, "top-left", "bottom-right"}, default False
        A causal mask, combined with ``mask`` (a key must be allowed by both),
        and strict causality: row ``i`` depends on no query, key or value
        after position ``i`` (spec THM-STRICT-CAUSALITY). For ``"doubly"`` and
        ``"hybrid"`` the column statistic becomes the running
        ``C[i, j] = logsumexp_{j <= i' <= i} S[i', j]`` (spec DEF-CAUSAL-DNAS), so
        each key's mass is normalized over the queries seen so far.
        ``"top-left"``: query ``i`` sees keys ``j <= i`` (torch's
        ``is_causal``); ``"bottom-right"``: the ``T`` queries are the last
        ``T`` of the ``K`` positions, query ``i`` sees keys ``j <= i + K - T``
        (for ``"doubly"`` and ``"hybrid"`` with ``T < K`` that needs the
        earlier queries' statistic: use :func:`dnorm.decode`). ``True`` means
        both when ``T == K`` and raises ``ValueError`` otherwise (spec
        DEF-CAUSAL-MASK). ``"sinkhorn"`` has no causal form and raises
        ``NotImplementedError``.""",
    "alpha_param": """alpha : float or array, default 0.5
        Weight of ``"doubly"`` in ``"hybrid"``, in [0, 1]: a number, or a real
        floating array broadcastable to the leading (batch, head) dimensions,
        for instance one value per head; differentiable. Ignored by the other
        schemes. Array values are range-checked unless the array is lazy (JAX,
        Dask), where reading them would force a computation.""",
    "n_iter_param": """n_iter : int, default 3
        Column normalizations of ``"sinkhorn"``, at least 1. Ignored by the
        other schemes.""",
    "kernel_param": """kernel : {"auto", "array-api", "torch", "dask", "triton", "numba"}, default "auto"
        The implementation that computes the call. ``"auto"`` chooses: Dask
        arrays whose sequence and feature axes are one chunk each run one
        task per chunk (``"dask"``); CUDA torch tensors (and CuPy arrays,
        through DLPack) take dnorm's fused Triton kernels when ``triton``
        imports (``"triton"``: every scheme but stick-breaking and every
        option, forward, backward and decoding; on CPU tensors they run through Triton's interpreter
        when ``TRITON_INTERPRET=1`` is set and ``"triton"`` is asked for);
        NumPy arrays and CPU torch tensors of at least 2**16 scores (a
        decoding step: 2**14) take dnorm's compiled CPU kernels when numba
        is installed (``"numba"``, ``pip install 'dnorm[numba]'``: softmax,
        doubly, hybrid and Sinkhorn, causal or not, forward, backward and
        decoding; no sigmoid or stick-breaking rows, sink, softcap, dropout,
        ``block_size`` or gradient of a floating mask); other
        CPU torch tensors with ``"softmax"``, ``"doubly"`` or ``"hybrid"``
        and no ``causal``, sink, ``block_size``, ``softcap`` or dropout go
        through torch's fused attention kernels (``"torch"``); every other
        call takes the array-API kernels (``"array-api"``), which serve every
        call. A named implementation that cannot serve the call raises
        ``ValueError`` saying why; it never falls back to another.""",
    "raises": """Raises
    ------
    TypeError
        For non-floating or complex arrays, arrays of different libraries, and
        options of the wrong type; the message names the argument.
    ValueError
        For shapes that do not fit together, an unknown scheme or kernel,
        ``alpha`` outside [0, 1] (NaN included), ``n_iter < 1``, a
        ``kernel`` that cannot serve the call, and no ``scale`` with ``D = 0``
        (``1 / sqrt(D)`` has no value). No queries or no keys are not errors:
        the output has no rows, or zero rows (spec DEF-EMPTY-ROWS-AND-KEYS).
        An option of the family given to a scheme it does not apply to (a
        ``sink`` to ``"sigmoid"`` or ``"stick-breaking"``, a ``bias`` to any
        scheme but ``"sigmoid"``, ``attend_current`` to any but
        ``"stick-breaking"``), the error naming what to use instead.
    NotImplementedError
        For ``scheme="sinkhorn"`` with ``causal=True``, and
        ``scheme="stick-breaking"`` without it.""",
}


def shared_docstring(func: F) -> F:
    """Fill the ``{name}`` placeholders of ``func``'s docstring with the shared sections."""
    doc = func.__doc__ or ""
    for name, text in _SECTIONS.items():
        text = text.replace("{guarantee}", GUARANTEE)
        doc = doc.replace("{" + name + "}", text)
    func.__doc__ = doc
    return func
