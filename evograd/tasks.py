"""Built-in tasks and their data. No downloads: data ships with a package or is generated.

Lower is better: every task's fitness is a loss (DESIGN.md, contract 1).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

__all__ = ["Split", "digits", "mlp"]


@dataclasses.dataclass(frozen=True)
class Split:
    """A fixed train/test split of a supervised data set, as tensors."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def digits(*, test_fraction: float = 0.2, seed: int = 0, dtype: torch.dtype = torch.float32) -> Split:
    """scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes), standardized, fixed split.

    Features are standardized with the training set's mean and standard deviation. The split is a
    seeded permutation, so the same ``seed`` always gives the same split.

    Raises:
        ImportError: scikit-learn is missing (install the ``data`` extra).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} is out of range; allowed (0, 1)")
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the digits task needs scikit-learn: pip install 'evograd[data]'") from err
    data = load_digits()
    x = torch.as_tensor(data.data, dtype=torch.float64)
    y = torch.as_tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)
    x = ((x - mean) / std).to(dtype)
    return Split(x[train], y[train], x[test], y[test])


def mlp(sizes: tuple[int, ...] = (64, 32, 10), *, activation: type[nn.Module] = nn.Tanh, seed: int = 0,
        dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A multilayer perceptron with the given layer sizes, initialized from ``seed`` (no global RNG)."""
    if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"sizes={sizes!r} must list at least two positive layer widths")
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(n_in, n_out, dtype=dtype)
        bound = 1.0 / n_in ** 0.5  # torch's default init range, drawn from our own generator
        with torch.no_grad():
            linear.weight.uniform_(-bound, bound, generator=gen)
            linear.bias.uniform_(-bound, bound, generator=gen)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)
