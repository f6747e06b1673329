"""Flattening nested tuples (and named tuples) of arrays, for autodiff systems that save a flat list."""

from __future__ import annotations

from typing import Any


def flatten(tree: Any, /) -> tuple[list[Any], Any]:
    """The leaves of ``tree`` (None is an empty node) and a description to rebuild it with :func:`unflatten`."""
    leaves: list[Any] = []

    def walk(node: Any) -> Any:
        if node is None:
            return None
        if isinstance(node, tuple):
            return (type(node), [walk(child) for child in node])
        leaves.append(node)
        return len(leaves) - 1

    return leaves, walk(tree)


def unflatten(spec: Any, leaves: list[Any] | tuple[Any, ...], /) -> Any:
    """The tree of :func:`flatten`'s ``spec`` with these ``leaves``."""
    if spec is None:
        return None
    if isinstance(spec, int):
        return leaves[spec]
    kind, children = spec
    parts = [unflatten(child, leaves) for child in children]
    return tuple(parts) if kind is tuple else kind(*parts)
