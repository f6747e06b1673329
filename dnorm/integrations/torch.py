"""A multi-head self-attention layer for torch, with any dnorm scheme and a learnable hybrid ``alpha``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import _validate as check
from .._sdpa import scaled_dot_product_attention

__all__ = ["MultiheadAttention"]


class MultiheadAttention(nn.Module):
    """Multi-head self-attention whose weights come from a dnorm scheme.

    Projects ``x`` to queries, keys and values, runs
    :func:`dnorm.scaled_dot_product_attention` per head and projects the heads
    back. Inputs are batch first.

    Parameters
    ----------
    embed_dim : int
        Model width; a multiple of `num_heads`.
    num_heads : int
        Number of heads, each of width ``embed_dim // num_heads``.
    scheme : {"hybrid", "doubly", "softmax", "sinkhorn"}, default "hybrid"
        The normalization scheme (see :func:`dnorm.normalize`).
    alpha_init : float, default 0.5
        Initial hybrid weight of ``"doubly"``, the same for every head. Must
        lie in (0, 1) when learned (the sigmoid saturates at the ends), in
        [0, 1] otherwise.
    learn_alpha : bool, default True
        Learn one ``alpha`` per head, as ``sigmoid`` of an unconstrained
        parameter, which keeps it in [0, 1]. False freezes it.
    causal : bool, default False
        Strictly causal attention: output ``i`` depends on positions ``<= i``
        only (the strictly causal ``"doubly"`` for ``"doubly"`` and
        ``"hybrid"``; ``"sinkhorn"`` has none and raises in :meth:`forward`).
    bias : bool, default True
        Biases in the four projections.
    dropout : float, default 0.0
        Dropout probability on the attention weights, in training mode only.

    Attributes
    ----------
    q_proj, k_proj, v_proj, out_proj : torch.nn.Linear
        The projections.
    alpha_logit : torch.nn.Parameter or None
        The unconstrained per-head parameter, shape ``(num_heads,)``; None
        unless ``scheme == "hybrid"``.

    Examples
    --------
    >>> import torch
    >>> from dnorm.integrations.torch import MultiheadAttention
    >>> layer = MultiheadAttention(16, 4)
    >>> layer(torch.randn(2, 5, 16)).shape
    torch.Size([2, 5, 16])
    >>> layer.alpha
    tensor([0.5000, 0.5000, 0.5000, 0.5000], grad_fn=<SigmoidBackward0>)
    """

    alpha_logit: nn.Parameter | None

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        scheme: str = "hybrid",
        alpha_init: float = 0.5,
        learn_alpha: bool = True,
        causal: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check.positive_int(embed_dim, "embed_dim")
        check.positive_int(num_heads, "num_heads")
        if embed_dim % num_heads:
            msg = f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})"
            raise ValueError(msg)
        if not 0.0 <= dropout < 1.0:
            msg = f"dropout must be in [0, 1), got {dropout}"
            raise ValueError(msg)
        self.scheme = check.scheme(scheme)
        self.num_heads = num_heads
        self.causal = check.flag(causal, "causal")
        self.dropout = dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(embed_dim, embed_dim, bias=bias) for _ in range(4)
        )
        self.alpha_logit = None
        if self.scheme == "hybrid":
            check.alpha(alpha_init, (), xp=None)
            if learn_alpha and alpha_init in (0.0, 1.0):
                msg = f"a learned alpha must start inside (0, 1), got {alpha_init}"
                raise ValueError(msg)
            logit = torch.logit(torch.tensor(alpha_init, dtype=torch.float64)).item()  # +-inf at 0 and 1
            self.alpha_logit = nn.Parameter(torch.full((num_heads,), logit), requires_grad=learn_alpha)

    @property
    def alpha(self) -> Tensor | None:
        """Per-head hybrid weight ``sigmoid(alpha_logit)`` in [0, 1], shape ``(num_heads,)``; None unless hybrid."""
        return None if self.alpha_logit is None else torch.sigmoid(self.alpha_logit)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        """Self-attention of `x`.

        The masks follow ``torch.nn.MultiheadAttention``: a boolean True marks
        what to leave out.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, T, embed_dim)
        key_padding_mask : torch.Tensor of shape (batch, T), optional
            Boolean, True at padding positions. A padding position is left
            out as a key and as a query: it enters no column statistic, so
            the other positions' outputs do not depend on it, and its own
            attention output is zero (its result is ``out_proj.bias``).
        attn_mask : torch.Tensor, optional
            Broadcastable to ``(batch, num_heads, T, T)``: boolean (True = may
            not attend) or floating (added to the scores).

        Returns
        -------
        torch.Tensor of shape (batch, T, embed_dim)
        """
        batch, length, width = x.shape
        heads = (batch, length, self.num_heads, width // self.num_heads)
        q, k, v = (proj(x).view(heads).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        mask = None if attn_mask is None else (~attn_mask if attn_mask.dtype == torch.bool else attn_mask)
        if key_padding_mask is not None:
            real = ~key_padding_mask
            pairs = real[:, None, :, None] & real[:, None, None, :]
            if mask is None or mask.dtype == torch.bool:
                mask = pairs if mask is None else pairs & mask
            else:
                mask = mask.masked_fill(~pairs, -math.inf)
        alpha = self.alpha
        out = scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal,
            scheme=self.scheme,
            alpha=0.5 if alpha is None else alpha,
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))

    def extra_repr(self) -> str:
        """The options that the submodules do not show."""
        return f"num_heads={self.num_heads}, scheme={self.scheme!r}, causal={self.causal}, dropout={self.dropout}"
