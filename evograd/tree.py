"""State trees: nested dataclasses, dicts, lists and tuples whose leaves are tensors and scalars.

Strategy states, direction-source states, optimizer ``state_dict()`` s and checkpoint payloads are
all such trees. This module is the one place that knows how to take one apart and put it back
together; checkpointing (:mod:`evograd.checkpoint`) and the rank digests of :mod:`evograd.mpi`
walk trees through it.

A *branch* is a dataclass instance (children: its fields, by name), a dict (its items) or a list
or tuple (its items, by index); anything else is a *leaf*. A node's *path* is the tuple of keys
that leads to it from the root.

Examples:
    >>> from evograd import Mutation
    >>> state = {"evo": Mutation(sigma=0.5), "steps": [1, 2]}
    >>> flatten(state)[("evo", "sigma")], describe(("evo", "sigma"), root="state")
    (0.5, 'state.evo.sigma')
    >>> map(lambda path, leaf: 2 * leaf if path[0] == "steps" else leaf, state)["steps"]
    [2, 4]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Key", "Path", "is_dataclass", "children", "rebuild", "walk", "flatten", "map", "describe"]

Key = str | int
Path = tuple[Key, ...]


def is_dataclass(node: Any) -> bool:
    """Whether ``node`` is a dataclass instance (not a dataclass type)."""
    return dataclasses.is_dataclass(node) and not isinstance(node, type)


def children(node: Any) -> list[tuple[Any, Any]] | None:
    """The children of a branch as ``(key, child)`` pairs in order, or ``None`` for a leaf.

    Examples:
        >>> children({"a": 1, "b": [2]}), children((5, 6)), children(3.0)
        ([('a', 1), ('b', [2])], [(0, 5), (1, 6)], None)
    """
    if is_dataclass(node):
        return [(field.name, getattr(node, field.name)) for field in dataclasses.fields(node)]
    if isinstance(node, dict):
        return list(node.items())
    if isinstance(node, (list, tuple)):
        return list(enumerate(node))
    return None


def rebuild(node: Any, values: dict[Any, Any]) -> Any:
    """A branch like ``node`` with the children ``values`` (by key); dataclasses are validated again.

    Examples:
        >>> rebuild((1, 2), {0: 3, 1: 4}), rebuild({"a": 1}, {"a": 2})
        ((3, 4), {'a': 2})
    """
    if is_dataclass(node):
        return dataclasses.replace(node, **values)
    if isinstance(node, dict):
        return dict(values)
    items = [values[i] for i in range(len(node))]
    if type(node) in (list, tuple):
        return type(node)(items)
    return type(node)(*items)  # a named tuple


def walk(tree: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every node of ``tree``, branches before their children, with its path."""
    yield path, tree
    for key, child in children(tree) or ():
        yield from walk(child, (*path, key))


def flatten(tree: Any) -> dict[Path, Any]:
    """The leaves of ``tree`` by path; an empty branch counts as a leaf, so no structure is lost.

    Examples:
        >>> flatten({"a": [1, 2], "b": {}})
        {('a', 0): 1, ('a', 1): 2, ('b',): {}}
    """
    return {path: node for path, node in walk(tree) if not children(node)}


def map(
    leaf: Callable[[Path, Any], Any],
    tree: Any,
    *,
    branch: Callable[[Path, Any, dict[Any, Any]], Any] = lambda path, node, values: rebuild(node, values),
    path: Path = (),
) -> Any:
    """``tree`` rebuilt bottom-up: ``leaf(path, node)`` for each leaf, ``branch(path, node, values)`` for each branch.

    ``values`` holds the branch's children already mapped, by key; the default ``branch`` rebuilds
    a node of the same type (:func:`rebuild`).
    """
    kids = children(tree)
    if kids is None:
        return leaf(path, tree)
    values = {key: map(leaf, child, branch=branch, path=(*path, key)) for key, child in kids}
    return branch(path, tree, values)


def describe(path: Path, root: str = "") -> str:
    """A path as Python would reach it: ``state.center``, ``optimizer.state[0].exp_avg``.

    Examples:
        >>> describe(("state", 0, "exp_avg"), root="optimizer"), describe(("a b",))
        ('optimizer.state[0].exp_avg', "['a b']")
    """
    parts = [root]
    for key in path:
        parts.append(f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{key!r}]")
    return "".join(parts)
