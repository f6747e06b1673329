"""One decoding step (a query against a KV cache) and generation from a small decoder, against the anchors.

Step: batch 1, 8 query heads over 2 key/value heads, D = 64, float32, one new query against a cache of K keys;
doubly and softmax through ``dnorm.decode`` and torch's ``scaled_dot_product_attention(enable_gqa=True)`` on the
same cache, timed alternately in one process (medians). Generation: tokens per second of greedy ``generate`` on a
random two-layer Llama (grouped-query heads) with ``attn_implementation="dnorm_doubly"``, with dnorm's cache and
with ``use_cache=False``.
"""

import time

import dnorm

from . import common

CACHE_SIZES = (256,) if common.QUICK else (4096, 32768)
NEW_TOKENS = 8 if common.QUICK else 512


class DecodeStep:
    params = (list(CACHE_SIZES),)
    param_names = ("keys",)
    unit = "ratio"
    timeout = 600

    def setup(self, keys: int) -> None:
        torch = common._import_or_skip("torch")
        torch.set_num_threads(common.THREADS)
        gen = torch.Generator().manual_seed(0)
        self.q = torch.randn(1, 8, 1, common.DIM, generator=gen)
        self.k, self.v = (torch.randn(1, 2, keys, common.DIM, generator=gen) for _ in range(2))
        self.state = dnorm.DecodeState(torch.randn(1, 8, keys - 1, generator=gen), torch.ones(1, 8, keys - 1))
        self.torch = torch

    def _step(self, scheme: str):
        state = self.state if scheme != "softmax" else None
        return lambda: dnorm.decode(self.q, self.k, self.v, state, scheme)

    def track_doubly_over_softmax(self, keys: int) -> float:
        with self.torch.no_grad():
            return common.median_ratio(self._step("doubly"), self._step("softmax"))

    def track_doubly_over_sdpa(self, keys: int) -> float:
        from torch.nn.functional import scaled_dot_product_attention as sdpa

        with self.torch.no_grad():
            return common.median_ratio(self._step("doubly"), lambda: sdpa(self.q, self.k, self.v, enable_gqa=True))

    def time_doubly_step(self, keys: int) -> None:
        with self.torch.no_grad():
            self._step("doubly")()


class Generate:
    params = (["cache", "no cache"],)
    param_names = ("mode",)
    unit = "tokens/s"
    timeout = 1200

    def setup(self, mode: str) -> None:
        torch = common._import_or_skip("torch")
        transformers = common._import_or_skip("transformers")
        from dnorm.integrations.transformers import cache, register

        torch.set_num_threads(common.THREADS)
        register(["doubly"])
        config = transformers.LlamaConfig(
            vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
            num_key_value_heads=2, max_position_embeddings=NEW_TOKENS + 16,
        )  # fmt: skip
        torch.manual_seed(0)
        self.model = transformers.LlamaForCausalLM(config).eval()
        self.model.set_attn_implementation("dnorm_doubly")
        self.ids = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0))
        self.torch, self.cache = torch, cache

    def track_tokens_per_second(self, mode: str) -> float:
        options = {"cache": self.cache()} if mode == "cache" else {"use_cache": False}
        with self.torch.no_grad():
            start = time.perf_counter()
            out = self.model.generate(
                self.ids,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=0,
                **options,
            )
            seconds = time.perf_counter() - start
        return (out.shape[-1] - self.ids.shape[-1]) / seconds
