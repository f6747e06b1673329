"""The backward sweeps of :func:`.sharded.forward`: those of :mod:`dnorm._kernels.sharded_backward`, stop by stop
on the Triton backward passes (:mod:`.gradients`).

Sums over the queries travel with the key block and come home with it, sums over the keys stay with the
queries (spec THM-DNAS-GRADIENT, THM-SINKHORN-GRADIENT, THM-CAUSAL-GRADIENT):

* a statistic of the key alone: one sweep of the key pass for ``gamma`` (``GAMMA_ONLY``), two per earlier
  Sinkhorn round through the potentials (:func:`.gradients.potentials_pass`), then one of the key and query
  passes with every round's terms (``FULL_DS``: ``dS = dZ + sum_u P^u dc^u + ...``);
* the running statistic: one backward sweep, the key pass starting each block's reverse scan from the carry of
  the later participants' queries (``G_AFTER``) and handing on its value at this participant's first query;
* softmax: one sweep of the two passes.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.torch as xp
import torch
from torch import Tensor

from .._kernels import rows as row_ops
from .._kernels import schemes, sharded
from .._kernels.ring import Turn, sweep
from .._kernels.shapes import sum_to
from .._kernels.sharded_collective import every_key
from . import launch
from .backward import keys
from .gradients import arguments, deltas, grids, keys_buffers, potentials_pass, queries_pass
from .launch import Inputs, Pair, Round
from .sharded import Residuals, Stops


def backward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_mask: Tensor | None,
    params: Any,
    out: Tensor,
    residuals: Residuals,
    grad: Tensor,
    /,
    *,
    options: sharded.ShardedOptions,
) -> tuple[Tensor, Tensor, Tensor, Any]:
    """Gradients of this participant's ``query``, ``key`` and ``value`` shards and its share of ``params``' (as
    :func:`dnorm._kernels.sharded_backward.backward` returns them)."""
    given = params
    key_shape, value_shape = tuple(key.shape), tuple(value.shape)
    key, value, key_mask = every_key(key, value, key_mask, options)
    stops = Stops(query, params, sharded.lead(query, key), options)
    how, params = stops.how, stops.params
    n_rows = stops.rows()
    flat_grad = grad.to(value.dtype).reshape(n_rows, -1).contiguous()
    own = stops.inputs(key, value, key_mask)
    delta_b, delta_p, _ = deltas(own, out.reshape(n_rows, -1), residuals.outputs, flat_grad)
    work = _Work(stops, residuals, flat_grad, delta_b, delta_p)
    d_columns: list[Tensor] = []
    if how.rounds:
        d_columns = work.potentials(key, value, key_mask)
    d_query, d_key, d_value, d_bias = work.scores_pass(key, value, key_mask, d_columns)
    if options.gathered:  # every participant's share of every key's gradient: each key's sum goes to its owner
        d_key, d_value = (options.ring.scatter_total(x, -2) for x in (d_key, d_value))
    lead = stops.lead
    d_params: Any = None
    if how.mixed:
        assert residuals.outputs is not None
        biased, plain = (x.reshape(*lead, query.shape[-2], -1) for x in residuals.outputs)
        mixed = row_ops.mix_gradient(grad.to(biased.dtype), biased, plain, xp=xp)
        d_params = sum_to(mixed, tuple(params.alpha.shape), xp=xp)
    if isinstance(given, sharded.RowBias):  # spec DEF-SIGMOID: sum_j dS_ij of each row
        assert d_bias is not None
        d_params = sharded.RowBias(sum_to(d_bias.reshape(*lead, query.shape[-2], 1), tuple(given.bias.shape), xp=xp))
    if isinstance(given, schemes.Parameters):
        d_sink = None
        if params.sink is not None and residuals.plain is not None:  # spec THM-SINK-GRADIENT: -sum_i a_i delta_i
            stat = residuals.plain
            log_total = (stat.max + torch.log(stat.sum)).reshape(*lead, query.shape[-2], 1)
            share = torch.exp(params.sink - log_total) * delta_p.reshape(log_total.shape)
            d_sink = sum_to(-share, tuple(params.sink.shape), xp=xp)
        d_params = schemes.Parameters(d_params, d_sink)
    return (
        sum_to(d_query, tuple(query.shape), xp=xp).to(query.dtype),
        sum_to(d_key, key_shape, xp=xp).to(key.dtype),
        sum_to(d_value, value_shape, xp=xp).to(value.dtype),
        d_params,
    )


class _Work:
    """What every backward sweep reads, and the sweeps."""

    def __init__(self, stops: Stops, residuals: Residuals, grad: Tensor, delta_b: Tensor, delta_p: Tensor) -> None:
        self.stops, self.residuals, self.grad, self.delta_b, self.delta_p = stops, residuals, grad, delta_b, delta_p
        self.rounds = len(residuals.columns)
        self.n_rows = stops.rows()
        self.d_rows: list[Tensor] = []  # the row potentials' gradients, found by potentials() from the last round

    def shared(
        self,
        inputs: Inputs,
        columns: tuple[Round, ...],
        d_columns: list[Tensor],
        d_rows: list[Tensor],
        *,
        carry: launch.Carries | None = None,
        g_after: Tensor | None = None,
    ) -> dict[str, Any]:
        """The backward passes' arguments at a stop: the block's statistics and the potentials' gradients."""
        r = self.residuals
        stats = launch.Residuals(columns, r.rows, r.biased, r.plain, carry, None)
        acc, device = inputs.acc, inputs.q.device
        n_keys = inputs.layout.k_rows
        dc = torch.stack(d_columns) if d_columns else torch.zeros(1, n_keys, dtype=acc, device=device)
        dr = torch.stack(d_rows) if d_rows else torch.zeros(1, self.n_rows, dtype=acc, device=device)
        return arguments(inputs, stats, self.grad, self.delta_b, self.delta_p, dc=dc, dr=dr, g_after=g_after)

    def columns(self, per_key: list[Tensor] | tuple[Tensor, ...], /) -> tuple[Round, ...]:
        """The rounds' column statistics of the block at hand, from the arrays it travels with."""
        return tuple(Round(per_key[3 * u], Pair(per_key[3 * u + 1], per_key[3 * u + 2])) for u in range(self.rounds))

    def travelling(self) -> tuple[Tensor, ...]:
        return tuple(x for column in self.residuals.columns for x in (column.shift, *column.stat))

    def potentials(self, key: Tensor, value: Tensor, key_mask: Tensor | None) -> list[Tensor]:
        """Every round's column potential gradient ``dc`` of this participant's keys: ``-gamma`` of the last, then
        back through Sinkhorn's rounds (:meth:`_row_sums`, :meth:`_column_sums`)."""
        options = self.stops.sharded

        def visit(turn: Turn, read: tuple[Tensor, ...], added: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            k, v, m, *per_key = read
            inputs = self.stops.inputs(k, v, m)
            shared = self.shared(inputs, self.columns(per_key), [], [])
            d_k, d_v, gamma = keys_buffers(inputs)
            grid_k, _ = grids(inputs)
            keys[grid_k](**keys.bind(shared, DK=d_k, DV=d_v, GAMMA=gamma, GAMMA_ONLY=True, FULL_DS=False))
            return (added[0] + gamma,)

        zero = torch.zeros(self.stops.keys(key), dtype=self.stops.acc, device=key.device)
        (gamma,) = sweep(options.sweeps, (key, value, key_mask, *self.travelling()), (zero,), visit)
        if options.gathered:
            gamma = options.ring.total(gamma)
        d_columns = [-gamma]
        for u in range(self.rounds - 2, -1, -1):
            d_columns.insert(0, torch.zeros_like(gamma))  # round u's, found next
            d_row = self._row_sums(key, key_mask, d_columns, u)
            self.d_rows.insert(0, d_row)
            d_columns[0] = self._column_sums(key, key_mask, d_columns, u)
        return d_columns

    def _row_sums(self, key: Tensor, key_mask: Tensor | None, d_columns: list[Tensor], u: int) -> Tensor:
        """``dr^u_i = -sum_j exp(S - c^(u+1) - r^u) dc^(u+1)_j`` of this participant's queries, over every key."""
        total = [torch.zeros(self.n_rows, dtype=self.stops.acc, device=key.device)]
        n_rounds = len(d_columns)

        def visit(turn: Turn, read: tuple[Tensor, ...], added: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            k, m, *per_key = read
            inputs = self.stops.inputs(k, k, m)
            columns, travelled = self.columns(per_key[: 3 * self.rounds]), list(per_key[3 * self.rounds :])
            shared = self.shared(inputs, columns, [*([travelled[0]] * (self.rounds - n_rounds)), *travelled], [])
            d_out = torch.zeros(max(self.rounds - 1, 1), self.n_rows, dtype=inputs.acc, device=k.device)
            potentials_pass(inputs, shared, u, shared["DC"], d_out, to_rows=True)
            total[0] = total[0] + d_out[u]
            return added

        read = (key, key_mask, *self.travelling(), *d_columns)
        sweep(self.stops.sharded.sweeps, read, (), visit)
        return total[0]

    def _column_sums(self, key: Tensor, key_mask: Tensor | None, d_columns: list[Tensor], u: int) -> Tensor:
        """``dc^u_j = -sum_i exp(S - c^u - r^u) dr^u_i`` of this participant's keys, over every query."""
        options = self.stops.sharded
        d_rows = self.padded_rows()

        def visit(turn: Turn, read: tuple[Tensor, ...], added: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            k, m, *per_key = read
            inputs = self.stops.inputs(k, k, m)
            shared = self.shared(inputs, self.columns(per_key), [], d_rows)
            d_out = torch.zeros(self.rounds, inputs.layout.k_rows, dtype=inputs.acc, device=k.device)
            potentials_pass(inputs, shared, u, shared["DR"], d_out, to_rows=False)
            return (added[0] + d_out[u],)

        zero = torch.zeros_like(d_columns[-1])
        (total,) = sweep(options.sweeps, (key, key_mask, *self.travelling()), (zero,), visit)
        return options.ring.total(total) if options.gathered else total

    def padded_rows(self) -> list[Tensor]:
        """The row potentials' gradients found so far, placed at their rounds (zeros before them)."""
        missing = max(self.rounds - 1, 1) - len(self.d_rows)
        return [torch.zeros(self.n_rows, dtype=self.stops.acc, device=self.grad.device)] * missing + self.d_rows

    def scores_pass(
        self, key: Tensor, value: Tensor, key_mask: Tensor | None, d_columns: list[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``dQ`` of this participant's queries and ``dK``, ``dV`` of its keys (or of every key, gathered), each
        ``(*lead, n, head size)``, and sigmoid attention's row bias's gradient (flat): one sweep, backwards under
        the running statistic."""
        stops, how = self.stops, self.stops.how
        options = stops.sharded
        size = options.sweeps.size
        d_query: list[Tensor | None] = [None]
        d_bias: list[Tensor | None] = [None]
        d_rows = self.padded_rows() if self.rounds > 1 else []

        def visit(turn: Turn, read: tuple[Tensor, ...], added: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            k, v, m, *per_key = read
            q_start = stops.seen(turn, k)
            if q_start is None:
                return added
            inputs = stops.inputs(k, v, m, q_start=q_start)
            columns = self.columns(per_key[: 3 * self.rounds])
            d_cols = list(per_key[3 * self.rounds :])
            carry = self.residuals.carries[size - 1 - turn.step] if how.running else None
            g_after = added[0] if how.running else None
            shared = self.shared(inputs, columns, d_cols, d_rows, carry=carry, g_after=g_after)
            d_k, d_v, gamma = keys_buffers(inputs)
            grid_k, _ = grids(inputs)
            full_ds = bool(self.rounds) and not how.running
            keys[grid_k](**keys.bind(shared, DK=d_k, DV=d_v, GAMMA=gamma, GAMMA_ONLY=False, FULL_DS=full_ds))
            d_q, _, d_b = queries_pass(inputs, shared, mask_grad=False)
            d_query[0] = d_q if d_query[0] is None else d_query[0] + d_q
            if d_b is not None:
                d_bias[0] = d_b if d_bias[0] is None else d_bias[0] + d_b
            sums = (added[-2] + d_k, added[-1] + d_v)
            if not how.running:
                return sums
            g_carry = shared["G_CARRY"].reshape(inputs.layout.programs, -1, inputs.layout.n_k)
            return (g_carry[:, 0, :].reshape(-1), *sums)  # the reverse scan at this participant's first query

        probe = stops.inputs(key, value, key_mask)
        d_k, d_v, _ = keys_buffers(probe)
        added: tuple[Tensor, ...] = (d_k, d_v)
        if how.running:
            added = (torch.zeros(probe.layout.k_rows, dtype=stops.acc, device=key.device), *added)
        read = (key, value, key_mask, *self.travelling(), *d_columns)
        result = sweep(options.sweeps, read, added, visit, backwards=how.running)
        d_key, d_value = result[-2:]
        lead, n_q, n_k = stops.lead, stops.query.shape[-2], key.shape[-2]
        d, dv = key.shape[-1], value.shape[-1]
        d_q = d_query[0]
        assert d_q is not None  # the own block is always seen
        return (
            d_q[:, :d].reshape(*lead, n_q, d),
            d_key[:, :d].reshape(*lead, n_k, d),
            d_value[:, :dv].reshape(*lead, n_k, dv),
            d_bias[0],
        )
