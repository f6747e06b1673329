"""The thin launcher: the forward passes of each scheme as Triton launches over a :class:`~.layout.Layout`.

A call's inputs arrive as the routing layer hands them (grouped-query heads
split, the mask at least two-dimensional, ``alpha`` an array broadcasting over
``(..., T, K)``), in their own dtype: half precision is read as it is, every
product accumulates in float32 and every statistic is float32 (float64 for
float64 inputs). The forward pass returns the output and the residuals the
backward pass needs: O(T + K) numbers per head, and for the causal variants
the carries at each query block's start (spec DEF-BLOCKED-BACKWARD).

Every launch passes its arguments by name: :class:`Inputs` holds what every
kernel of a call reads (the tensors, where each program finds its sequence,
strides, sizes and compile-time switches) and :func:`dnorm._triton.configs.
Tunable.bind` hands each kernel the ones it takes, so that a new pointer is one
edit in the kernel and one where it is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._kernels import schemes
from . import columns, rows, sinks
from .configs import Blocks
from .layout import Layout, dense

#: The blocks of a call that names none (the interpreter's size).
SMALL = Blocks((16, 16), (16, 16))


@dataclass(frozen=True)
class LaunchOptions:
    """The static part of a Triton call (hashable).

    ``align_end``: the causal triangle is bottom-right aligned (query ``i``
    sees the keys ``j <= i + K - T``); ``blocks`` the query and key block
    sizes of the passes (:class:`Blocks`); ``lead`` the leading shape of the
    scores (grouped heads split); ``packed``: the sequences' offsets of a packed batch
    along axis -2 (queries, keys), each normalized on its own. ``sink``: a sink joins
    the rows (spec DEF-SINK); ``attend_current``: as :func:`dnorm.attention`'s;
    ``dropped``: positions before the first query beyond the causal offset (a
    decoding cache that dropped them), which the running sink statistic counts.
    ``q_start``: how many positions the first query comes after the first key,
    beyond the alignment (the causal triangle's diagonal moved right): a key
    block of a sharded sequence that the queries come after.
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
    sink: bool = False
    attend_current: bool = False
    dropped: int = 0
    q_start: int = 0

    def plan(self) -> schemes.Plan:
        """What the call computes (:func:`dnorm._kernels.schemes.plan`)."""
        return schemes.plan(
            self.scheme, causal=self.causal, n_iter=self.n_iter, sink=self.sink, attend_current=self.attend_current
        )


class Pair(NamedTuple):
    """A log-sum-exp statistic as ``(max, sum)`` buffers: per key, per query, or per carry."""

    max: Tensor
    sum: Tensor


class Round(NamedTuple):
    """One column statistic: ``stat`` of ``S - shift`` per key (``shift``: zeros in round one)."""

    shift: Tensor
    stat: Pair


class Carries(NamedTuple):
    """The running column statistic before every ``blocks.carry`` queries, ``(P, kept, K)``, and after the last
    query (the state of decoding)."""

    before: Pair
    last: Pair


class Components(NamedTuple):
    """The hybrid's two outputs, kept for its backward pass."""

    biased: Tensor
    plain: Tensor


class Residuals(NamedTuple):
    """What the backward pass needs (arrays only, O(T + K) per head but for the causal carries).

    ``columns``: per round the column statistic (one round for doubly, ``n_iter`` for Sinkhorn, none otherwise);
    ``rows``: per Sinkhorn round but the last, the row statistic of ``S - c`` (the next round's row potential);
    ``biased`` and ``plain``: the row statistics of each component's softmax; ``carries``: the running statistic
    (causal); ``outputs``: the hybrid's two components; ``sinks``: with a sink, per round its biased logit per
    program (spec DEF-SINK); ``sink``: the sink per program, where a plain component takes it.
    """

    columns: tuple[Round, ...]
    rows: tuple[Pair, ...]
    biased: Pair | None
    plain: Pair | None
    carries: Carries | None
    outputs: Components | None
    sinks: tuple[Tensor, ...] = ()
    sink: Tensor | None = None


def accumulator(dtype: torch.dtype, /) -> tuple[torch.dtype, Any]:
    """The dtype of statistics and accumulators, in torch and in Triton: float64 for float64, float32 otherwise."""
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


@dataclass(frozen=True)
class Inputs:
    """What every launch of one call reads, by the kernels' parameter names (:meth:`arguments`).

    ``mask`` is the mask (None without one); ``layout`` where each program finds its sequence; ``row_bias`` the
    sigmoid's bias per row, a ``q_rows`` buffer (None: zeros, the bias in the mask).
    """

    q: Tensor
    k: Tensor
    v: Tensor
    mask: Tensor | None
    alpha: Tensor
    layout: Layout
    options: LaunchOptions
    row_bias: Tensor | None = None

    @property
    def acc(self) -> torch.dtype:
        return accumulator(self.q.dtype)[0]

    def empty(self) -> Tensor:
        """A stand-in for a buffer a launch does not read (its switch is off)."""
        return torch.empty(1, dtype=self.acc, device=self.q.device)

    def new(self, *shape: int) -> Tensor:
        return torch.empty(*shape, dtype=self.acc, device=self.q.device)

    def sizes(self, *, backward: bool = False) -> dict[str, int]:
        """The tile sizes of the forward passes (or of the ``backward`` ones), head sizes padded to powers of two."""
        bq, bk = self.options.blocks.backward if backward else self.options.blocks.forward
        head = max(16, triton.next_power_of_2(self.q.shape[-1]))
        return {"BQ": bq, "BK": bk, "BD": head, "BDV": max(16, triton.next_power_of_2(self.v.shape[-1]))}

    def carry_places(self, block_q: int, /) -> dict[str, Any]:
        """Where each program's causal carries start (a ``(P, cdiv(T, blocks.carry), K)`` buffer) and how far apart
        the carries of two consecutive query blocks of ``block_q`` rows are."""
        layout, blocks = self.layout, self.options.blocks
        kept = triton.cdiv(max(layout.n_q, 1), blocks.carry)
        starts = torch.arange(layout.programs, dtype=torch.int64, device=self.q.device) * (kept * layout.n_k)
        return {"carry_off": starts, "stride_cb": layout.n_k * (block_q // blocks.carry)}

    def arguments(self) -> dict[str, Any]:
        """The arguments every kernel of the call may take, by name."""
        q, k, v, mask, options = self.q, self.k, self.v, self.mask, self.options
        _, acc = accumulator(q.dtype)
        gated = options.plan().rows == "gated"
        row_bias = self.row_bias
        if row_bias is None:
            row_bias = torch.zeros(self.layout.q_rows, dtype=self.acc, device=q.device) if gated else self.empty()
        mm, mn = (0, 0)
        if mask is not None:
            view = mask.expand(*options.lead, self.layout.n_q, self.layout.n_k)
            mm, mn = view.stride(-2), view.stride(-1)
        return {
            "Q": q, "K": k, "V": v, "MASK": self.empty() if mask is None else mask,
            "ALPHA": self.alpha if self.alpha.ndim else self.alpha.reshape(1),
            **self.layout.offsets(),
            "stride_qt": q.stride(-2), "stride_qd": q.stride(-1), "stride_kt": k.stride(-2),
            "stride_kd": k.stride(-1), "stride_vt": v.stride(-2), "stride_vd": v.stride(-1),
            "stride_mm": mm, "stride_mn": mn,
            "d": q.shape[-1], "dv": v.shape[-1], "scale": options.scale, "softcap": options.softcap or 1.0,
            "HAS_MASK": mask is not None, "MASK_BOOL": mask is not None and mask.dtype == torch.bool,
            "SOFTCAP": options.softcap is not None, "CAUSAL": options.causal, "ALIGN_END": options.align_end,
            "HAS_SINK": self.options.plan().sink, "GATED": gated, "ROW_BIAS": row_bias,
            "dropped": options.dropped, "q_start": options.q_start,
            "HAS_LEAD": self.layout.has_lead, "HALF": q.dtype in (torch.float16, torch.bfloat16), "ACC": acc,
            "PRECISION": "ieee" if q.dtype in (torch.float32, torch.float64) else "tf32",
        }  # fmt: skip

    def dropout(self, seed: Tensor | None, /) -> dict[str, Any]:
        """Dropout's arguments: the threshold of its hash and the factor of the kept weights."""
        p = self.options.dropout if seed is not None else 0.0
        return {"threshold": min(round(p * 2**31), 2**31 - 1), "factor": 1.0 / (1.0 - p), "DROPOUT": p > 0}


def forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    alpha: Tensor,
    seed: Tensor | None,
    /,
    *,
    options: LaunchOptions,
    layout: Layout | None = None,
    start: Pair | None = None,
    sink: Tensor | None = None,
) -> tuple[Tensor, Residuals]:
    """The output ``(q_rows, Dv)`` (``P * T`` rows, or a packed batch's per leading index) in the compute dtype, and
    the residuals.

    ``start`` is decoding's state before the call (causal only), a pair of ``(P, K - T)`` arrays; ``sink`` the
    sink's score, ``(..., 1, 1)`` over the lead (``options.sink``).
    """
    inputs = Inputs(q, k, v, mask, alpha, layout or dense(q, k, v, mask, alpha, seed, options.lead), options)
    how = options.plan()
    layout = inputs.layout
    empty = inputs.empty()
    cols: list[Round] = []
    potentials: list[Pair] = []
    logits: list[Tensor] = []  # with a sink: its biased logit after each round, per program
    sink_p = sinks.per_program(sink, layout, options.lead, inputs.acc) if how.sink and sink is not None else None
    for t in range(how.rounds):
        shift = torch.zeros(layout.k_rows, dtype=inputs.acc, device=q.device)
        if t > 0:
            shift = torch.where(cols[0].stat.max == -torch.inf, 0.0, cols[0].stat.max)
        cols.append(Round(shift, column_stats(inputs, shift, potentials[-1] if potentials else None)))
        if how.sink:  # spec THM-SINK-IN-EVERY-ROUND
            first = sinks.first_round(layout, inputs.acc)
            logits.append(first if t == 0 else sinks.next_round(sinks.rows_of(layout), potentials[-1], layout.programs))
        if t < how.rounds - 1:  # the row potential of this round, for the next one
            potentials.append(Pair(inputs.new(layout.q_rows), inputs.new(layout.q_rows)))
            row_pass(
                inputs, None, cols[-1], None, row_b=potentials[-1], row_p=None, outputs=None, round_=t > 0,
                sink=(logits[-1] if logits else None, None),
            )  # fmt: skip
    carry = carries(inputs, start) if how.running else None
    out = inputs.new(layout.q_rows, v.shape[-1])
    components = Components(inputs.new(*out.shape), inputs.new(*out.shape)) if how.mixed else None
    row_b = Pair(inputs.new(layout.q_rows), inputs.new(layout.q_rows)) if how.biased else None
    row_p = Pair(inputs.new(layout.q_rows), inputs.new(layout.q_rows)) if how.plain else None
    row_pass(
        inputs, seed, cols[-1] if cols else None, carry, row_b=row_b, row_p=row_p,
        outputs=(out, components or Components(empty, empty)), round_=how.rounds > 1,
        sink=(logits[-1] if logits else None, sink_p),
    )  # fmt: skip
    return out, Residuals(tuple(cols), tuple(potentials), row_b, row_p, carry, components, tuple(logits), sink_p)


def column_stats(inputs: Inputs, shift: Tensor, potential: Pair | None, /) -> Pair:
    """One round's column statistic per key (the first round's, or a later one's from the row potential)."""
    layout, empty = inputs.layout, inputs.empty()
    found = Pair(inputs.new(layout.k_rows), inputs.new(layout.k_rows))
    sizes = inputs.sizes()
    kernel = columns.column_stats
    kernel[(triton.cdiv(max(layout.n_k, 1), sizes["BK"]), layout.programs)](
        **kernel.bind(
            inputs.arguments(), sizes, SHIFT=shift, ROWS_M=potential.max if potential else empty,
            ROWS_S=potential.sum if potential else empty, OUT_M=found.max, OUT_S=found.sum, ROUND=potential is not None,
        )
    )  # fmt: skip
    return found


def carries(inputs: Inputs, start: Pair | None, /) -> Carries:
    """The running pair before every ``options.blocks.carry`` queries and after the last one."""
    layout = inputs.layout
    every = inputs.options.blocks.carry
    before = Pair(*(inputs.new(layout.programs, triton.cdiv(max(layout.n_q, 1), every), layout.n_k) for _ in "ms"))
    last = Pair(inputs.new(layout.k_rows), inputs.new(layout.k_rows))
    begin = start if start is not None else last
    sizes = {**inputs.sizes(), "BQ": every}
    kernel = columns.carries
    kernel[(triton.cdiv(max(layout.n_k, 1), sizes["BK"]), layout.programs)](
        **kernel.bind(
            inputs.arguments(), sizes, inputs.carry_places(every), START_M=begin.max, START_S=begin.sum,
            CARRY_M=before.max, CARRY_S=before.sum, LAST_M=last.max, LAST_S=last.sum,
            n_start=0 if start is None else start.max.shape[-1], HAS_START=start is not None,
        )
    )  # fmt: skip
    return Carries(before, last)


def row_pass(
    inputs: Inputs,
    seed: Tensor | None,
    column: Round | None,
    carry: Carries | None,
    /,
    *,
    row_b: Pair | None,
    row_p: Pair | None,
    outputs: tuple[Tensor, Components] | None,
    round_: bool,
    sink: tuple[Tensor | None, Tensor | None] = (None, None),
) -> None:
    """The row pass: each component's row statistic (``row_b``, ``row_p``) and, with ``outputs``, the output (and
    the hybrid's components); without them only the biased rows' statistic (Sinkhorn's row potential). ``sink``:
    the biased and the plain component's sink logit per program (the running one is formed in the kernel)."""
    layout, empty = inputs.layout, inputs.empty()
    sizes = inputs.sizes()
    out, components = outputs if outputs is not None else (empty, Components(empty, empty))
    kernel = rows.row_pass
    kernel[(triton.cdiv(max(layout.n_q, 1), sizes["BQ"]), layout.programs)](
        **kernel.bind(
            inputs.arguments(), sizes, inputs.carry_places(sizes["BQ"]), inputs.dropout(seed),
            SHIFT=column.shift if column else empty, COL_M=column.stat.max if column else empty,
            COL_S=column.stat.sum if column else empty, CARRY_M=carry.before.max if carry else empty,
            CARRY_S=carry.before.sum if carry else empty, OUT=out, OUT_B=components.biased, OUT_P=components.plain,
            ROW_M_B=row_b.max if row_b else empty, ROW_S_B=row_b.sum if row_b else empty,
            ROW_M_P=row_p.max if row_p else empty, ROW_S_P=row_p.sum if row_p else empty,
            SINK_B=empty if sink[0] is None else sink[0], SINK_P=empty if sink[1] is None else sink[1],
            stride_ot=inputs.v.shape[-1], stride_od=1,  # outputs: contiguous (P, T, Dv)
            BIASED=row_b is not None, ROUND=round_, RUNNING=carry is not None, PLAIN=row_p is not None,
            VALUES=outputs is not None,
        )
    )  # fmt: skip
