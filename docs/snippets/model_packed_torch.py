"""Packed batches: sequences of different lengths with no padding, as offsets or as nested tensors."""

import torch

import dnorm

heads, dim = 4, 16
lengths = [5, 12, 3]
cu_seqlens = [0, 5, 17, 20]  # FlashAttention's convention: offsets into the packed axis
query, key, value = (torch.randn(heads, sum(lengths), dim) for _ in range(3))

packed = dnorm.varlen_attention(query, key, value, cu_seqlens, "doubly", causal=True)
second = dnorm.attention(query[:, 5:17], key[:, 5:17], value[:, 5:17], "doubly", causal=True)
torch.testing.assert_close(packed[:, 5:17], second)  # every sequence is normalized on its own

# torch nested jagged tensors, laid out as scaled_dot_product_attention takes them: (batch, heads, j, dim)
parts = [torch.randn(n, heads, dim) for n in lengths]
nested = torch.nested.as_nested_tensor(parts, layout=torch.jagged).transpose(1, 2)
out = dnorm.attention(nested, nested, nested, "doubly")
assert out.is_nested
torch.testing.assert_close(out.unbind()[2], dnorm.attention(*(parts[2].transpose(0, 1),) * 3, "doubly"))
print("packed batches: ok")
