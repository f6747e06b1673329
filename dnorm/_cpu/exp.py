"""An exponential that the compiler vectorizes: ``exp`` to one unit in the last place, for float32 and float64.

LLVM turns ``math.exp`` in a loop into one call of the C library per number (about 2-3 ns here); this one is a
polynomial and a few integer operations, which the loops of :mod:`.forward` and :mod:`.backward` run eight or
sixteen numbers at a time (about 0.4 ns). Cody and Waite's reduction ``x = n log 2 + r``, ``|r| <= log(2) / 2``,
then Taylor's series of ``exp(r)`` to degree 13 (float64) or 7 (float32), scaled by ``2^n`` built from its bits.
Below the smallest normal result it returns 0 (the exact value is then below 2.3e-308, or 1.2e-38 in float32),
0 for ``-inf``; it is compiled without fast-math reassociation, which would undo the reduction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

F32 = np.float32

# The reduction's constants: log(2) split so that n * LN2_HI is exact for every n reached (fdlibm's and Cephes').
LN2_HI_64, LN2_LO_64 = 6.93147180369123816490e-01, 1.90821492927058770002e-10
LN2_HI_32, LN2_LO_32 = F32(0.693359375), F32(-2.12194440e-4)
LOW_64, HIGH_64 = -708.3, 709.7
LOW_32, HIGH_32 = F32(-87.3), F32(88.7)
ONE_32, HALF_32, LOG2E_32 = F32(1.0), F32(0.5), F32(1.4426950408889634)
INV_FACT_32 = tuple(F32(1.0 / f) for f in (2.0, 6.0, 24.0, 120.0, 720.0, 5040.0))


@intrinsic
def _float64_from_bits(typingctx: Any, bits: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _float32_from_bits(typingctx: Any, bits: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(fastmath={"contract"}, cache=True)
def exp64(x: float) -> float:  # pragma: no cover - compiled
    y = min(max(x, LOW_64), HIGH_64)
    n = np.floor(y * 1.4426950408889634 + 0.5)
    r = y - n * LN2_HI_64 - n * LN2_LO_64
    p = 1.0 / 6227020800.0
    p = 1.0 / 479001600.0 + r * p
    p = 1.0 / 39916800.0 + r * p
    p = 1.0 / 3628800.0 + r * p
    p = 1.0 / 362880.0 + r * p
    p = 1.0 / 40320.0 + r * p
    p = 1.0 / 5040.0 + r * p
    p = 1.0 / 720.0 + r * p
    p = 1.0 / 120.0 + r * p
    p = 1.0 / 24.0 + r * p
    p = 1.0 / 6.0 + r * p
    p = 0.5 + r * p
    p = 1.0 + r * p
    p = 1.0 + r * p
    scale: float = _float64_from_bits((np.int64(n) + 1023) << 52)  # type: ignore[call-arg]
    return p * scale if x >= LOW_64 else 0.0


@njit(fastmath={"contract"}, cache=True)
def exp32(x: Any) -> Any:  # pragma: no cover - compiled
    y = min(max(x, LOW_32), HIGH_32)
    n = np.floor(y * LOG2E_32 + HALF_32)
    r = y - n * LN2_HI_32 - n * LN2_LO_32
    p = INV_FACT_32[5]
    p = INV_FACT_32[4] + r * p
    p = INV_FACT_32[3] + r * p
    p = INV_FACT_32[2] + r * p
    p = INV_FACT_32[1] + r * p
    p = INV_FACT_32[0] + r * p
    p = ONE_32 + r * p
    p = ONE_32 + r * p
    scale: Any = _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))  # type: ignore[call-arg]
    return p * scale if x >= LOW_32 else F32(0.0)


def fexp(x):  # numba compares the stub's signature with the overload's
    """``exp(x)`` in ``x``'s precision, inside compiled code only (:func:`exp32` or :func:`exp64`)."""
    msg = "fexp runs inside numba-compiled functions"
    raise NotImplementedError(msg)


@overload(fexp, jit_options={"fastmath": {"contract"}})
def _fexp(x):
    if x == types.float32:
        return lambda x: exp32(x)
    return lambda x: exp64(x)
