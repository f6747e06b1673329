"""dnorm's time over an anchor's, both measured side by side in one process (medians; below 1 is faster).

The issue's targets: doubly on torch at most 1.8x torch's ``scaled_dot_product_attention`` and at most
1/3 of a materialized hand-written DNAS; softmax on NumPy at most 1.1x plain NumPy; doubly at most 1.5x
softmax, both through dnorm on NumPy; chunked doubly on NumPy at least 0.5 of the matmul throughput.
"""

from collections.abc import Callable

import numpy as np

import dnorm

from . import common


class Torch:
    unit = "ratio"
    timeout = 600

    def setup(self) -> None:
        self.backend = common.backend("torch")
        self.args = self.backend.inputs(common.RATIO_SIZE)

    def _ratio(self, scheme: str, anchor: Callable[..., object]) -> float:
        def ours() -> None:
            dnorm.attention(*self.args, scheme)
            self.backend.sync()

        def theirs() -> None:
            anchor(*self.args)
            self.backend.sync()

        return common.median_ratio(ours, theirs)

    def track_doubly_over_sdpa_softmax(self) -> float:
        from torch.nn.functional import scaled_dot_product_attention

        return self._ratio("doubly", scaled_dot_product_attention)

    def track_doubly_over_materialized_dnas(self) -> float:
        return self._ratio("doubly", common.torch_materialized_dnas)


class NumPy:
    unit = "ratio"
    timeout = 600

    def setup(self) -> None:
        self.args = common.qkv(common.RATIO_SIZE)

    def track_softmax_over_plain_numpy(self) -> float:
        return common.median_ratio(
            lambda: dnorm.attention(*self.args, "softmax"), lambda: common.numpy_softmax_attention(*self.args)
        )

    def track_doubly_over_softmax(self) -> float:
        return common.median_ratio(
            lambda: dnorm.attention(*self.args, "doubly"), lambda: dnorm.attention(*self.args, "softmax")
        )


class ChunkedThroughput:
    """Chunked doubly's flop rate, 6 T K D per head, as a fraction of ``q @ k.T``'s (2 T K D per head)."""

    unit = "ratio"
    timeout = 900

    def setup(self) -> None:
        self.q, self.k, self.v = common.qkv(common.CHUNKED_SIZE)
        self.scores = np.empty(self.q.shape[:-1] + self.k.shape[-2:-1], dtype=np.float32)

    def track_fraction_of_matmul(self) -> float:
        kt = np.swapaxes(self.k, -1, -2)
        matmul_over_ours = common.median_ratio(
            lambda: np.matmul(self.q, kt, out=self.scores),
            lambda: dnorm.attention(self.q, self.k, self.v, "doubly", block_size=common.CHUNK_ROWS),
        )
        return 3 * matmul_over_ours
