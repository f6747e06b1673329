"""transformers' generate with the KV cache on a causal doubly model: the tokens of full recomputation, faster."""

import torch
import transformers

from dnorm.integrations.transformers import cache, register

register(["doubly"])
config = transformers.LlamaConfig(
    vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
    num_key_value_heads=2, max_position_embeddings=64,
)  # fmt: skip
model = transformers.LlamaForCausalLM(config).eval().double()
model.set_attn_implementation("dnorm_doubly")
ids = torch.randint(0, 100, (1, 8))

with torch.no_grad():
    cached = model.generate(ids, max_new_tokens=16, do_sample=False, cache=cache())  # the one-line change
    full = model.generate(ids, max_new_tokens=16, do_sample=False, use_cache=False)
assert torch.equal(cached, full)
