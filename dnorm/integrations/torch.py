"""A drop-in for ``torch.nn.MultiheadAttention`` with any dnorm scheme and a learnable hybrid ``alpha``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

import dnorm

from .. import _validate as check
from ._torch_inputs import checked_inputs, checked_sizes, merged_mask, weights_and_output
from ._torch_state import FromTorch

__all__ = ["MultiheadAttention"]


class MultiheadAttention(FromTorch):
    """Multi-head attention whose weights come from a dnorm scheme; a drop-in for ``torch.nn.MultiheadAttention``.

    Projects the query, key and value inputs, runs
    :func:`dnorm.scaled_dot_product_attention` per head (or
    :func:`dnorm.normalize` when the weights are asked for) and projects the
    heads back. The constructor and :meth:`forward` take torch's arguments in
    torch's order with torch's meaning, and :meth:`forward` returns torch's
    ``(attn_output, attn_weights)``; dnorm's options are keywords.
    :meth:`from_torch` converts a torch layer, weights included, and
    :meth:`load_state_dict` also reads torch's state dicts (``in_proj_weight``
    or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``, and
    ``in_proj_bias``). With ``scheme="softmax"`` the results are torch's.

    Where it differs from torch:

    * ``need_weights`` defaults to False (torch: True): the weights are then
      never materialized, and long sequences are processed in blocks.
    * In self-attention (`key` omitted or the same tensor as `query`) a
      padding position of `key_padding_mask` is left out as a query too, so
      it enters no column statistic of ``"doubly"``, ``"hybrid"`` or
      ``"sinkhorn"``: the other positions' outputs do not depend on it. Its
      own attention output and weights are zero, its result
      ``out_proj.bias`` (torch computes an ordinary row there). A float
      mask's ``-inf`` entries count as padding, the form
      ``torch.nn.TransformerEncoder`` passes on.
    * ``is_causal=True`` applies causal attention (torch reads it as a hint
      that `attn_mask` is the causal mask, which it then requires). It is
      strictly causal: for ``"doubly"`` and ``"hybrid"`` the column statistic
      reads no later query, which a causal `attn_mask` alone does not give.
    * A query that may attend no key gets zero weights, never NaN.
    * ``add_bias_kv`` and ``add_zero_attn`` are not supported.

    Parameters
    ----------
    embed_dim : int
        Model width ``E``, the width of the query input and of the output; a
        multiple of `num_heads`.
    num_heads : int
        Number of query heads, each of width ``embed_dim // num_heads``.
    dropout : float, default 0.0
        Dropout probability on the attention weights, in training mode only.
    bias : bool, default True
        Biases in the four projections.
    add_bias_kv, add_zero_attn : bool, default False
        Torch's options, kept for its argument order; True raises
        ``NotImplementedError``.
    kdim, vdim : int, optional
        Widths of the key and value inputs; default `embed_dim`.
    batch_first : bool, default False
        As torch: inputs and output are ``(seq, batch, feature)``; True:
        ``(batch, seq, feature)``. (Earlier versions of this layer defaulted
        to True: code written for them passes ``batch_first=True``.)
    device, dtype : optional
        Of the parameters, as in torch.
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
        Always causal, as if every call passed ``is_causal=True``.
        ``"sinkhorn"`` has no causal form and raises in :meth:`forward`.
    num_kv_heads : int, optional
        Key/value heads for grouped-query attention, default `num_heads`;
        `num_heads` must be a multiple of it, each key/value head serving
        ``num_heads // num_kv_heads`` consecutive query heads (no copies are
        made). `k_proj` and `v_proj` then have
        ``num_kv_heads * embed_dim // num_heads`` outputs.
    n_iter : int, default 3
        Column normalizations of ``"sinkhorn"``.

    Attributes
    ----------
    q_proj, k_proj, v_proj, out_proj : torch.nn.Linear
        The projections, ``(embed_dim -> embed_dim)``, ``(kdim -> kv_width)``,
        ``(vdim -> kv_width)`` and ``(embed_dim -> embed_dim)``.
    alpha_logit : torch.nn.Parameter or None
        The unconstrained per-head parameter, shape ``(num_heads,)``; None
        unless ``scheme == "hybrid"``.
    embed_dim, kdim, vdim, num_heads, num_kv_heads, head_dim, dropout, batch_first
        The configuration.
    in_proj_weight, in_proj_bias, bias_k, bias_v : None
        torch's attributes, always None here (the projections are separate),
        so that torch code that looks for them, like the fast path of
        ``torch.nn.TransformerEncoderLayer``, takes its general path.

    Raises
    ------
    TypeError
        For arguments of the wrong type, or `module` of :meth:`from_torch`
        not a ``torch.nn.MultiheadAttention``.
    ValueError
        For `embed_dim` not a multiple of `num_heads`, `num_heads` not a
        multiple of `num_kv_heads`, `dropout` outside [0, 1), an unknown
        scheme, or a learned `alpha_init` outside (0, 1).
    NotImplementedError
        For ``add_bias_kv`` or ``add_zero_attn``.

    See Also
    --------
    dnorm.scaled_dot_product_attention : the attention it runs per head.
    dnorm.normalize : the weights it returns with ``need_weights=True``.

    Examples
    --------
    >>> import torch
    >>> from dnorm.integrations.torch import MultiheadAttention
    >>> _ = torch.manual_seed(0)
    >>> layer = MultiheadAttention(16, 4, batch_first=True)
    >>> x = torch.randn(2, 5, 16)
    >>> out, weights = layer(x)  # self-attention, like layer(x, x, x)
    >>> out.shape, weights
    (torch.Size([2, 5, 16]), None)
    >>> layer.alpha
    tensor([0.5000, 0.5000, 0.5000, 0.5000], grad_fn=<SigmoidBackward0>)

    Cross-attention, with the weights averaged over the heads; under
    ``"doubly"`` every one of the ``S`` keys receives a total weight of at
    least ``1/S`` from the queries:

    >>> memory = torch.randn(2, 9, 16)
    >>> layer = MultiheadAttention(16, 4, batch_first=True, scheme="doubly")
    >>> out, weights = layer(x, memory, memory, need_weights=True)
    >>> out.shape, weights.shape
    (torch.Size([2, 5, 16]), torch.Size([2, 5, 9]))
    >>> bool((weights.sum(dim=-2) >= 1 / 9).all())
    True

    A torch layer, converted; with ``scheme="softmax"`` it computes the same:

    >>> reference = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    >>> layer = MultiheadAttention.from_torch(reference, scheme="softmax")
    >>> torch.allclose(layer(x, x, x)[0], reference(x, x, x)[0], atol=1e-6)
    True
    """

    alpha_logit: nn.Parameter | None
    _qkv_same_embed_dim = False  # torch's flag: no packed in_proj_weight
    in_proj_weight: None = None
    in_proj_bias: None = None
    bias_k: None = None
    bias_v: None = None
    add_zero_attn = False

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        scheme: str = "hybrid",
        alpha_init: float = 0.5,
        learn_alpha: bool = True,
        causal: bool = False,
        num_kv_heads: int | None = None,
        n_iter: int = 3,
    ) -> None:
        super().__init__()
        num_kv_heads, kdim, vdim = checked_sizes(embed_dim, num_heads, num_kv_heads, kdim, vdim)
        dropout = check.probability(dropout, "dropout")
        for name, value in (("bias", bias), ("add_bias_kv", add_bias_kv), ("add_zero_attn", add_zero_attn)):
            check.flag(value, name)
        if add_bias_kv or add_zero_attn:
            msg = f"add_bias_kv and add_zero_attn are not supported, got {add_bias_kv} and {add_zero_attn}"
            raise NotImplementedError(msg)
        self.scheme = check.scheme(scheme)
        self.causal = check.flag(causal, "causal")
        self.batch_first = check.flag(batch_first, "batch_first")
        self.n_iter = check.positive_int(n_iter, "n_iter")
        self.embed_dim, self.kdim, self.vdim = embed_dim, kdim, vdim
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = float(dropout)
        kv_width = num_kv_heads * self.head_dim
        factory = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(kdim, kv_width, bias=bias, **factory)
        self.v_proj = nn.Linear(vdim, kv_width, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.alpha_logit = None
        if check.described(self.scheme).mixed:
            check.alpha(alpha_init, (), xp=None)
            if learn_alpha and alpha_init in (0.0, 1.0):
                msg = f"a learned alpha must start inside (0, 1), got {alpha_init}"
                raise ValueError(msg)
            logit = torch.logit(torch.tensor(alpha_init, dtype=torch.float64)).item()  # +-inf at 0 and 1
            self.alpha_logit = nn.Parameter(
                torch.full((num_heads,), logit, device=device, dtype=dtype), requires_grad=learn_alpha
            )

    @property
    def alpha(self) -> Tensor | None:
        """Per-head hybrid weight ``sigmoid(alpha_logit)`` in [0, 1], shape ``(num_heads,)``; None unless hybrid."""
        return None if self.alpha_logit is None else torch.sigmoid(self.alpha_logit)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = False,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attention of `query` over `key` and `value`, with torch's arguments and masks.

        Parameters
        ----------
        query : torch.Tensor of shape (N, L, E), or (L, N, E) if not batch_first, or (L, E)
            ``L`` queries of width ``E = embed_dim``; 2-D is unbatched.
        key : torch.Tensor of shape (N, S, kdim), or (S, N, kdim) if not batch_first, or (S, kdim), optional
            ``S`` keys; defaults to `query` (self-attention).
        value : torch.Tensor of shape (N, S, vdim), or (S, N, vdim) if not batch_first, or (S, vdim), optional
            Defaults to `key`.
        key_padding_mask : torch.Tensor of shape (N, S), or (S,) unbatched, optional
            As in torch: boolean, True at the keys to leave out (padding), or
            floating, added to the scores. In self-attention the padding
            positions are left out as queries too (see the class docstring).
        need_weights : bool, default False
            Also return the attention weights (materializes them; torch's
            default is True).
        attn_mask : torch.Tensor of shape (L, S) or (N * num_heads, L, S), optional
            As in torch: boolean, True where a query may NOT attend a key
            (the opposite of :func:`dnorm.scaled_dot_product_attention`), or
            floating, added to the scores. The 3-D form holds batch ``b``,
            head ``h`` at ``b * num_heads + h``.
        average_attn_weights : bool, default True
            Average the returned weights over the heads.
        is_causal : bool, default False
            Strictly causal attention, query ``i`` seeing keys ``j <= i``,
            combined with `attn_mask` (which may be omitted).

        Returns
        -------
        attn_output : torch.Tensor of shape (N, L, E), or (L, N, E) if not batch_first, or (L, E)
            The output projection of the attended values.
        attn_weights : torch.Tensor or None
            None unless `need_weights`; else of shape ``(N, L, S)`` averaged,
            ``(N, num_heads, L, S)`` per head (``(L, S)`` and
            ``(num_heads, L, S)`` unbatched), whatever `batch_first`: the
            weights of the scheme, after dropout as in torch.

        Raises
        ------
        TypeError
            For non-tensor or non-floating inputs, masks neither boolean nor
            floating, and flags that are not bool.
        ValueError
            For shapes that do not fit together; the message names the
            argument and the expected shape.
        NotImplementedError
            For ``"sinkhorn"`` with causal attention.
        """
        self_attention = key is None or key is query
        key = query if key is None else key
        value = key if value is None else value
        check.flag(need_weights, "need_weights")
        check.flag(average_attn_weights, "average_attn_weights")
        check.flag(is_causal, "is_causal")
        widths = (self.embed_dim, self.kdim, self.vdim)
        batched = checked_inputs(query, key, value, widths, batch_first=self.batch_first)
        if not batched:
            query, key, value = (x.unsqueeze(0) for x in (query, key, value))
        elif not self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        batch, length, _ = query.shape
        n_keys = key.shape[1]
        q = self.q_proj(query).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        k, v = (
            proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim)).transpose(1, 2)
            for proj, x in ((self.k_proj, key), (self.v_proj, value))
        )
        mask = merged_mask(
            attn_mask,
            key_padding_mask,
            self_attention=self_attention,
            batched=batched,
            sizes=(batch, self.num_heads, length, n_keys),
            dtype=q.dtype,
        )
        causal = self.causal or is_causal
        alpha = self.alpha
        options: dict[str, Any] = {
            "scheme": self.scheme,
            "alpha": 0.5 if alpha is None else alpha,
            "n_iter": self.n_iter,
        }
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            weights, out = weights_and_output(q, k, v, mask, causal=causal, dropout=dropout, options=options)
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not batched:
                weights = weights.squeeze(0)
        else:
            grouped = self.num_heads > self.num_kv_heads
            out = dnorm.scaled_dot_product_attention(q, k, v, mask, dropout, causal, enable_gqa=grouped, **options)
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def extra_repr(self) -> str:
        """The options that the submodules do not show."""
        kv = f", num_kv_heads={self.num_kv_heads}" if self.num_kv_heads != self.num_heads else ""
        return (
            f"num_heads={self.num_heads}{kv}, scheme={self.scheme!r}, causal={self.causal}, "
            f"dropout={self.dropout}, batch_first={self.batch_first}"
        )
