"""The collectives of a sharded sequence: one :class:`dnorm._kernels.ring.Ring` per framework.

:mod:`.torch` moves key blocks between the processes of a ``torch.distributed``
group, :mod:`.jax` between the devices of a mesh axis inside ``shard_map``. The
sharded kernels (:mod:`dnorm._kernels.sharded`) say what moves; these modules
only move it.
"""
