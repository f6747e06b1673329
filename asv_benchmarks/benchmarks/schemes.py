"""Time and peak memory of ``dnorm.attention`` per scheme, size and backend."""

import dnorm

from . import common


class Attention:
    params = (list(common.BACKENDS), list(common.SCHEMES), list(common.SIZES))
    param_names = ("backend", "scheme", "size")
    timeout = 300

    def setup(self, backend: str, scheme: str, size: int) -> None:
        self.backend = common.backend(backend)
        self.args = self.backend.inputs(size)

    def time_attention(self, backend: str, scheme: str, size: int) -> None:
        dnorm.attention(*self.args, scheme)
        self.backend.sync()

    def peakmem_attention(self, backend: str, scheme: str, size: int) -> None:
        dnorm.attention(*self.args, scheme)
