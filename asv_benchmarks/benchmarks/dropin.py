"""Grouped-query heads and packed batches against what a user would run without them, side by side.

GQA: 8 query heads over 2 key/value heads, T = K, D = 64, float32, torch CPU, against the same call with the key
and value heads repeated (``repeat_interleave`` inside the timed call, as a model without GQA support does it).
Varlen: 8 sequences of lengths 64 to 1024 (4 heads, D = 64), ``dnorm.varlen_attention`` on the packed arrays
against ``dnorm.attention`` on the padded batch with the mask that makes it equal (padding queries and keys masked,
spec THM-PACKED-EQUALS-SEPARATE): forward and a training step (forward and ``sum(out).backward()``).
Dask: doubly on (16, 512, 64) chunked along the batch (causal: (16, 256, 64)) against NumPy, and its task count.
"""

from typing import Any

import numpy as np

import dnorm

from . import common

GQA_SIZE = 256 if common.QUICK else 4096
LENGTHS = (16, 64, 32, 8) if common.QUICK else (64, 1024, 256, 512, 128, 768, 384, 896)


class GroupedHeads:
    params = (["doubly", "softmax"],)
    param_names = ("scheme",)
    unit = "ratio"
    timeout = 600

    def setup(self, scheme: str) -> None:
        torch = common._import_or_skip("torch")
        torch.set_num_threads(common.THREADS)
        gen = torch.Generator().manual_seed(0)
        self.q = torch.randn(1, 8, GQA_SIZE, common.DIM, generator=gen)
        self.k, self.v = (torch.randn(1, 2, GQA_SIZE, common.DIM, generator=gen) for _ in range(2))
        self.torch = torch

    def _grouped(self, scheme: str):
        return lambda: dnorm.attention(self.q, self.k, self.v, scheme)

    def _repeated(self, scheme: str):
        def run():
            k, v = (x.repeat_interleave(4, dim=1) for x in (self.k, self.v))
            return dnorm.attention(self.q, k, v, scheme)

        return run

    def track_grouped_over_repeated(self, scheme: str) -> float:
        with self.torch.no_grad():
            return common.median_ratio(self._grouped(scheme), self._repeated(scheme))

    def time_grouped(self, scheme: str) -> None:
        with self.torch.no_grad():
            self._grouped(scheme)()


class PackedBatch:
    params = (["doubly", "softmax"], [False, True])
    param_names = ("scheme", "causal")
    unit = "ratio"
    timeout = 900

    def setup(self, scheme: str, causal: bool) -> None:
        torch = common._import_or_skip("torch")
        torch.set_num_threads(common.THREADS)
        rng = np.random.default_rng(0)
        total, longest, n = sum(LENGTHS), max(LENGTHS), len(LENGTHS)
        packed = [rng.standard_normal((common.HEADS, total, common.DIM), dtype=np.float32) for _ in range(3)]
        self.cu = np.cumsum([0, *LENGTHS]).tolist()
        padded = [np.zeros((n, common.HEADS, longest, common.DIM), dtype=np.float32) for _ in range(3)]
        real = np.zeros((n, longest), dtype=bool)
        for b, (start, stop) in enumerate(zip(self.cu[:-1], self.cu[1:], strict=True)):
            for whole, part in zip(packed, padded, strict=True):
                part[b, :, : stop - start] = whole[:, start:stop]
            real[b, : stop - start] = True
        mask = real[:, None, :, None] & real[:, None, None, :]
        self.packed = [torch.from_numpy(x).requires_grad_() for x in packed]
        self.padded = [torch.from_numpy(x).requires_grad_() for x in padded]
        self.mask = torch.from_numpy(mask)
        self.options = {"causal": "top-left" if causal else False}
        self.torch, self.scheme = torch, scheme

    def _packed(self):
        return lambda: dnorm.varlen_attention(*self.packed, self.cu, self.scheme, **self.options)

    def _padded(self):
        # every padded sequence starts at position 0: the causal triangle is the same
        return lambda: dnorm.attention(*self.padded, self.scheme, mask=self.mask, **self.options)

    def track_packed_over_padded(self, scheme: str, causal: bool) -> float:
        with self.torch.no_grad():
            return common.median_ratio(self._packed(), self._padded())

    def track_packed_over_padded_training(self, scheme: str, causal: bool) -> float:
        def step(fn):
            return lambda: fn().sum().backward()

        return common.median_ratio(step(self._packed()), step(self._padded()))


def _dask_inputs(causal: bool) -> tuple[list[Any], list[Any]]:
    """(16, 512, 64) chunked (1, 512, 64), float64, as NumPy and as Dask arrays; (16, 256, 64) when causal."""
    dask_array = common._import_or_skip("dask.array")
    rng = np.random.default_rng(0)
    length = 64 if common.QUICK else 256 if causal else 512
    numpy = [rng.standard_normal((16, length, common.DIM)) for _ in range(3)]
    return numpy, [dask_array.from_array(x, chunks=(1, length, common.DIM)) for x in numpy]


class DaskChunks:
    """Dask arrays chunked along the batch, each (T, D) slab whole, against NumPy on the same data.

    The case of the Drop-in issue (17221 tasks and 27 times NumPy's time before it), and causal doubly.
    """

    params = ([False, True],)
    param_names = ("causal",)
    unit = "ratio"
    timeout = 600

    def setup(self, causal: bool) -> None:
        self.numpy, self.dask = _dask_inputs(causal)

    def track_dask_over_numpy(self, causal: bool) -> float:
        out = dnorm.attention(*self.dask, "doubly", causal=causal)
        return common.median_ratio(out.compute, lambda: dnorm.attention(*self.numpy, "doubly", causal=causal))


class DaskTasks:
    """The number of tasks in the graph of :class:`DaskChunks`' calls (16 chunks)."""

    params = ([False, True],)
    param_names = ("causal",)
    unit = "tasks"

    def setup(self, causal: bool) -> None:
        self.dask = _dask_inputs(causal)[1]

    def track_tasks(self, causal: bool) -> int:
        return len(dnorm.attention(*self.dask, "doubly", causal=causal).__dask_graph__())
