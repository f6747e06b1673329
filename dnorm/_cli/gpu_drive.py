"""How ``dnorm compile`` makes each :class:`~dnorm._cli.gpu_compile.Variant`'s call: through dnorm's public
functions (or, for the sharded stops, the routing layer under them), forward and backward, with CPU tensors of the
case's dtype, inside a compile-only session, so that exactly the launches a GPU would see are compiled."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import _validate as check

Variant = Any  # a dnorm._cli.gpu_compile.Variant (imported there: no cycle)


def drive(variant: Variant, dtype: str, head_dim: int, /) -> None:
    """Call dnorm as ``variant`` says, forward and backward, with ``kernel="triton"`` on CPU tensors."""
    import torch

    import dnorm

    gen = torch.Generator().manual_seed(0)
    dt = getattr(torch, dtype)
    heads, kv_heads = (4, 2) if variant.grouped else (2, 2)
    n_q, n_k = (64, 128) if variant.causal == "bottom-right" else (128, 128)
    training = variant.entry in ("attention", "varlen", "sharded")

    def normal(*shape: int, grad: bool = training) -> Any:
        return torch.randn(*shape, generator=gen).to(dt).requires_grad_(grad)

    lead: tuple[int, ...] = () if variant.flat else (1,)
    q = normal(*lead, heads, n_q, head_dim) if not variant.flat else normal(n_q, head_dim)
    k, v = (normal(*lead, kv_heads, n_k, head_dim) if not variant.flat else normal(n_k, head_dim) for _ in range(2))
    options: dict[str, Any] = {"kernel": "triton"}
    options["alpha"] = torch.linspace(0.2, 0.8, heads) if variant.grouped else 0.3  # the hybrid's (others: unused)
    if variant.sink:
        options["sink"] = torch.linspace(-1.0, 1.0, heads).requires_grad_(training)
    if variant.softcap:
        options["softcap"] = 20.0
    if variant.entry in ("prefill", "decode"):
        _decode(variant, q, k, v, options, gen)
        return
    if variant.entry == "sharded":
        _sharded(variant, q, k, v, options, gen)
        return
    if variant.causal is not None:
        options["causal"] = variant.causal
    if variant.dropout:
        options |= {"dropout_p": 0.1, "dropout_key": torch.Generator().manual_seed(1)}
    if variant.entry == "varlen":
        starts_k = [0, 37, 37, n_k]  # a sequence with no positions among them
        starts_q = starts_k if n_q == n_k else [0, 20, 20, n_q]
        out = dnorm.varlen_attention(q, k, v, starts_q, variant.scheme, cu_seqlens_k=starts_k, **options)
    else:
        if variant.mask == "bool":
            options["mask"] = torch.rand(n_q, n_k, generator=gen) < 0.9
        elif variant.mask == "float":
            options["mask"] = normal(n_q, n_k)
        out = dnorm.attention(q, k, v, variant.scheme, **options)
    out.float().sum().backward()


def _decode(variant: Variant, q: Any, k: Any, v: Any, options: dict[str, Any], gen: Any, /) -> None:
    """Decoding: ``"prefill"`` 64 positions without a state (the forward pass); ``"decode"`` 8 positions without
    a state, a step of one from its state (both the split-key step) and a chunk of 24 from that (the forward pass
    continuing the carry)."""
    import torch

    import dnorm

    def mask(n_q: int, n_k: int) -> Any:
        if variant.mask == "bool":
            return torch.rand(n_q, n_k, generator=gen) < 0.9
        return None if variant.mask is None else torch.randn(n_q, n_k, generator=gen).to(q.dtype)

    state = None
    cuts = (0, 64) if variant.entry == "prefill" else (0, 8, 9, 33)
    for a, b in itertools.pairwise(cuts):
        call = (q[..., a:b, :], k[..., :b, :], v[..., :b, :], state, variant.scheme)
        _, state = dnorm.decode(*call, mask=mask(b - a, b), **options)


def _sharded(variant: Variant, q: Any, k: Any, v: Any, options: dict[str, Any], gen: Any, /) -> None:
    """This participant's shard of :func:`dnorm.distributed.attention` with ``kernel="triton"`` (the fused stops),
    forward and backward, as the public function makes it once it has its ring: the ring is :class:`_Mirror`."""
    import torch

    from .._distributed import participants
    from .._routing import sharded as routing

    xp = check.namespace(query=q)
    alpha, sink = options["alpha"], options.get("sink")
    asked = check.Asked(
        variant.scheme, causal=variant.causal is not None, softcap=options.get("softcap"), kernel="triton", sink=sink
    )
    request = check.attention_request(q, k, v, None, alpha, asked, xp=xp)
    padding = torch.rand(*k.shape[:-3], k.shape[-2], generator=gen) < 0.9 if variant.mask == "bool" else None
    mask = participants.key_mask(padding, k, xp=xp)
    per_head = check.PerHead(alpha, sink)
    ring = _Mirror()
    out = routing.attention(q, k, v, mask, per_head, request, ring, layout="contiguous", strategy="ring", xp=xp)
    out.float().sum().backward()


@dataclass(frozen=True)
class _Mirror:
    """Place 1 of two participants, with no collective: :meth:`pass_on` hands back the arrays it was given.

    Under a compile-only session nothing runs, so what the blocks hold does not matter: the sweeps' turns decide
    what launches, and at place 1 they take both kinds, the own block (the causal triangle) and an earlier one
    (``q_start`` past 0, a running statistic that starts from a carry).
    """

    size: int = 2

    def rank(self) -> int:
        return 1

    def pass_on(self, arrays: tuple[Any, ...], by: int, /) -> Callable[[], tuple[Any, ...]]:
        return lambda: arrays

    def shared_gradient(self, grad: Any, primal: Any, /) -> Any:
        return grad

    def gather(self, x: Any, axis: int, /) -> Any:
        import torch

        return torch.cat([x] * self.size, dim=axis)

    def total(self, x: Any, /) -> Any:
        return x * self.size

    def largest(self, x: Any, /) -> Any:
        return x

    def scatter_total(self, x: Any, axis: int, /) -> Any:
        return x.chunk(self.size, dim=axis)[1] * self.size
