"""``dnorm compile``: every Triton kernel dnorm launches, compiled for GPU targets on this machine (no GPU needed).

A :class:`Variant` is one way of calling dnorm (a scheme, its causal form, the
options that switch kernel code on: masks, softcap, dropout, grouped heads with
a per-head ``alpha``, packed batches, decoding, the fused stops of a sharded
sequence); :func:`dnorm._cli.gpu_drive.drive` makes that call through the
public functions, forward and backward, with CPU tensors, inside a
compile-only session (:mod:`dnorm._triton.compile_only`), so that exactly the
launches a GPU would see are compiled. :func:`run` crosses variants with dtypes,
head sizes and targets, over worker processes, and returns one :class:`Row` per
kernel build; :func:`dnorm._cli.gpu_table.render` writes the table of the docs' GPU page.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from .. import _validate as check
from . import CommandError, gpu_drive

#: The dtypes, head sizes and targets of the whole matrix (``dnorm compile --all``).
DTYPES = ("float16", "bfloat16", "float32")
HEAD_DIMS = (32, 64, 72, 128, 256)
TARGETS = ("sm_80", "sm_90", "sm_100")


@dataclass(frozen=True)
class Variant:
    """One way of calling dnorm, named by what it switches on.

    ``entry``: ``"attention"`` (forward and backward), ``"varlen"`` (a packed
    batch, forward and backward), ``"decode"`` (a step of one query from the
    state, then a chunk of 24 from the state: the split-key step and the
    forward pass that continues the carry), ``"prefill"`` (decoding's first
    call, no state) or ``"sharded"`` (a participant's shard of
    :func:`dnorm.distributed.attention` on the fused stops, forward and
    backward: :func:`_sharded`; half precision read as it is, as by the
    single-device kernels); ``causal``: None, ``"top-left"`` or
    ``"bottom-right"`` (fewer queries than keys); ``mask``: None, ``"bool"``
    (sharded: a key padding mask) or ``"float"`` (a learned bias: its
    gradient too); ``grouped``: four query heads over two key
    heads, ``alpha`` one per head; ``flat``: no leading axes, ``(T, D)`` arrays;
    ``sink``: a learned sink per head (spec DEF-SINK).
    """

    scheme: str
    entry: str = "attention"
    causal: str | None = None
    mask: str | None = None
    softcap: bool = False
    dropout: bool = False
    grouped: bool = False
    flat: bool = False
    sink: bool = False

    @property
    def name(self) -> str:
        parts = [self.scheme, self.entry if self.entry != "attention" else ""]
        parts += [self.causal or "", f"{self.mask}-mask" if self.mask else ""]
        parts += ["softcap" if self.softcap else "", "dropout" if self.dropout else ""]
        parts += ["grouped" if self.grouped else "", "flat" if self.flat else "", "sink" if self.sink else ""]
        return " ".join(p for p in parts if p)


def _schemes() -> list[str]:
    """The schemes the Triton kernels compute (stick-breaking takes the array-API kernels)."""
    return [name for name in check.SCHEMES if check.described(name).rows != "sticks"]


def _forms() -> list[Variant]:
    """Every scheme with every causal form it has (Sinkhorn has none; doubly and hybrid bottom-right decode), and
    each scheme a sink joins with one."""
    forms = [Variant(name) for name in _schemes()]
    forms += [Variant(name, causal="top-left") for name in _schemes() if check.described(name).causal]
    # bottom-right with fewer queries than keys: the schemes without a running statistic (the others decode)
    forms += [Variant(n, causal="bottom-right") for n in _schemes() if check.described(n).causal == "mask"]
    return forms + [replace(form, sink=True) for form in forms if check.described(form.scheme).sinks]


def _decoding() -> list[str]:
    """The schemes with a strictly causal form: those :func:`dnorm.decode` takes."""
    return [name for name in _schemes() if check.described(name).causal]


def _sharded_forms() -> list[Variant]:
    """The fused sharded stops: every scheme the Triton kernels compute, causal where it has a causal form, and with
    a sink where :func:`dnorm.distributed.attention` takes one (not Sinkhorn's, not sigmoid attention)."""
    names = _schemes()
    forms = [Variant(name, entry="sharded") for name in names]
    forms += [Variant(name, entry="sharded", causal="top-left") for name in names if check.described(name).causal]
    return forms + [replace(form, sink=True) for form in forms if _sharded_sink(form.scheme)]


def _sharded_sink(scheme: str, /) -> bool:
    return _sinks(scheme) and check.described(scheme).causal is not None


#: The options of a sharded call that switch kernel code on (no float mask, no dropout there), and all at once.
SHARDED_OPTIONS: tuple[dict[str, Any], ...] = (
    {},
    {"mask": "bool"},
    {"softcap": True},
    {"grouped": True},
    {"mask": "bool", "softcap": True, "grouped": True},
)


def every_variant() -> list[Variant]:
    """The whole matrix's variants: each form plain, with each option, with all at once; packed; decoding;
    the sharded stops."""
    options: list[dict[str, Any]] = [
        {},
        {"mask": "bool"},
        {"mask": "float"},
        {"softcap": True},
        {"dropout": True},
        {"grouped": True},
        {"mask": "float", "softcap": True, "dropout": True, "grouped": True},
    ]
    found = [replace(form, **option) for form in _forms() for option in options]
    found += [Variant("sinkhorn", flat=True)]
    for form in _forms():
        loaded = replace(form, entry="varlen", softcap=True, dropout=True, grouped=True)
        found += [replace(form, entry="varlen"), loaded]
    for scheme in _decoding():
        for entry in ("prefill", "decode"):
            found += [Variant(scheme, entry=entry), Variant(scheme, entry=entry, mask="bool", softcap=True)]
            found += [Variant(scheme, entry=entry, mask="float", grouped=True, sink=_sinks(scheme))]
    return found + [replace(form, **option) for form in _sharded_forms() for option in SHARDED_OPTIONS]


def heaviest_variants() -> list[Variant]:
    """Each form with all its options at once (the most registers its kernels take), packed, decoding and sharded
    alike, and the lightest forms (the largest blocks): where a launch spills or overflows, if any does."""
    loaded: dict[str, Any] = {"mask": "float", "softcap": True, "dropout": True, "grouped": True}
    found = [replace(form, **loaded) for form in _forms()]
    found += [replace(form, entry="varlen", softcap=True, dropout=True, grouped=True) for form in _forms()]
    found += [Variant(scheme, entry="decode", mask="bool", softcap=True) for scheme in _decoding()]
    found += [Variant(s, entry="decode", mask="bool", softcap=True, sink=True) for s in _decoding() if _sinks(s)]
    found += [replace(form, **SHARDED_OPTIONS[-1]) for form in _sharded_forms()]
    return [*found, Variant("softmax", causal="top-left"), Variant("doubly"), Variant("softmax")]


def _sinks(scheme: str, /) -> bool:
    return check.described(scheme).sinks


@dataclass(frozen=True)
class Case:
    """A variant in one dtype, head size and target."""

    variant: Variant
    dtype: str
    head_dim: int
    target: str


#: CI's covering subset (``dnorm compile``): every switch of every kernel on and off, each dtype, head size
#: class and target at least once, the default configuration only. tests/test_gpu_compile.py checks the coverage.
COVERING = (
    Case(Variant("doubly", mask="float", softcap=True, dropout=True, grouped=True, sink=True), "bfloat16", 64, "sm_90"),
    Case(Variant("hybrid", causal="top-left", mask="bool"), "float16", 128, "sm_80"),
    Case(Variant("sinkhorn", flat=True), "float32", 72, "sm_90"),
    Case(Variant("sinkhorn", mask="bool", softcap=True), "float16", 32, "sm_100"),
    Case(Variant("sigmoid", causal="bottom-right", dropout=True), "bfloat16", 32, "sm_80"),
    Case(Variant("hybrid", entry="varlen", causal="top-left", softcap=True, grouped=True), "float16", 64, "sm_100"),
    Case(Variant("hybrid", entry="decode", mask="float", grouped=True, sink=True), "bfloat16", 128, "sm_90"),
    Case(Variant("doubly", entry="decode", mask="bool", softcap=True), "float32", 64, "sm_80"),
    Case(Variant("softmax", entry="decode"), "float16", 32, "sm_100"),
    Case(Variant("sigmoid", entry="decode"), "float16", 32, "sm_100"),
    # the sharded stops' own launches: the key pass for gamma alone and with every term at one round, with and
    # without the hybrid's two components; carries from a block's carry (an earlier block, under causal)
    Case(Variant("doubly", entry="sharded", softcap=True, sink=True), "float32", 64, "sm_90"),
    Case(Variant("hybrid", entry="sharded", mask="bool", grouped=True), "bfloat16", 128, "sm_90"),
    Case(Variant("doubly", entry="sharded", causal="top-left", mask="bool", grouped=True), "float16", 64, "sm_90"),
    Case(Variant("hybrid", entry="sharded", causal="top-left", softcap=True, sink=True), "float32", 128, "sm_80"),
)


@dataclass(frozen=True)
class Row:
    """One kernel build of one case (the fields of :class:`dnorm._triton.compile_only.Build`, and the case's)."""

    variant: str
    kernel: str
    target: str
    dtype: str
    head_dim: int
    switches: tuple[tuple[str, Any], ...]
    num_warps: int
    num_stages: int
    default: bool
    shared: int
    registers: int
    spill_stores: int
    blocks_per_sm: int
    kept: bool
    seconds: float
    problems: tuple[str, ...]


def compile_cases(cases: Sequence[Case], /, *, every_config: bool) -> list[Row]:
    """Compile ``cases`` in this process (each under its target's compile-only session); one row per build."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        msg = "TRITON_INTERPRET=1 runs the kernels as Python: unset it to compile them"
        raise CommandError(msg)
    from .._triton import compile_only

    rows = []
    for target in dict.fromkeys(case.target for case in cases):
        with compile_only.compiling(target, every_config=every_config) as session:
            for case in (c for c in cases if c.target == target):
                first = len(session.requested)
                gpu_drive.drive(case.variant, case.dtype, case.head_dim)
                rows += [_row(case, build) for build in dict.fromkeys(session.requested[first:])]
    return rows


def _row(case: Case, build: Any, /) -> Row:
    return Row(
        case.variant.name, build.kernel, build.target, case.dtype, case.head_dim, build.switches, build.num_warps,
        build.num_stages, build.default, build.shared, build.registers, build.spill_stores, build.blocks_per_sm(),
        build.kept(), round(build.seconds, 2), tuple(build.problems()),
    )  # fmt: skip


def run(
    cases: Sequence[Case],
    /,
    *,
    every_config: bool,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
    log: str | None = None,
) -> list[Row]:
    """Compile ``cases`` over ``jobs`` fresh worker processes; the rows of every build.

    The cases are cut into chunks sorted by target (a compile-only session per target and chunk: a kernel met
    again within a chunk is not compiled again; across chunks Triton's disk cache serves it). ``log``: a JSON-lines
    file the rows are appended to as each chunk finishes; the cases it already holds are not compiled again (a long
    run resumes where it stopped).
    """
    os.environ.pop("TRITON_INTERPRET", None)  # the workers import dnorm's kernels compiled
    rows = _read(log) if log is not None and os.path.exists(log) else []
    done = {(r.variant, r.dtype, r.head_dim, r.target) for r in rows}
    ordered = sorted(
        (c for c in cases if (c.variant.name, c.dtype, c.head_dim, c.target) not in done),
        key=lambda c: (c.target, c.dtype, c.head_dim),
    )
    size = max(1, min(8, len(ordered) // max(1, 4 * jobs)))
    chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    finished = 0
    with contextlib.ExitStack() as stack:
        if jobs <= 1:
            results: Iterable[list[Row]] = (compile_cases(chunk, every_config=every_config) for chunk in chunks)
        else:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(jobs))
            results = pool.imap(_compile_star, [(chunk, every_config) for chunk in chunks])
        for chunk, found in zip(chunks, results, strict=True):
            rows += found
            if log is not None:
                with open(log, "a") as f:
                    f.writelines(json.dumps(asdict(row)) + "\n" for row in found)
            finished += len(chunk)
            if progress is not None:
                progress(finished, len(ordered))
    return rows


def _read(log: str, /) -> list[Row]:
    rows = []
    with open(log) as f:
        for line in f:
            fields = json.loads(line)
            fields["switches"] = tuple(tuple(pair) for pair in fields["switches"])
            fields["problems"] = tuple(fields["problems"])
            rows.append(Row(**fields))
    return rows


def _compile_star(work: tuple[list[Case], bool], /) -> list[Row]:
    return compile_cases(work[0], every_config=work[1])


def matrix(
    variants: Iterable[Variant], dtypes: Iterable[str], head_dims: Iterable[int], targets: Iterable[str], /
) -> list[Case]:
    """Every variant in every dtype, head size and target."""
    return [Case(*c) for c in itertools.product(variants, dtypes, head_dims, targets)]


def as_dicts(rows: Iterable[Row], /) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
