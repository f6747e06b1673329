"""Launch configurations: block sizes, and the warps and pipeline stages each kernel is autotuned over on a GPU.

The block sizes are fixed per call (:func:`blocks_for`): the causal carries are
saved at every query block's start, so every pass of one call (forward and
backward) must share them. What each kernel may choose alone, changing what it
computes by rounding at most (the order of a reduction), is its number of warps
and of software-pipeline stages; on a GPU each kernel is autotuned over :data:`CONFIGS`, keyed on its
compile-time switches, its head size and its tensors' dtypes (not the lengths:
the first call of a kind picks for every length). Every kernel writes its
outputs without reading them, so the autotuner's repeated runs leave them
right. Under Triton's interpreter, or with ``DNORM_TRITON_AUTOTUNE=0``, each
kernel launches with Triton's default configuration.
"""

from __future__ import annotations

import os
from typing import Any

import triton

#: What the autotuner times for each kernel on a GPU (block sizes stay those of :func:`blocks_for`).
CONFIGS = tuple(triton.Config({}, num_warps=warps, num_stages=stages) for warps in (4, 8) for stages in (2, 3))


def interpreted() -> bool:
    """Whether Triton runs its interpreter on CPU tensors (``TRITON_INTERPRET=1``), not compiled GPU code."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def autotuning() -> bool:
    """Whether launches go through the autotuner: compiled kernels, unless ``DNORM_TRITON_AUTOTUNE=0``."""
    return not interpreted() and os.environ.get("DNORM_TRITON_AUTOTUNE", "1") != "0"


def blocks_for(n_q: int, n_k: int, head_dim: int, /) -> tuple[int, int]:
    """Query and key block sizes: one small fixed pair under the interpreter, FlashAttention's on a GPU."""
    if interpreted():
        return 16, 16
    return (128, 64) if head_dim <= 64 else (64, 64)


class Tunable:
    """A kernel launched as ``kernel[grid](...)``, through its autotuner when :func:`autotuning`.

    ``fixed`` is the kernel itself; ``tuned`` the autotuner over :data:`CONFIGS`
    keyed on the kernel's compile-time arguments and its head size ``d``, or None
    where the interpreter compiled it (it has no GPU to time).
    """

    def __init__(self, kernel: Any, /) -> None:
        self.fixed = kernel
        self.tuned = None
        if not interpreted():
            key = [param.name for param in kernel.params if param.is_constexpr or param.name == "d"]
            self.tuned = triton.autotune(configs=list(CONFIGS), key=key)(kernel)

    def __getitem__(self, grid: tuple[int, ...]) -> Any:
        launcher = self.tuned if self.tuned is not None and autotuning() else self.fixed
        return launcher[grid]


def tunable(kernel: Any, /) -> Tunable:
    """Decorate a ``@triton.jit`` kernel (applied above it) to launch through :class:`Tunable`."""
    return Tunable(kernel)
