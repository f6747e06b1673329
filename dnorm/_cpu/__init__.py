"""Compiled CPU kernels (numba): forward, backward and decoding passes in one sweep over the keys, for the schemes
whose rows are a softmax (softmax, doubly, hybrid, Sinkhorn).

The implementation ``kernel="numba"`` of the routing layer (:mod:`.implementation`), for NumPy arrays and torch
CPU tensors, installed with ``pip install 'dnorm[numba]'``. Nothing here imports numba until a call runs the
passes (:mod:`.launch`); numba compiles them on the first call and caches the machine code on disk
(``cache=True``: beside the modules, or in numba's user cache directory, or ``NUMBA_CACHE_DIR``). numba checks
a cached pass against its own module's file only: after editing another module of this package in a working tree,
delete ``dnorm/_cpu/__pycache__`` (or the ``NUMBA_CACHE_DIR``), or a pass keeps the old code it was linked with.
An installed release changes every file at once, so it recompiles.
"""
