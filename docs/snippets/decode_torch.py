"""Decoding with torch: grouped-query heads and a left-padded batch, several new queries per call."""

import torch

import dnorm

q = torch.randn(2, 8, 12, 32)  # 8 query heads ...
k, v = torch.randn(2, 2, 12, 32), torch.randn(2, 2, 12, 32)  # ... over 2 key/value heads
real = torch.ones(2, 1, 1, 12, dtype=torch.bool)
real[1, ..., :3] = False  # the second sequence starts with 3 padding positions

state, outs = None, []
for start, stop in [(0, 7), (7, 9), (9, 12)]:  # a prefill, then a two-token draft, then three more
    out, state = dnorm.decode(
        q[..., start:stop, :], k[..., :stop, :], v[..., :stop, :], state, "hybrid", mask=real[..., :stop]
    )
    outs.append(out)

expected = dnorm.attention(q, k, v, "hybrid", causal=True, mask=real)  # grouped heads, without copies
torch.testing.assert_close(torch.cat(outs, dim=-2), expected)
