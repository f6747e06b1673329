"""How this process runs the Triton kernels: compiled on a GPU, interpreted on the CPU, or compiled only.

Read without importing triton, so that the routing layer can ask before it needs the kernels.

* *interpreted*: ``TRITON_INTERPRET=1`` was set before the kernels' modules
  were imported; every launch runs the kernel's Python source on CPU tensors.
* *compile-only*: inside :func:`dnorm._triton.compile_only.compiling`, every
  launch compiles its kernel for a chosen GPU target and does not run it; CPU
  tensors stand in for CUDA ones (only their dtypes and alignment matter).
* otherwise: compiled and launched on the CUDA device of the tensors.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any

#: The compile-only session of the current context, set and reset by ``compile_only.compiling`` only.
SESSION: ContextVar[Any] = ContextVar("dnorm_triton_compile_only", default=None)


def interpreted() -> bool:
    """Whether Triton runs its interpreter on CPU tensors (``TRITON_INTERPRET=1``), not compiled GPU code."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def compile_only() -> Any:
    """The compile-only session launches go to (:class:`dnorm._triton.compile_only.Session`), or None."""
    return SESSION.get()
