"""Every argument transformers passes to a registered attention function, sorted: read, inert, or refused.

An argument that changes what attention computes and that dnorm does not compute raises an error naming it; one
that dnorm does not know raises too (it might), so that none is ever dropped silently. The lists cover what the
models of the installed transformers pass (``tests/test_transformers_family.py`` reads their source).
"""

from __future__ import annotations

from typing import Any

#: Read by :func:`dnorm.integrations.transformers.attention_forward` (beside its named parameters ``scaling``,
#: ``dropout`` and ``softcap``), with dnorm's cache layer.
READ = frozenset({"is_causal", "output_attentions", "s_aux", "sliding_window", "dnorm_cache_layer"})

#: Passed along, changing nothing attention computes: positions are in the queries and keys already, packed
#: sequences and windows in the mask transformers builds, and the rest concerns other outputs or other kernels.
INERT = frozenset(
    {
        "position_ids", "cache_position", "use_cache", "output_hidden_states", "output_router_logits",
        "num_items_in_batch", "return_dict", "seq_idx", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q",
        "max_length_k", "deterministic", "encoder_hidden_states", "encoder_attention_mask", "target_dtype",
    }
)  # fmt: skip

#: Change what attention computes, and dnorm computes none of them: refused, each with what to do instead.
REFUSED = {
    "position_bias": "an additive bias on the scores (T5's relative positions); add it to a floating mask with "
    "dnorm.attention, or run this model with attn_implementation='eager'",
    "sinks": "per-query sink logits; dnorm's sink is one per head (gpt-oss's s_aux)",
    "indices": "a sparse choice of keys per query (DeepSeek V3.2's top-k indexer)",
    "block_indices": "a sparse choice of key blocks per query",
    "head_mask": "a factor on each head's weights",
}


def checked(kwargs: dict[str, Any], /, *, mask: Any, n_keys: int) -> Any:
    """The sink transformers passes (``s_aux``), or None, after every other argument was found read or inert.

    Raises ``NotImplementedError`` for a refused argument and ``TypeError`` for an unknown one, naming it; and
    ``ValueError`` for a ``sliding_window`` shorter than the keys with no mask to carry it.
    """
    for name, value in kwargs.items():
        if name in READ or name in INERT or value is None:
            continue
        if name in REFUSED:
            msg = f"transformers passed {name}: {REFUSED[name]}, which dnorm does not compute"
            raise NotImplementedError(msg)
        msg = (
            f"transformers passed {name!r}, an argument dnorm's attention function does not know: it may change "
            "what attention computes, and dnorm drops none silently; run this model with an attention "
            "implementation of transformers, or report it to dnorm"
        )
        raise TypeError(msg)
    window = kwargs.get("sliding_window")
    if window is not None and mask is None and n_keys > window:
        msg = (
            f"sliding_window={window} with no mask to carry it over {n_keys} keys: dnorm reads the window in the mask "
            "that transformers builds through dnorm's mask function (dnorm.integrations.transformers.register)"
        )
        raise ValueError(msg)
    return kwargs.get("s_aux")
