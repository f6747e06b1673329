"""Strictly causal attention against its anchors, measured side by side in one process (medians; below 1 is faster).

The Structure issue's targets, torch CPU at B = 1, H = 4, D = 64, T = K = 2048: causal doubly inference at most 3x
torch's ``scaled_dot_product_attention(is_causal=True)`` (the training step's ratio is
``training.TorchTraining.track_causal_doubly_over_sdpa_causal``, target 4); on NumPy, causal doubly's forward at
most 1.3x the forward of doubly itself.
"""

import dnorm

from . import common


class TorchInference:
    unit = "ratio"
    timeout = 600

    def setup(self) -> None:
        self.backend = common.backend("torch")
        self.args = self.backend.inputs(common.RATIO_SIZE)

    def track_causal_doubly_over_sdpa_causal(self) -> float:
        import torch
        from torch.nn.functional import scaled_dot_product_attention

        def ours() -> None:
            dnorm.attention(*self.args, "doubly", causal=True)
            self.backend.sync()

        def theirs() -> None:
            scaled_dot_product_attention(*self.args, is_causal=True)
            self.backend.sync()

        with torch.no_grad():
            return common.median_ratio(ours, theirs)


class NumPyForward:
    unit = "ratio"
    timeout = 600

    def setup(self) -> None:
        self.args = common.qkv(common.RATIO_SIZE)

    def track_causal_doubly_over_doubly(self) -> float:
        return common.median_ratio(
            lambda: dnorm.attention(*self.args, "doubly", causal=True), lambda: dnorm.attention(*self.args, "doubly")
        )
