"""Grouped-query attention and a padded batch in a torch model."""

import torch

import dnorm

batch, q_heads, kv_heads, length, dim = 2, 8, 2, 6, 16
query = torch.randn(batch, q_heads, length, dim)
key, value = torch.randn(2, batch, kv_heads, length, dim).unbind(0)  # 4 query heads per key head

# Grouped heads need no flag: the same as repeating each key head 4 times.
grouped = dnorm.attention(query, key, value, "doubly")
repeated = dnorm.attention(query, key.repeat_interleave(4, dim=1), value.repeat_interleave(4, dim=1), "doubly")
torch.testing.assert_close(grouped, repeated)

# A padded batch: the second sequence has 4 real positions. Under doubly every key's column statistic runs
# over the queries that may see it, so padding *queries* must be masked too, not only padding keys.
lengths = torch.tensor([6, 4])
real = torch.arange(length) < lengths[:, None]  # (batch, length)
mask = real[:, None, :, None] & real[:, None, None, :]  # queries and keys: (batch, 1, length, length)
padded = dnorm.attention(query, key, value, "doubly", mask=mask)
alone = dnorm.attention(query[1:, :, :4], key[1:, :, :4], value[1:, :, :4], "doubly")
torch.testing.assert_close(padded[1:, :, :4], alone)
assert (padded[1, :, 4:] == 0).all()  # padding queries see nothing: zero rows

# From a key-padding mask alone: the positions no query may attend are the padding, hidden as queries too.
keys_only = real[:, None, None, :].expand(batch, 1, length, length)
both = dnorm.masks.hide_queries(keys_only, dnorm.masks.unseen_keys(keys_only))
torch.testing.assert_close(dnorm.attention(query, key, value, "doubly", mask=both), padded)
print("grouped heads and padding: ok")
