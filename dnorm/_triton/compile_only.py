"""Compile-only: dnorm's own launches compiled for a GPU target on a machine without a GPU, and their resources.

Inside :func:`compiling`, every launch (:class:`~.configs.Tunable`) compiles
its kernel for the session's :class:`Target` instead of running it, once per
launch configuration it may take there, and records a :class:`Build`: whether
it compiled (Triton's front end applies the type rules the interpreter does
not), and from ``ptxas -v`` the registers per thread and the bytes spilled,
with Triton's shared memory, checked against the architecture's limits
(:meth:`Build.problems`). The host code runs as it does on a GPU, on CPU tensors
that stand in for CUDA ones: only their dtypes and alignment reach the compiler.
Outputs are left unwritten: a compile-only session computes nothing.

How: Triton compiles for the target its active driver names, so a small driver
(:class:`_Driver`) names the session's target and hands out one device number per
architecture (Triton keeps one compiled target per device number); ``JITFunction.warmup``
then compiles without launching.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget

from . import configs, mode

KiB = 1024


@dataclass(frozen=True)
class Target:
    """A GPU architecture's limits: shared memory a block may take and an SM holds, registers, warps, blocks."""

    name: str
    capability: int
    shared_per_block: int
    shared_per_sm: int
    registers_per_sm: int = 65536
    warps_per_sm: int = 64
    blocks_per_sm: int = 32
    reserved_per_block: int = 1 * KiB  # the shared memory the CUDA runtime keeps per block

    def blocks(self, *, shared: int, registers: int, warps: int) -> int:
        """Blocks of a kernel resident on one SM (occupancy), by its shared memory, registers and warps."""
        per_warp = -(-registers * 32 // 256) * 256  # registers are allocated per warp, 256 at a time
        by_registers = self.registers_per_sm // (per_warp * warps) if registers else self.blocks_per_sm
        by_shared = self.shared_per_sm // (shared + self.reserved_per_block)
        return min(self.blocks_per_sm, self.warps_per_sm // warps, by_registers, by_shared)


#: The architectures of the compile matrix: A100 (sm_80), H100 (sm_90), B200 (sm_100).
TARGETS = {
    "sm_80": Target("sm_80", 80, shared_per_block=163 * KiB, shared_per_sm=164 * KiB),
    "sm_90": Target("sm_90", 90, shared_per_block=227 * KiB, shared_per_sm=228 * KiB),
    "sm_100": Target("sm_100", 100, shared_per_block=227 * KiB, shared_per_sm=228 * KiB),
}


@dataclass(frozen=True)
class Build:
    """One kernel specialization compiled for one target and launch configuration.

    ``switches`` are the kernel's compile-time arguments (name, value), ``dtype``
    the dtype of its first tensor (the call's inputs), ``head_dim`` its ``d``
    argument; ``default`` says whether this is the configuration a launch without
    the autotuner takes on the target (the first that fits and spills nothing, or
    the first tried where none does). ``error`` is the compiler's message where it
    did not compile (the resources are then 0).
    """

    kernel: str
    target: str
    switches: tuple[tuple[str, Any], ...]
    dtype: str
    head_dim: int | None
    num_warps: int
    num_stages: int
    default: bool
    seconds: float
    shared: int = 0
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    error: str | None = None

    def blocks_per_sm(self) -> int:
        """Blocks resident on one SM of the target (0: it cannot launch there)."""
        if self.error is not None:
            return 0
        target = TARGETS[self.target]
        return target.blocks(shared=self.shared, registers=self.registers, warps=self.num_warps)

    def fits(self) -> bool:
        """Whether it compiled and loads on its target: shared memory, registers and threads within the limits."""
        target = TARGETS[self.target]
        return self.error is None and self.shared <= target.shared_per_block and self.blocks_per_sm() > 0

    def kept(self) -> bool:
        """Whether the autotuner keeps this configuration on its target: it fits and spills nothing (what
        :meth:`dnorm._triton.configs.Tunable.launchable` decides on a GPU from the driver's figures)."""
        return self.fits() and self.spill_stores == 0

    def problems(self) -> list[str]:
        """Why a launch may fail or run slowly here: it does not compile, or in its default configuration (the one
        a launch without the autotuner takes) it exceeds a limit, or spills at a head size up to 128: no
        configuration of :data:`dnorm._triton.configs.CONFIGS` avoids it.

        Another configuration that does not fit or spills is no problem: no launch takes it (:meth:`kept`).
        """
        if self.error is not None:
            return [f"does not compile: {self.error}"]
        if not self.default:
            return []
        target = TARGETS[self.target]
        found = []
        if self.shared > target.shared_per_block:
            found.append(
                f"takes {self.shared / KiB:.1f} KiB of shared memory, {target.name} gives a block "
                f"{target.shared_per_block // KiB} KiB"
            )
        if self.registers * 32 * self.num_warps > target.registers_per_sm:
            found.append(f"needs {self.registers} registers per thread at {self.num_warps} warps")
        if self.spill_stores and (self.head_dim is None or self.head_dim <= 128):
            found.append(f"spills {self.spill_stores} bytes")
        return found

    def label(self) -> str:
        """The switches that are on, and the valued ones, in one short string."""
        parts = []
        for name, value in self.switches:
            if value is True:
                parts.append(name)
            elif value is not False and name not in ("ACC",):
                parts.append(f"{name}={value}")
        return " ".join(parts)


@dataclass
class Session:
    """The builds of one compile-only session.

    ``builds``: one per kernel specialization and configuration compiled; ``requested``: the builds of every
    launch, in order, repeats included (a launch met again is not compiled again).
    """

    target: Target
    every_config: bool
    builds: list[Build] = field(default_factory=list)
    requested: list[Build] = field(default_factory=list)
    _compiled: dict[tuple[Any, ...], Build] = field(default_factory=dict)
    _kept: set[Build] = field(default_factory=set)

    def launch(self, tunable: Any, grid: tuple[int, ...], args: tuple[Any, ...], kwargs: dict[str, Any], /) -> None:
        """Compile what ``tunable[grid](*args, **kwargs)`` launches on the target: the configurations a launch
        without the autotuner tries, in order, up to the first it may take (:meth:`Build.kept`), which is the
        launch's ``default``; with ``every_config``, every one (the autotuner's set)."""
        tried = []
        for config in tunable.configs():
            tried.append(self._compile(tunable, grid, args, kwargs, config))
            if tried[-1].kept() and not self.every_config:
                break
        chosen = next((i for i, build in enumerate(tried) if build.kept()), 0)
        for i, build in enumerate(tried):
            final = replace(build, default=i == chosen)
            if final not in self._kept:
                self._kept.add(final)
                self.builds.append(final)
            self.requested.append(final)

    def _compile(
        self, tunable: Any, grid: tuple[int, ...], args: tuple[Any, ...], kwargs: dict[str, Any], config: Any, /
    ) -> Build:
        kernel = tunable.fixed
        bound = dict(zip(kernel.arg_names, args, strict=False)) | kwargs
        switches = tuple((p.name, _plain(bound[p.name])) for p in kernel.params if p.is_constexpr)
        dtype = str(next(x for x in bound.values() if isinstance(x, torch.Tensor)).dtype)
        head_dim = bound.get("d")
        key = (tunable.name, switches, tuple(_dtype_of(x) for x in bound.values()), str(config), head_dim)
        if key in self._compiled:
            return self._compiled[key]
        start = time.perf_counter()
        about = (tunable.name, self.target.name, switches, dtype, head_dim, config.num_warps, config.num_stages, False)
        try:
            compiled = kernel.warmup(*args, grid=grid, **configs.launch_options(config), **kwargs)
        except Exception as exc:  # the compiler's error is the finding
            build = Build(*about, time.perf_counter() - start, error=_message(exc))
        else:
            registers, stores, loads = ptxas_resources(compiled.asm["ptx"], self.target)
            build = Build(
                *about, time.perf_counter() - start, shared=compiled.metadata.shared, registers=registers,
                spill_stores=stores, spill_loads=loads,
            )  # fmt: skip
        self._compiled[key] = build
        return build


class _Driver:
    """Triton's active driver while compiling only: it names the target and a device number for it."""

    def __init__(self, target: Target, /) -> None:
        self.target = target

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", self.target.capability, 32)

    def get_current_device(self) -> int:
        return self.target.capability  # one number per architecture: Triton keeps one compiled target per device

    def get_current_stream(self, device: int | None = None) -> int:
        return 0


@contextlib.contextmanager
def compiling(target: str, /, *, every_config: bool = False) -> Iterator[Session]:
    """Within the block, every launch of dnorm's kernels compiles for ``target`` (``"sm_90"``) and runs nothing.

    ``every_config``: compile each configuration the launch may take on a GPU (the default one and the
    autotuner's), else the default one only. Not under Triton's interpreter (``TRITON_INTERPRET=1``), whose
    kernels are Python functions, nor nested.
    """
    if target not in TARGETS:
        msg = f"target must be one of {sorted(TARGETS)}, got {target!r}"
        raise ValueError(msg)
    if mode.interpreted():
        msg = "compile-only needs compiled kernels: unset TRITON_INTERPRET before dnorm._triton is imported"
        raise RuntimeError(msg)
    if mode.compile_only() is not None:
        msg = "a compile-only session is already active"
        raise RuntimeError(msg)
    session = Session(TARGETS[target], every_config)
    drivers = triton.runtime.driver
    previous = drivers._active  # None where no GPU driver was ever made active (reading .active would make one)
    drivers.set_active(_Driver(session.target))
    token = mode.SESSION.set(session)
    try:
        yield session
    finally:
        mode.SESSION.reset(token)
        drivers._active = previous


def ptxas_resources(ptx: str, target: Target, /) -> tuple[int, int, int]:
    """Registers per thread and bytes of spill stores and loads of ``ptx``, from ``ptxas -v`` as Triton runs it."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    ptxas = get_ptxas(target.capability).path
    flags = ["-lineinfo", "-v", "--regAllocOptLevel=2"] + ([] if configs.FP_FUSION else ["--fmad=false"])
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        arch = sm_arch_from_capability(target.capability)
        command = [ptxas, *flags, f"--gpu-name={arch}", str(source), "-o", str(Path(folder) / "kernel.cubin")]
        log = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    registers = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if registers is None or spills is None:
        msg = f"ptxas -v printed no resource usage: {log}"
        raise RuntimeError(msg)
    return int(registers.group(1)), int(spills.group(1)), int(spills.group(2))


def _plain(value: Any, /) -> Any:
    """A compile-time argument as a plain, printable value (Triton's dtypes by name)."""
    return value if isinstance(value, bool | int | float | str) or value is None else str(value)


def _dtype_of(x: Any, /) -> Any:
    return str(x.dtype) if isinstance(x, torch.Tensor) else type(x).__name__


def _message(exc: BaseException, /) -> str:
    """The compiler's error in one line: the root cause's message, and the source line it points at."""
    chain = [exc]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 32:
        chain.append(cause)
    lines = [line.strip() for line in str(chain[-1]).splitlines() if line.strip()]
    what = lines[-1] if lines else type(chain[-1]).__name__
    pointed = [e for e in chain if getattr(e, "src", None) and hasattr(getattr(e, "node", None), "lineno")]
    if not pointed:
        return what
    innermost = pointed[-1]
    where = innermost.src.splitlines()[innermost.node.lineno - 1].strip()  # type: ignore[attr-defined]
    return f"{what} (at `{where}`)"
