"""Two small kernels launched through dnorm's launcher: one the compiler refuses (operands of two dtypes in one
``tl.dot``: the interpreter runs it without complaint, which is why the compile-only mode exists), one it takes.

Imported only in the subprocesses of tests/test_gpu_compile.py, where Triton compiles (no ``TRITON_INTERPRET``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dnorm._triton.configs import tunable


@tunable
@triton.jit
def mixed_dot(A, B, OUT, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    a = tl.load(A + offs[:, None] * BLOCK + offs[None, :]).to(tl.float32)  # float32, B stays bfloat16
    b = tl.load(B + offs[:, None] * BLOCK + offs[None, :])
    tl.store(OUT + offs[:, None] * BLOCK + offs[None, :], tl.dot(a, b))


@tunable
@triton.jit
def product(A, B, OUT, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    a = tl.load(A + offs[:, None] * BLOCK + offs[None, :])
    b = tl.load(B + offs[:, None] * BLOCK + offs[None, :])
    tl.store(OUT + offs[:, None] * BLOCK + offs[None, :], tl.dot(a, b))


def launch(kernel: object) -> None:
    a, b = torch.zeros(16, 16, dtype=torch.bfloat16), torch.zeros(16, 16, dtype=torch.bfloat16)
    kernel[(1,)](a, b, torch.empty(16, 16), BLOCK=16)  # type: ignore[index]
