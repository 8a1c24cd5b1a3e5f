"""Test problems shared by the strategy tests: classic benchmark functions on flat vectors."""

import math

import torch


def sphere(x: torch.Tensor) -> torch.Tensor:
    """sum x^2, minimum 0 at the origin."""
    return (x**2).sum(-1)


def rastrigin(x: torch.Tensor) -> torch.Tensor:
    """10 n + sum (x^2 - 10 cos 2 pi x): a regular grid of local minima, global minimum 0 at 0."""
    return 10 * x.shape[-1] + (x**2 - 10 * torch.cos(2 * math.pi * x)).sum(-1)


def quadratic(dim: int, seed: int = 0, dtype=torch.float64):
    """An ill-conditioned quadratic 1/2 x^T A x (eigenvalues 1..100) and its gradient."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=dtype))
    a = q @ torch.diag(torch.logspace(0, 2, dim, dtype=dtype)) @ q.T

    def value(x):
        return 0.5 * ((x @ a) * x).sum(-1)

    def grad(x):
        return a @ x

    return value, grad
