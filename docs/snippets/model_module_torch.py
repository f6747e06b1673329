"""A drop-in for torch.nn.MultiheadAttention: load a trained module's weights, then change the scheme."""

import torch

from dnorm.integrations.torch import MultiheadAttention

torch.manual_seed(0)
trained = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
x, memory = torch.randn(2, 7, 32), torch.randn(2, 9, 32)
padding = torch.zeros(2, 9, dtype=torch.bool)
padding[1, 6:] = True  # torch's convention: True = padding, ignored

ours = MultiheadAttention.from_torch(trained, scheme="softmax")  # torch's weights, torch's results
want, want_weights = trained(x, memory, memory, key_padding_mask=padding)
got, got_weights = ours(x, memory, memory, key_padding_mask=padding, need_weights=True)
torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
torch.testing.assert_close(got_weights, want_weights, rtol=1e-5, atol=1e-6)

# The same weights under doubly-normalized attention, e.g. to fine-tune from a softmax checkpoint
doubly = MultiheadAttention.from_torch(trained, scheme="doubly")
out, _ = doubly(x, memory, memory, key_padding_mask=padding)
print("MultiheadAttention: ok", tuple(out.shape))
