"""Conversion from torch.nn.MultiheadAttention: its configuration, and its state dicts' layouts (packed projections)."""

from __future__ import annotations

from typing import Any, TypeVar

from torch import nn

Layer = TypeVar("Layer", bound="FromTorch")


def torch_configuration(module: object, /) -> dict[str, Any]:
    """The constructor arguments that give dnorm's layer the configuration of a torch layer ``module``."""
    if not isinstance(module, nn.MultiheadAttention):
        msg = f"module must be a torch.nn.MultiheadAttention, got {type(module).__name__}"
        raise TypeError(msg)
    if module.bias_k is not None or module.add_zero_attn:
        msg = "module has add_bias_kv or add_zero_attn, which are not supported"
        raise NotImplementedError(msg)
    weight = module.out_proj.weight
    return {
        "embed_dim": module.embed_dim,
        "num_heads": module.num_heads,
        "dropout": module.dropout,
        "bias": module.in_proj_bias is not None,
        "kdim": module.kdim,
        "vdim": module.vdim,
        "batch_first": module.batch_first,
        "device": weight.device,
        "dtype": weight.dtype,
    }


def from_torch_layout(state_dict: dict[str, Any], prefix: str, widths: tuple[int, int, int], /) -> bool:
    """Rewrite torch's projection entries under ``prefix`` in place as ``q_proj``, ``k_proj`` and ``v_proj``'s;
    whether there were any (the state dict is torch's).

    torch keeps them packed (``in_proj_weight`` and ``in_proj_bias``, rows
    of the query, key and value projections of ``widths`` outputs one after
    the other) or separate (``q_proj_weight``, ``k_proj_weight``,
    ``v_proj_weight``, the packed bias beside them). Entries of other shapes
    are left for the loader to report.
    """
    found = False
    packed = {f"{prefix}in_proj_weight": "weight", f"{prefix}in_proj_bias": "bias"}
    for name, kind in packed.items():
        tensor = state_dict.get(name)
        if tensor is not None and tensor.shape[0] == sum(widths):
            del state_dict[name]
            found = True
            for proj, part in zip("qkv", tensor.split(list(widths)), strict=True):
                state_dict[f"{prefix}{proj}_proj.{kind}"] = part
    for proj in "qkv":
        tensor = state_dict.pop(f"{prefix}{proj}_proj_weight", None)
        if tensor is not None:
            state_dict[f"{prefix}{proj}_proj.weight"] = tensor
            found = True
    return found


class FromTorch(nn.Module):
    """What dnorm's ``MultiheadAttention`` reads of torch's: :meth:`from_torch`, and torch's state-dict layouts."""

    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear

    @classmethod
    def from_torch(
        cls: type[Layer],
        module: nn.MultiheadAttention,
        *,
        scheme: str,
        alpha_init: float = 0.5,
        learn_alpha: bool = True,
        causal: bool = False,
        n_iter: int = 3,
    ) -> Layer:
        """A copy of a ``torch.nn.MultiheadAttention`` that normalizes with `scheme`.

        Copies the configuration (width, heads, dropout, bias, ``kdim``,
        ``vdim``, ``batch_first``, device, dtype, training mode) and the
        weights; ``scheme="softmax"`` then computes what `module` computes.

        Parameters
        ----------
        module : torch.nn.MultiheadAttention
            Without ``add_bias_kv`` or ``add_zero_attn``.
        scheme : {"hybrid", "doubly", "softmax", "sinkhorn"}
            Required: the normalization scheme.
        alpha_init : float, default 0.5
        learn_alpha : bool, default True
        causal : bool, default False
        n_iter : int, default 3
            As for the constructor.

        Returns
        -------
        MultiheadAttention
            Sharing no tensor with `module`.

        Examples
        --------
        >>> import torch
        >>> from dnorm.integrations.torch import MultiheadAttention
        >>> layer = torch.nn.TransformerEncoderLayer(16, 4, batch_first=True)
        >>> layer.self_attn = MultiheadAttention.from_torch(layer.self_attn, scheme="doubly")
        >>> layer(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
        """
        options = {"alpha_init": alpha_init, "learn_alpha": learn_alpha, "causal": causal, "n_iter": n_iter}
        layer = cls(**torch_configuration(module), scheme=scheme, **options)
        layer.load_state_dict(module.state_dict(), strict=True)
        return layer.train(module.training)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Read torch's layout too: the packed or separate input projections and the packed bias; a hybrid layer
        keeps its ``alpha_logit`` where the state dict is torch's (torch's layer has no alpha)."""
        widths = (self.q_proj.out_features, self.k_proj.out_features, self.v_proj.out_features)
        alpha_logit = getattr(self, "alpha_logit", None)
        if from_torch_layout(state_dict, prefix, widths) and alpha_logit is not None:
            state_dict.setdefault(f"{prefix}alpha_logit", alpha_logit.detach().clone())
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
