"""Training (forward and backward) against the anchors of the Training issue, side by side in one run.

``track_`` ratios time both sides alternately in this process (medians, after one warm-up each); ``track_*_rss``
run one step in a fresh process (``training_child.py``), whose peak resident memory is the figure. Sizes: T = K,
batch 1, 4 heads, D = 64, float32, two threads.
"""

import subprocess
import sys
from pathlib import Path

import dnorm

from . import common

TRAIN_SIZE = 256 if common.QUICK else 4096
CAUSAL_SIZE = 256 if common.QUICK else 2048
LARGE_SIZE = 512 if common.QUICK else 16384
CAUSAL_LARGE_SIZE = 512 if common.QUICK else 8192


def _child(what: str, size: int) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one training step in a fresh interpreter."""
    script = Path(__file__).with_name("training_child.py")
    argv = [sys.executable, str(script), what, str(size), str(common.HEADS), str(common.DIM)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


class TorchTraining:
    unit = "ratio"
    timeout = 900

    def setup(self) -> None:
        self.torch = common._import_or_skip("torch")
        self.torch.set_num_threads(common.THREADS)

    def _inputs(self, size: int):
        gen = self.torch.Generator().manual_seed(0)
        shape = (1, common.HEADS, size, common.DIM)
        return [self.torch.randn(*shape, generator=gen).requires_grad_() for _ in range(3)]

    def _step(self, attend, size: int):
        args = self._inputs(size)
        return lambda: attend(*args).sum().backward()

    def track_doubly_over_sdpa(self) -> float:
        from torch.nn.functional import scaled_dot_product_attention as sdpa

        ours = self._step(lambda q, k, v: dnorm.attention(q, k, v, "doubly"), TRAIN_SIZE)
        return common.median_ratio(ours, self._step(sdpa, TRAIN_SIZE))

    def track_causal_doubly_over_sdpa_causal(self) -> float:
        from torch.nn.functional import scaled_dot_product_attention as sdpa

        ours = self._step(lambda q, k, v: dnorm.attention(q, k, v, "doubly", causal=True), CAUSAL_SIZE)
        theirs = self._step(lambda q, k, v: sdpa(q, k, v, is_causal=True), CAUSAL_SIZE)
        return common.median_ratio(ours, theirs)

    def track_materialized_dnas_over_doubly(self) -> float:
        ours = self._step(lambda q, k, v: dnorm.attention(q, k, v, "doubly"), TRAIN_SIZE)
        return common.median_ratio(self._step(common.torch_materialized_dnas, TRAIN_SIZE), ours)


class JaxTraining:
    unit = "ratio"
    timeout = 900

    def setup(self) -> None:
        self.jax = common._import_or_skip("jax")

    def track_doubly_over_dot_product_attention(self) -> float:
        jax, jnp = self.jax, self.jax.numpy
        q, k, v = (jnp.asarray(x) for x in common.qkv(TRAIN_SIZE))

        def ours(q, k, v):
            return jnp.sum(dnorm.attention(q, k, v, "doubly"))

        def theirs(q, k, v):
            t = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731
            return jnp.sum(jax.nn.dot_product_attention(t(q), t(k), t(v)))

        steps = [jax.jit(jax.grad(f, argnums=(0, 1, 2))) for f in (ours, theirs)]
        return common.median_ratio(*(lambda s=s: jax.block_until_ready(s(q, k, v)) for s in steps))


def track_torch_doubly_peak_rss() -> float:
    return _child("torch-doubly", LARGE_SIZE)[0]


def track_torch_doubly_rss_over_sdpa() -> float:
    return _child("torch-doubly", LARGE_SIZE)[0] / _child("torch-sdpa", LARGE_SIZE)[0]


def track_torch_causal_peak_rss() -> float:
    return _child("torch-causal", CAUSAL_LARGE_SIZE)[0]


def track_jax_doubly_peak_rss() -> float:
    common._import_or_skip("jax")
    return _child("jax-doubly", TRAIN_SIZE)[0]


def track_jax_dot_product_attention_peak_rss() -> float:
    common._import_or_skip("jax")
    return _child("jax-sdpa", TRAIN_SIZE)[0]


for _f in (track_torch_doubly_peak_rss, track_torch_causal_peak_rss, track_jax_doubly_peak_rss):
    _f.unit = "MiB"
track_jax_dot_product_attention_peak_rss.unit = "MiB"
track_torch_doubly_rss_over_sdpa.unit = "ratio"
for _f in (
    track_torch_doubly_peak_rss,
    track_torch_doubly_rss_over_sdpa,
    track_torch_causal_peak_rss,
    track_jax_doubly_peak_rss,
    track_jax_dot_product_attention_peak_rss,
):
    _f.timeout = 900


class ForwardBackward:
    """One training step (forward and backward) of every scheme on torch, T = K = 2048."""

    params = (list(common.SCHEMES), [False, True])
    param_names = ("scheme", "causal")
    timeout = 600

    def setup(self, scheme: str, causal: bool) -> None:
        if causal and scheme == "sinkhorn":
            msg = "sinkhorn has no causal form"
            raise NotImplementedError(msg)
        torch = common._import_or_skip("torch")
        torch.set_num_threads(common.THREADS)
        gen = torch.Generator().manual_seed(0)
        shape = (1, common.HEADS, 256 if common.QUICK else 2048, common.DIM)
        self.args = [torch.randn(*shape, generator=gen).requires_grad_() for _ in range(3)]

    def time_forward_backward(self, scheme: str, causal: bool) -> None:
        dnorm.attention(*self.args, scheme, causal=causal).sum().backward()
