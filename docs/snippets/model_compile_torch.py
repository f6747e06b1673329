"""torch.compile(fullgraph=True) of a layer that calls dnorm: one graph, forward and backward."""

import torch

import dnorm


def layer(q, k, v):
    return dnorm.attention(q, k, v, "doubly", causal=True)


compiled = torch.compile(layer, fullgraph=True)
q, k, v = (torch.randn(1, 2, 32, 8, requires_grad=True) for _ in range(3))
out = compiled(q, k, v)
out.sum().backward()
torch.testing.assert_close(out, layer(q, k, v))
print("torch.compile: ok")
