"""Train with doubly-normalized attention on torch: gradients from the memory-light backward pass."""

import torch

import dnorm

q, k, v = (torch.randn(2, 4, 512, 64, requires_grad=True) for _ in range(3))
alpha = torch.full((4,), 0.5, requires_grad=True)  # a learned hybrid weight, one per head

loss = dnorm.attention(q, k, v, "hybrid", alpha=alpha, causal=True).square().mean()
loss.backward()  # keeps O(T + K) numbers per head between the passes, never the 512 x 512 scores
print(q.grad.shape, alpha.grad)
