"""The ``"numba"`` implementation: dnorm's compiled CPU kernels (:mod:`dnorm._cpu`) behind the routing contract.

It serves NumPy arrays and torch CPU tensors, float32 and float64 (half precision computes in float32), every
normalized scheme (softmax, doubly, hybrid, Sinkhorn), causal or not, masks, grouped heads, training and decoding;
``length_scale`` too, which the routing layer applies to the queries before any implementation runs. It refuses
the rows that are not a softmax (sigmoid, stick-breaking), a sink, a softcap, dropout, a floating mask that asks
for its gradient, an explicit ``block_size`` (the array-API kernels' blocks, which its own blocks of keys are
not) and ``torch.compile`` (its passes are not traced). ``"auto"`` offers it calls of
at least :data:`AUTO_SCORES` scores (decoding steps from :data:`AUTO_DECODE_SCORES`), where its measured time
beats the array-API kernels and torch's fused path (asv_benchmarks/README.md, "Compiled CPU kernels"); smaller
calls would pay its dispatch, and the first call in a process pays loading (or, once per machine, compiling) its
machine code.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .._kernels import schemes
from .._kernels.logsumexp import LogSumExp

Array = Any

#: Scores per call (leading size x T x K) from which ``"auto"`` takes the compiled kernels. Measured forward,
#: float32, 4 heads, D = 64, 2 threads: at 4 x 128 x 128 they took 1.3-1.6 ms against 4-10 ms for the array-API
#: kernels and torch's fused path (NumPy, torch; doubly and softmax); at 4 x 64 x 64 about even.
AUTO_SCORES = 1 << 16
#: The same for a decoding step (one query over a cache): NumPy, 8 query heads over 2, faster from 2048 keys
#: (0.9 against 2.1 ms for doubly), within 10% of the array-API kernels at 1024 keys and below.
AUTO_DECODE_SCORES = 1 << 14
_NEEDS = ("numba", "scipy", "threadpoolctl")


class Compiled:
    """numba-compiled forward, backward and decoding passes for the schemes whose rows are a softmax, on the CPU."""

    name = "numba"
    upcasts = True

    def refuses(self, call: Any, query: Array, key: Array, value: Array, mask: Array | None, /) -> str | None:
        request = call.request
        if call.library not in ("numpy", "torch"):
            return f"it takes NumPy arrays and torch CPU tensors, got {type(query).__module__}.{type(query).__name__}"
        missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
        if missing:
            return f"{', '.join(missing)} not installed: pip install 'dnorm[numba]'"
        if call.accelerated:
            return "it runs on the CPU; CUDA tensors take kernel='triton' or 'torch'"
        if call.symbolic:
            return "under torch.compile its passes are not traced; compile with kernel='array-api'"
        if str(call.dtype).rsplit(".", 1)[-1] not in ("float32", "float64"):
            return f"it computes in float32 and float64, got {call.dtype}"
        rows = schemes.SCHEMES[request.scheme].rows
        if rows != "normalized":
            return f"its passes normalize every row with a softmax, which scheme={request.scheme!r} does not ({rows})"
        if request.sink:
            return "it takes no sink (spec DEF-SINK): kernel='array-api' computes it"
        if request.softcap is not None:
            return "it takes no softcap (kernel='array-api' does)"
        if request.block_size is not None:
            return "block_size asks for the array-API kernels' blocks; the compiled kernels choose their own"
        if call.seeded:
            return "dropout's mask is a hash of dnorm's (spec DEF-DROPOUT), which it does not draw"
        if mask is not None and getattr(mask, "requires_grad", False):
            return "a floating mask's gradient (a learned bias) is computed by kernel='array-api'"
        least = AUTO_DECODE_SCORES if call.entry == "decode" else AUTO_SCORES
        if request.kernel == "auto" and _size(call) < least:
            return f"'auto' takes it from {least} scores per call, where it was measured faster"
        return None

    def options(self, call: Any, query: Array, key: Array, mask: Array | None, /, *, xp: Any) -> Any:
        from .launch import CompiledOptions

        request = call.request
        plan = schemes.plan(request.scheme, causal=request.causal, n_iter=request.n_iter)
        return CompiledOptions(plan, request.causal, request.scale, request.offset or 0)

    def infer(self, *arrays: Array, options: Any, xp: Any) -> Array:
        return self.forward(*arrays, options=options, xp=xp)[0]

    def forward(
        self,
        query: Array,
        key: Array,
        value: Array,
        mask: Array | None,
        params: schemes.Parameters,
        seed: Array | None,
        /,
        *,
        options: Any,
        xp: Any,
    ) -> tuple[Array, Any]:
        from . import launch

        out, saved, _ = launch.forward(query, key, value, mask, params.alpha, None, options=options)
        return out, saved

    def backward(
        self,
        query: Array,
        key: Array,
        value: Array,
        mask: Array | None,
        params: schemes.Parameters,
        seed: Array | None,
        out: Array,
        residuals: Any,
        grad: Array,
        /,
        *,
        options: Any,
        mask_grad: bool,
        xp: Any,
    ) -> tuple[Array, Array, Array, Array | None, schemes.Parameters]:
        from . import launch

        alpha = params.alpha
        d_q, d_k, d_v, d_alpha = launch.backward(query, key, value, mask, alpha, out, residuals, grad, options=options)
        return d_q, d_k, d_v, None, schemes.Parameters(d_alpha)

    def decode(
        self,
        query: Array,
        key: Array,
        value: Array,
        mask: Array | None,
        params: schemes.Parameters,
        carry: LogSumExp | None,
        /,
        *,
        options: Any,
        xp: Any,
    ) -> tuple[Array, LogSumExp | None]:
        from . import launch

        out, _, state = launch.forward(query, key, value, mask, params.alpha, carry and tuple(carry), options=options)
        return out, None if state is None else LogSumExp(*state)


def _size(call: Any) -> int:
    size = call.n_queries * call.n_keys
    for n in call.lead:
        size *= n
    return size
