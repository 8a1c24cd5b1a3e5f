"""A module's parameters as one flat vector, and back.

Strategies see a network as a point in R^dim; evaluators need it as named tensors again, one set per
population member, stacked for ``torch.func.vmap``. :class:`Layout` is the map between the two: the
parameters' names, shapes and slices of the flat vector, in ``named_parameters()`` order.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from torch import nn

__all__ = ["Layout", "layout_of", "flatten", "unflatten", "assign", "stacked"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Names, shapes and flat slices of a module's trainable parameters.

    Examples:
        >>> layout = layout_of(nn.Linear(3, 2))
        >>> layout.dim, layout.slices["bias"]
        (8, slice(6, 8, None))
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @functools.cached_property
    def numels(self) -> tuple[int, ...]:
        return tuple(math.prod(shape) for shape in self.shapes)

    @functools.cached_property
    def dim(self) -> int:
        return sum(self.numels)

    @functools.cached_property
    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, numel in zip(self.names, self.numels):
            out[name] = slice(start, start + numel)
            start += numel
        return out


def layout_of(model: nn.Module) -> Layout:
    """The layout of ``model``'s parameters that require grad."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"model {type(model).__name__} has no trainable parameters")
    return Layout(tuple(n for n, _ in named), tuple(p.shape for _, p in named))


def flatten(model: nn.Module) -> torch.Tensor:
    """A detached copy of ``model``'s trainable parameters as one (dim,) vector."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([p.detach().reshape(-1) for p in params])


def unflatten(vector: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """Views of a (dim,) vector shaped as the named parameters."""
    _check_dim(vector.shape[-1], layout)
    return {name: vector[s].view(shape) for (name, s), shape in zip(layout.slices.items(), layout.shapes)}


def stacked(vectors: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """Views of an ``(n, dim)`` stack of vectors as named ``(n, *shape)`` parameters, for ``vmap``."""
    _check_dim(vectors.shape[-1], layout)
    n = vectors.shape[0]
    return {
        name: vectors[:, s].reshape(n, *shape)  # (n, *shape)
        for (name, s), shape in zip(layout.slices.items(), layout.shapes)
    }


@torch.no_grad()
def assign(model: nn.Module, vector: torch.Tensor) -> None:
    """Copy a (dim,) vector into ``model``'s trainable parameters, in place."""
    layout = layout_of(model)
    params = [p for p in model.parameters() if p.requires_grad]
    for p, view in zip(params, unflatten(vector, layout).values()):
        p.copy_(view)


def _check_dim(dim: int, layout: Layout) -> None:
    if dim != layout.dim:
        raise ValueError(f"vector has {dim} entries but the model has {layout.dim} parameters")
