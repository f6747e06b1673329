"""Launch configurations: block sizes, and the warps and pipeline stages of each launch.

The block sizes are fixed per call (:func:`blocks_for`): the causal carries are
saved at every query block's start, so every pass of one call (forward and
backward) must share them. What each kernel may choose alone, changing what it
computes by rounding at most (the order of a reduction), is its number of warps
and of software-pipeline stages. On a GPU each kernel is autotuned over
:data:`CONFIGS`, keyed on its compile-time switches, its head size and its
tensors' dtypes (not the lengths: the first call of a kind picks for every
length). Every kernel writes its outputs without reading them, so the
autotuner's repeated runs leave them right. With ``DNORM_TRITON_AUTOTUNE=0`` a
kernel launches in the first of :data:`CONFIGS` that loads and spills nothing;
under Triton's interpreter in the first.

Every launch goes through :class:`Tunable`, the one place that decides how a
kernel is launched: by the autotuner, in the first configuration that loads and
spills nothing, or (inside :func:`dnorm._triton.compile_only.compiling`)
compiled for a target and not run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import triton

from . import mode

#: The launch configurations a kernel may take on a GPU, in the order a launch without the autotuner tries them:
#: it takes the first that loads and spills nothing there (:meth:`Tunable.launchable`); the autotuner times those.
CONFIGS = tuple(triton.Config({}, num_warps=warps, num_stages=stages) for stages in (2, 3) for warps in (8, 4))

#: Fused multiply-adds in the compiled code (Triton's default until 3.9, named so that it is not a warning).
FP_FUSION = True

interpreted = mode.interpreted


def autotuning() -> bool:
    """Whether launches go through the autotuner: compiled kernels, unless ``DNORM_TRITON_AUTOTUNE=0``."""
    return not interpreted() and os.environ.get("DNORM_TRITON_AUTOTUNE", "1") != "0"


class Blocks(NamedTuple):
    """The (query, key) block sizes of a call's ``forward`` passes and of its ``backward`` passes.

    The causal carries are kept at the start of every ``carry`` queries, the smaller of the two query blocks
    (powers of two): every block of either pass starts at one of them.
    """

    forward: tuple[int, int]
    backward: tuple[int, int]

    @property
    def carry(self) -> int:
        return min(self.forward[0], self.backward[0])


#: Block sizes (forward light, forward heavy, backward light, backward heavy) per largest head size, for half
#: precision, float32 and float64 operands: the largest tiles whose launches compile to code that spills nothing
#: in some configuration of :data:`CONFIGS` on sm_80, sm_90 and sm_100 (``dnorm compile``; the table on the
#: docs' GPU page). The products of float32 and float64 run on the CUDA cores, whose operands take far more
#: registers: small tiles.
_BLOCKS = {
    "half": (
        (32, (128, 64), (32, 32), (64, 32), (32, 16)),
        (64, (128, 64), (32, 32), (64, 32), (32, 32)),
        (128, (64, 64), (32, 32), (32, 32), (16, 32)),
        (256, (64, 32), (32, 32), (16, 32), (16, 16)),
    ),
    "float32": (
        (64, (32, 32), (16, 32), (16, 16), (16, 16)),
        (128, (16, 32), (16, 16), (16, 16), (16, 16)),
        (256, (16, 16), (16, 16), (16, 16), (16, 16)),
    ),
    "float64": ((256, (16, 16), (16, 16), (16, 16), (16, 16)),),
}


def blocks_for(dtype: str, head_dim: int, /, *, heavy: bool) -> Blocks:
    """The block sizes of a call with operands of ``dtype`` (``"torch.bfloat16"``) and head sizes up to ``head_dim``.

    ``heavy``: the tiles hold more than one softmax's worth (a second component, Sinkhorn's rounds, the causal
    running statistic, softcap, dropout or a floating mask). Under the interpreter small blocks, the forward's
    query blocks twice the backward's (so that the tests see passes that keep their carries apart).
    """
    if interpreted():
        return Blocks((32, 16), (16, 16))
    kind = "half" if dtype in ("torch.float16", "torch.bfloat16") else dtype.removeprefix("torch.")
    for largest, forward, forward_heavy, backward, backward_heavy in _BLOCKS[kind]:
        if head_dim <= largest or largest == _BLOCKS[kind][-1][0]:
            return Blocks(forward_heavy if heavy else forward, backward_heavy if heavy else backward)
    raise AssertionError(kind)


class Tunable:
    """A kernel launched as ``kernel[grid](...)``: through its autotuner when :func:`autotuning`, else in the first of
    :data:`CONFIGS` that loads and spills nothing on the device (the first one under the interpreter); inside a
    compile-only session, compiled for the session's target instead.

    ``fixed`` is the kernel itself; ``tuned`` the autotuner over :data:`CONFIGS`
    keyed on the kernel's compile-time arguments and its head size ``d``, or None
    where the interpreter compiled it (it has no GPU to time). ``chosen`` keeps,
    per key of the autotuner's kind, the configuration a launch without it took.
    """

    def __init__(self, kernel: Any, /) -> None:
        self.fixed = kernel
        self.name = kernel.__name__
        self.tuned = None
        self.key: list[str] = []
        self.chosen: dict[tuple[Any, ...], Any] = {}
        if not interpreted():  # an interpreted kernel has no parameters' kinds, and nothing to tune
            self.key = [param.name for param in kernel.params if param.is_constexpr or param.name == "d"]
            prune = {"early_config_prune": self.launchable}
            self.tuned = triton.autotune(configs=list(CONFIGS), key=self.key, prune_configs_by=prune)(kernel)

    def __getitem__(self, grid: tuple[int, ...]) -> Any:
        session = mode.compile_only()
        if session is not None:
            return lambda *args, **kwargs: session.launch(self, grid, args, kwargs)
        if self.tuned is not None and autotuning():
            tuned = self.tuned[grid]
            return lambda *args, **kwargs: tuned(*args, enable_fp_fusion=FP_FUSION, **kwargs)
        run = self.fixed[grid]
        if interpreted():
            return lambda *args, **kwargs: run(*args, **launch_options(CONFIGS[0]), **kwargs)
        return lambda *args, **kwargs: run(*args, **launch_options(self.first(args, kwargs)), **kwargs)

    def first(self, args: tuple[Any, ...], kwargs: dict[str, Any], /) -> Any:
        """The configuration a launch without the autotuner takes: the first of :data:`CONFIGS` it may take."""
        named = dict(zip(self.fixed.arg_names, args, strict=False))
        bound = {**named, **kwargs}
        key = (*(bound[name] for name in self.key), *(str(x.dtype) for x in bound.values() if hasattr(x, "dtype")))
        if key not in self.chosen:
            self.chosen[key] = next(iter(self.launchable(list(CONFIGS), named, first=True, **kwargs)))
        return self.chosen[key]

    def launchable(
        self, configs: list[Any], named_args: dict[str, Any], /, *, first: bool = False, **kwargs: Any
    ) -> list[Any]:
        """The configurations this launch may take on this GPU (the autotuner's prune): those that load (shared
        memory, registers, threads within the device's limits) and spill nothing; the first one where none does.
        ``first``: stop at the first found.

        Each is compiled and loaded (the autotuner would compile it anyway); what the driver reports decides.
        The compile-only mode checks the same for every target (:meth:`dnorm._triton.compile_only.Build.kept`).
        """
        from triton.runtime.errors import OutOfResources

        kept = []
        for config in configs:
            compiled = self.fixed.warmup(grid=(1,), **{**named_args, **kwargs, **launch_options(config)})
            try:
                compiled._init_handles()  # loads the binary: OutOfResources where it does not fit
            except OutOfResources:
                continue
            if compiled.n_spills == 0:
                kept.append(config)
                if first:
                    break
        return kept or configs[:1]

    def bind(self, *given: Mapping[str, Any], **named: Any) -> dict[str, Any]:
        """The arguments of this kernel, by name, from the bundles ``given`` and ``named`` (later ones win); those
        it does not take are left out, one it takes and nobody gives raises ``TypeError`` naming it."""
        pool: dict[str, Any] = {}
        for bundle in (*given, named):
            pool.update(bundle)
        missing = [name for name in self.fixed.arg_names if name not in pool]
        if missing:
            msg = f"the launch of {self.name} gives no {', '.join(missing)}"
            raise TypeError(msg)
        return {name: pool[name] for name in self.fixed.arg_names}

    def configs(self) -> list[Any]:
        """The configurations this kernel may launch with, in the order a launch without the autotuner tries them."""
        return list(CONFIGS)


def launch_options(config: Any, /) -> dict[str, Any]:
    """The keyword arguments of a launch with ``config`` (its warps and stages, and the fused multiply-adds)."""
    return {"num_warps": config.num_warps, "num_stages": config.num_stages, "enable_fp_fusion": FP_FUSION}


def tunable(kernel: Any, /) -> Tunable:
    """Decorate a ``@triton.jit`` kernel (applied above it) to launch through :class:`Tunable`."""
    return Tunable(kernel)
