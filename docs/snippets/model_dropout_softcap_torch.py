"""Training with dropout on the weights and Gemma-style softcapping (torch)."""

import torch

import dnorm

torch.manual_seed(0)  # dropout draws its seed from torch's generator: runs are reproducible
query, key, value = (torch.randn(2, 4, 128, 32, requires_grad=True) for _ in range(3))

out = dnorm.attention(query, key, value, "hybrid", causal=True, softcap=30.0, dropout_p=0.1)
out.square().mean().backward()  # the backward pass regenerates the same dropout mask block by block
assert all(t.grad is not None for t in (query, key, value))

# Evaluation: pass dropout_p=0 (as with torch's scaled_dot_product_attention, dropout applies whenever p > 0).
with torch.no_grad():
    evaluation = dnorm.attention(query, key, value, "hybrid", causal=True, softcap=30.0)
print("dropout and softcap: ok", tuple(evaluation.shape))
