"""Fitness shaping: turn raw losses into weights that are robust to their scale.

Lower fitness is better everywhere (docs/design.rst, contract 1). Non-finite fitness is treated as the
worst possible value before any shaping, so a NaN loss can never pull an update towards it.

References:
    Wierstra et al. (2014), Natural evolution strategies (fitness shaping).
    Salimans et al. (2017), Evolution strategies as a scalable alternative to RL (centered ranks).
"""

from __future__ import annotations

import torch

__all__ = ["finite_or_worst", "ranks", "centered_ranks", "zscore", "improvements"]


def finite_or_worst(fitness: torch.Tensor) -> torch.Tensor:
    """``fitness`` with NaN and ±inf replaced by +inf (the worst loss)."""
    return torch.where(torch.isfinite(fitness), fitness, torch.full_like(fitness, float("inf")))


def ranks(fitness: torch.Tensor) -> torch.Tensor:
    """0-based ranks, 0 for the lowest (best) fitness; ties broken by position, deterministically."""
    order = torch.argsort(finite_or_worst(fitness), stable=True)
    out = torch.empty_like(order)
    out[order] = torch.arange(len(order), device=order.device)
    return out


def centered_ranks(fitness: torch.Tensor) -> torch.Tensor:
    """Ranks mapped linearly onto [-0.5, 0.5]: -0.5 for the best, +0.5 for the worst.

    Invariant under any strictly increasing transform of the fitness.

    Examples:
        >>> centered_ranks(torch.tensor([3.0, 1.0, 2.0]))
        tensor([ 0.5000, -0.5000,  0.0000])
    """
    n = len(fitness)
    if n == 1:
        return torch.zeros(1, dtype=torch.get_default_dtype(), device=fitness.device)
    dtype = fitness.dtype if fitness.is_floating_point() else torch.get_default_dtype()
    return ranks(fitness).to(dtype) / (n - 1) - 0.5


def zscore(fitness: torch.Tensor) -> torch.Tensor:
    """(f - mean) / std over the finite entries; non-finite entries get the largest finite z."""
    finite = torch.isfinite(fitness)
    out = torch.zeros_like(fitness)
    if finite.sum() < 2:
        return out
    values = fitness[finite]
    z = (values - values.mean()) / values.std().clamp_min(torch.finfo(fitness.dtype).tiny)
    out[finite] = z
    out[~finite] = z.max()
    return out


def improvements(parent: torch.Tensor | float, fitness: torch.Tensor) -> torch.Tensor:
    """How much each member improved on the parent (``parent - f``); 0 for non-improving or non-finite."""
    gain = torch.as_tensor(parent, dtype=fitness.dtype, device=fitness.device) - fitness
    return torch.where(torch.isfinite(gain) & (gain > 0), gain, torch.zeros_like(gain))
