"""Fitness shaping: turn raw losses into weights that are robust to their scale.

Lower fitness is better everywhere (docs/design.rst, contract 1). Non-finite fitness is treated as the
worst possible value before any shaping, so a NaN loss can never pull an update towards it.

References:
    Wierstra et al. (2014), Natural evolution strategies (fitness shaping).
    Salimans et al. (2017), Evolution strategies as a scalable alternative to RL (centered ranks).
"""

from __future__ import annotations

import math

import torch

__all__ = ["finite_or_worst", "ranks", "centered_ranks", "utilities", "zscore", "improvements"]


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


def utilities(fitness: torch.Tensor) -> torch.Tensor:
    """The rank-based utilities of natural evolution strategies: the best member gets the most, they sum to 0.

    ``u_k = max(0, ln(n/2 + 1) - ln k) / Σ_j max(0, ln(n/2 + 1) - ln j) - 1/n`` for the member of
    rank ``k`` (1 the lowest fitness): only the better half gets a positive share, and a
    monotone transform of the fitness changes nothing. Unlike :func:`centered_ranks`, higher is
    better, as the update ``Σ u_k z_k`` climbs towards the better members.

    Examples:
        >>> u = utilities(torch.tensor([3.0, 1.0, 2.0, 4.0], dtype=torch.float64))
        >>> int(u.argmax()), round(float(u.sum()), 12)
        (1, 0.0)

    References:
        Wierstra, Schaul, Glasmachers, Sun, Peters & Schmidhuber (2014), Natural evolution strategies
        (fitness shaping, eq. 7); Schaul, Glasmachers & Schmidhuber (2011), High dimensions and
        heavy tails for natural evolution strategies.
    """
    n = len(fitness)
    dtype = fitness.dtype if fitness.is_floating_point() else torch.get_default_dtype()
    k = torch.arange(1, n + 1, dtype=dtype, device=fitness.device)  # (n,) ranks 1..n
    raw = (math.log(n / 2 + 1) - torch.log(k)).clamp_min(0.0)  # (n,)
    by_rank = raw / raw.sum() - 1.0 / n  # (n,) utility of rank k
    return by_rank[ranks(fitness)]


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
