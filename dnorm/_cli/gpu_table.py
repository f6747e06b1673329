"""The table of ``dnorm compile``: what compiled for which target, the resources of what launches, what may not."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .gpu_compile import Row


def failures(rows: Iterable[Row], /) -> list[Row]:
    """The builds that may not be launched: a compile error, a resource limit, a default configuration that spills."""
    return [row for row in rows if row.problems]


def render(rows: Sequence[Row], /, *, command: str) -> str:
    """The docs' table: per target, dtype and head size, what compiled and the resources of the configurations a
    launch takes without the autotuner; per kernel, its heaviest such build; then what may not be launched."""
    launched = [r for r in rows if r.default]
    cases = len({(r.variant, r.dtype, r.head_dim, r.target) for r in rows})
    lines = [
        f"Produced by `{command}`: {len(rows)} builds of {cases} "
        f"cases, {sum(r.seconds for r in rows) / 60:.0f} minutes of compiling. *Launched*: the configuration a launch "
        "takes without the autotuner (the first of 8 or 4 warps, 2 or 3 stages that fits and spills nothing).",
        "",
        "| target | dtype | head | builds | compiled | launched, spilling | most registers | most shared (KiB) | "
        "fewest blocks/SM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.target, row.dtype, row.head_dim), []).append(row)
    for (target, dtype, head), group in sorted(groups.items()):
        built = [r for r in group if not _failed(r)]
        chosen = [r for r in group if r.default and not _failed(r)]
        shared = max((r.shared for r in chosen), default=0) / 1024
        lines.append(
            f"| {target} | {dtype} | {head} | {len(group)} | {len(built)} | "
            f"{sum(1 for r in chosen if r.spill_stores)} of {len(chosen)} | "
            f"{max((r.registers for r in chosen), default=0)} | {shared:.1f} | "
            f"{min((r.blocks_per_sm for r in chosen), default=0)} |"
        )
    heaviest: dict[tuple[str, str, str], Row] = {}
    for row in launched:
        key = (row.target, row.dtype, row.kernel)
        if key not in heaviest or (row.registers, row.shared) > (heaviest[key].registers, heaviest[key].shared):
            heaviest[key] = row
    lines += [
        "",
        "Per kernel, its launched build with the most registers (then shared memory):",
        "",
        "| target | dtype | kernel | variant | head | warps, stages | registers | spilled | shared (KiB) | blocks/SM |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (target, dtype, kernel), row in sorted(heaviest.items()):
        lines.append(
            f"| {target} | {dtype} | `{kernel}` | {row.variant} | {row.head_dim} | {row.num_warps}, {row.num_stages} | "
            f"{row.registers} | {row.spill_stores} | {row.shared / 1024:.1f} | {row.blocks_per_sm} |"
        )
    bad = failures(rows)
    lines += ["", f"Builds that may not be launched: {len(bad)} of {len(rows)}."]
    for row in bad[:50]:
        lines.append(
            f"- {row.target} {row.dtype} head {row.head_dim} `{row.kernel}` "
            f"({row.variant}; {row.num_warps} warps, {row.num_stages} stages): {'; '.join(row.problems)}"
        )
    return "\n".join(lines) + "\n"


def _failed(row: Row, /) -> bool:
    return any(p.startswith("does not compile") for p in row.problems)
