"""The thin launcher: the passes of each scheme as Triton launches over a :class:`~.layout.Layout`.

A call's inputs arrive as the routing layer hands them (grouped-query heads
split, the mask at least two-dimensional, ``alpha`` an array broadcasting over
``(..., T, K)``), in their own dtype: half precision is read as it is, every
product accumulates in float32 and every statistic is float32 (float64 for
float64 inputs). The forward pass returns the output and the residuals the
backward pass needs: O(T + K) numbers per head, and for the causal variants
the carries at each query block's start (spec DEF-BLOCKED-BACKWARD).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import columns, rows
from .configs import Blocks
from .layout import Layout, dense

#: The blocks of a call that names none (the interpreter's size).
SMALL = Blocks((16, 16), (16, 16))


@dataclass(frozen=True)
class Options:
    """The static part of a Triton call (hashable).

    ``align_end``: the causal triangle is bottom-right aligned (query ``i``
    sees the keys ``j <= i + K - T``); ``blocks`` the query and key block
    sizes of the passes (:class:`Blocks`); ``lead`` the (grouped) leading shape of the scores;
    ``packed``: the sequences' offsets of a packed batch along axis -2
    (queries, keys), each normalized on its own.
    """

    scheme: str
    causal: bool
    n_iter: int
    scale: float
    softcap: float | None = None
    dropout: float = 0.0
    align_end: bool = False
    blocks: Blocks = SMALL
    lead: tuple[int, ...] = ()
    packed: tuple[tuple[int, ...], tuple[int, ...]] | None = None


class Residuals(NamedTuple):
    """What the backward pass needs (arrays only, O(T + K) per head but for the causal carries).

    ``columns``: per round the per-key ``(shift, max, sum)`` of the column
    statistic (one round for doubly, ``n_iter`` for Sinkhorn, none
    otherwise); ``rows``: per Sinkhorn round but the last, the row pair of
    ``S - c`` (the next round's row potential); ``biased`` and ``plain``: the
    row pairs of each component's softmax; ``carries``: the causal running
    pair before each query block, and the state after the last; ``outputs``:
    the hybrid's two components.
    """

    columns: tuple[tuple[Tensor, Tensor, Tensor], ...]
    rows: tuple[tuple[Tensor, Tensor], ...]
    biased: tuple[Tensor, Tensor] | None
    plain: tuple[Tensor, Tensor] | None
    carries: tuple[Tensor, Tensor, Tensor, Tensor] | None
    outputs: tuple[Tensor, Tensor] | None


def accumulator(dtype: torch.dtype, /) -> tuple[torch.dtype, Any]:
    """The dtype of statistics and accumulators, in torch and in Triton: float64 for float64, float32 otherwise."""
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def tile_flags(q: Tensor, mask: Tensor | None, options: Options) -> dict[str, Any]:
    """The compile-time switches the score tiles of every kernel share."""
    _, acc = accumulator(q.dtype)
    return {
        "HAS_MASK": mask is not None,
        "MASK_BOOL": mask is not None and mask.dtype == torch.bool,
        "SOFTCAP": options.softcap is not None,
        "HALF": q.dtype in (torch.float16, torch.bfloat16),
        "ACC": acc,
        "PRECISION": "ieee" if q.dtype in (torch.float32, torch.float64) else "tf32",
    }


def block_sizes(q: Tensor, v: Tensor, options: Options, *, backward: bool = False) -> dict[str, Any]:
    """The tile sizes of the forward passes (or of the ``backward`` ones), head sizes padded to powers of two."""
    bq, bk = options.blocks.backward if backward else options.blocks.forward
    return {
        "BQ": bq,
        "BK": bk,
        "BD": max(16, triton.next_power_of_2(q.shape[-1])),
        "BDV": max(16, triton.next_power_of_2(v.shape[-1])),
    }


def carry_places(layout: Layout, blocks: Blocks, block_q: int, /) -> tuple[Tensor, int]:
    """Where each program's causal carries start (a ``(P, cdiv(T, blocks.carry), K)`` buffer), and how far apart
    the carries of two consecutive query blocks of ``block_q`` rows are."""
    kept = triton.cdiv(max(layout.n_q, 1), blocks.carry)
    starts = torch.arange(layout.programs, dtype=torch.int64, device=layout.q.device) * (kept * layout.n_k)
    return starts, layout.n_k * (block_q // blocks.carry)


def mask_strides(mask: Tensor | None, lead: tuple[int, ...], n_q: int, n_k: int, /) -> tuple[int, int]:
    if mask is None:
        return 0, 0
    view = mask.expand(*lead, n_q, n_k)
    return view.stride(-2), view.stride(-1)


def forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    alpha: Tensor,
    seed: Tensor | None,
    lead: tuple[int, ...],
    /,
    *,
    options: Options,
    layout: Layout | None = None,
    start: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Residuals]:
    """The output ``(q_rows, Dv)`` (``P * T`` rows, or a packed batch's per lead index) in the compute dtype, and
    the residuals.

    ``start`` is decoding's state before the call (causal only), a pair of ``(P, K - T)`` arrays.
    """
    layout = layout or dense(q, k, v, mask, alpha, seed, lead)
    acc_t, _ = accumulator(q.dtype)
    dev = q.device
    programs, n_q, n_k = layout.programs, layout.n_q, layout.n_k
    scheme = options.scheme
    running = options.causal and scheme in ("doubly", "hybrid")
    rounds = 0 if scheme == "softmax" or running else (options.n_iter if scheme == "sinkhorn" else 1)
    flags, sizes = tile_flags(q, mask, options), block_sizes(q, v, options)
    mm, mn = mask_strides(mask, lead, n_q, n_k)
    strides = (q.stride(-2), q.stride(-1), k.stride(-2), k.stride(-1))
    empty = torch.empty(1, dtype=acc_t, device=dev)
    mask_ptr = empty if mask is None else mask
    grid_k = (triton.cdiv(max(n_k, 1), sizes["BK"]), programs)
    grid_q = (triton.cdiv(max(n_q, 1), sizes["BQ"]), programs)

    def new(*shape: int) -> Tensor:
        return torch.empty(*shape, dtype=acc_t, device=dev)

    q_rows, k_rows, dv = layout.q_rows, layout.k_rows, v.shape[-1]
    cols: list[tuple[Tensor, Tensor, Tensor]] = []
    row_stats: list[tuple[Tensor, Tensor]] = []
    zero_shift = torch.zeros(k_rows, dtype=acc_t, device=dev)
    for t in range(rounds):
        col_m, col_s = new(k_rows), new(k_rows)
        shift = zero_shift if t == 0 else torch.where(cols[0][1] == -torch.inf, 0.0, cols[0][1])
        r_m, r_s = row_stats[-1] if row_stats else (empty, empty)
        columns.column_stats[grid_k](
            q, k, mask_ptr, shift, r_m, r_s, col_m, col_s,
            layout.q, layout.k, layout.mask, layout.kstat, layout.qstat, layout.len_q, layout.len_k,
            *strides, mm, mn, q.shape[-1], options.scale, options.softcap or 1.0,
            ROUND=t > 0, **{key: sizes[key] for key in ("BQ", "BK", "BD")}, **flags,
        )  # fmt: skip
        cols.append((shift, col_m, col_s))
        if t < rounds - 1:  # the row potential of this round, for the next one
            r_m, r_s = new(q_rows), new(q_rows)
            _row_pass(q, k, v, mask_ptr, cols[-1], None, alpha, (empty, empty, empty), (r_m, r_s), None, layout,
                      (mm, mn), options, flags, sizes, grid_q, biased=True, plain=False, values=False, round_=t > 0,
                      running=False, seed=None)  # fmt: skip
            row_stats.append((r_m, r_s))
    carry = None
    if running:
        carry = _carries(q, k, mask_ptr, layout, (mm, mn), options, flags, sizes, start)
    plain = scheme in ("softmax", "hybrid")
    biased = scheme != "softmax"
    mixed = biased and plain
    out = torch.empty(q_rows, dv, dtype=acc_t, device=dev)
    outs = (out, new(q_rows, dv), new(q_rows, dv)) if mixed else (out, out, out)
    pairs_b = (new(q_rows), new(q_rows)) if biased else (empty, empty)
    pairs_p = (new(q_rows), new(q_rows)) if plain else (empty, empty)
    _row_pass(q, k, v, mask_ptr, cols[-1] if cols else None, carry, alpha, outs, pairs_b, pairs_p, layout,
              (mm, mn), options, flags, sizes, grid_q, biased=biased, plain=plain, values=True,
              round_=rounds > 1, running=running, seed=seed)  # fmt: skip
    residuals = Residuals(
        tuple(cols),
        tuple(row_stats),
        pairs_b if biased else None,
        pairs_p if plain else None,
        carry,
        (outs[1], outs[2]) if mixed else None,
    )
    return out, residuals


def _carries(
    q: Tensor,
    k: Tensor,
    mask_ptr: Tensor,
    layout: Layout,
    mask_strides: tuple[int, int],
    options: Options,
    flags: dict[str, Any],
    sizes: dict[str, Any],
    start: tuple[Tensor, Tensor] | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The running pair before every ``options.blocks.carry`` queries ``(P, kept, K)`` and after the last ``(P, K)``."""
    acc_t, _ = accumulator(q.dtype)
    programs, n_q, n_k = layout.programs, layout.n_q, layout.n_k
    every = options.blocks.carry
    carry_m = torch.empty(programs, triton.cdiv(max(n_q, 1), every), n_k, dtype=acc_t, device=q.device)
    carry_s = torch.empty_like(carry_m)
    last_m, last_s = (torch.empty(layout.k_rows, dtype=acc_t, device=q.device) for _ in range(2))
    start_m, start_s = start if start is not None else (last_m, last_s)
    carry_off, stride_cb = carry_places(layout, options.blocks, every)
    columns.carries[(triton.cdiv(max(n_k, 1), sizes["BK"]), programs)](
        q, k, mask_ptr, start_m, start_s, carry_m, carry_s, last_m, last_s,
        layout.q, layout.k, layout.mask, layout.kstat, carry_off, layout.len_q, layout.len_k,
        q.stride(-2), q.stride(-1), k.stride(-2), k.stride(-1), *mask_strides, stride_cb,
        q.shape[-1], options.scale, options.softcap or 1.0, 0 if start is None else start_m.shape[-1],
        ALIGN_END=options.align_end, HAS_START=start is not None,
        BQ=every, BK=sizes["BK"], BD=sizes["BD"], **flags,
    )  # fmt: skip
    return carry_m, carry_s, last_m, last_s


def _row_pass(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask_ptr: Tensor,
    column: tuple[Tensor, Tensor, Tensor] | None,
    carry: tuple[Tensor, Tensor, Tensor, Tensor] | None,
    alpha: Tensor,
    outs: tuple[Tensor, Tensor, Tensor],
    pairs_b: tuple[Tensor, Tensor],
    pairs_p: tuple[Tensor, Tensor] | None,
    layout: Layout,
    mask_strides: tuple[int, int],
    options: Options,
    flags: dict[str, Any],
    sizes: dict[str, Any],
    grid: tuple[int, int],
    *,
    biased: bool,
    plain: bool,
    values: bool,
    round_: bool,
    running: bool,
    seed: Tensor | None,
) -> None:
    empty = outs[0].new_empty(1) if values else pairs_b[0].new_empty(1)
    shift, col_m, col_s = column if column is not None else (empty, empty, empty)
    carry_m, carry_s = (carry[0], carry[1]) if carry is not None else (empty, empty)
    carry_off, stride_cb = carry_places(layout, options.blocks, sizes["BQ"])
    dropout = options.dropout if seed is not None else 0.0
    threshold = min(round(dropout * 2**31), 2**31 - 1)
    p_m, p_s = pairs_p if pairs_p is not None else (empty, empty)
    rows.row_pass[grid](
        q, k, v, mask_ptr, shift, col_m, col_s, carry_m, carry_s, alpha,
        outs[0], outs[1], outs[2], pairs_b[0], pairs_b[1], p_m, p_s,
        layout.q, layout.k, layout.v, layout.mask, layout.out, layout.kstat, layout.qstat, carry_off, layout.alpha,
        layout.len_q, layout.len_k, layout.head, layout.seed,
        q.stride(-2), q.stride(-1), k.stride(-2), k.stride(-1), v.stride(-2), v.stride(-1), *mask_strides,
        v.shape[-1], 1, stride_cb,  # outputs: contiguous (P, T, Dv)
        q.shape[-1], v.shape[-1], options.scale, options.softcap or 1.0, threshold, 1.0 / (1.0 - dropout),
        CAUSAL=options.causal, ALIGN_END=options.align_end, BIASED=biased, ROUND=round_, RUNNING=running,
        PLAIN=plain, VALUES=values, DROPOUT=dropout > 0, HAS_LEAD=layout.has_lead, **sizes, **flags,
    )  # fmt: skip
