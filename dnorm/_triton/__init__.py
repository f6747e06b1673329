"""dnorm's fused Triton kernels: every scheme's forward, backward and decoding passes, one module per pass.

* :mod:`.tiles`: what every kernel computes on a tile (scores, masks, dropout's hash, log-sum-exp pairs);
* :mod:`.columns`: the column statistics (doubly's ``c``, Sinkhorn's rounds) and the causal carries;
* :mod:`.rows`: the row pass (FlashAttention-2 style), every scheme's output and row statistics;
* :mod:`.backward`: the gradients from the saved statistics, key blocks then query blocks, and
  :mod:`.potentials` Sinkhorn's way back through its rounds;
* :mod:`.decode`: a few new queries against a long cache, split over the keys;
* :mod:`.layout`, :mod:`.launch` and :mod:`.gradients`: where each program finds its sequence, and the
  launches of the forward and of the backward passes; :mod:`.configs` their block sizes and autotuning.

They compute exactly the array-API kernels' definitions (:mod:`dnorm._kernels`), and tests/test_triton.py
checks them against those in float64, through Triton's interpreter (``TRITON_INTERPRET=1``) on the CPU. The
routing layer reaches them as ``kernel="triton"`` (:mod:`dnorm._routing.triton`).
"""
