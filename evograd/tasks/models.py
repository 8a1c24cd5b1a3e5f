"""The models every method trains: a multilayer perceptron and a small convolutional network.

Both are initialized from a seed of their own (torch's default ranges, drawn from a private
generator), never from the global random generator (docs/design.rst, contract 2), so the same seed
gives every method the same initial weights. Both take flat feature vectors: the convolutional
network reshapes them into images itself, so one :class:`~evograd.tasks.data.Split` serves both.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["mlp", "cnn"]


def _init_(model: nn.Module, seed: int) -> nn.Module:
    """Draw every Linear and Conv layer's weight, then bias, uniformly in ±1/sqrt(fan_in), in module order.

    This is torch's own default range for these layers (kaiming-uniform with a=√5 for the weight),
    drawn from a generator seeded with ``seed``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                bound = 1.0 / layer.weight[0].numel() ** 0.5  # fan_in: in_features (times the kernel size)
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.uniform_(-bound, bound, generator=gen)
    return model


def mlp(
    sizes: tuple[int, ...] = (64, 32, 10),
    *,
    activation: type[nn.Module] = nn.Tanh,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """A multilayer perceptron with the given layer sizes, initialized from ``seed`` (no global RNG).

    Raises:
        ValueError: fewer than two sizes, or a size that is not a positive integer.

    Examples:
        >>> mlp((4, 8, 2), seed=0)
        Sequential(
          (0): Linear(in_features=4, out_features=8, bias=True)
          (1): Tanh()
          (2): Linear(in_features=8, out_features=2, bias=True)
        )
    """
    if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"sizes={sizes!r} must list at least two positive layer widths")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.utils.skip_init(nn.Linear, n_in, n_out, dtype=dtype))  # nn.Linear's own init draws globally
        if i < len(sizes) - 2:
            layers.append(activation())
    return _init_(nn.Sequential(*layers), seed)


def cnn(
    shape: tuple[int, ...],
    classes: int,
    *,
    channels: tuple[int, ...] = (8, 16),
    kernel: int = 3,
    activation: type[nn.Module] = nn.Tanh,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """A small convolutional classifier of flat inputs: reshape, strided convolutions, a linear read-out.

    Inputs are ``(batch, prod(shape))`` feature vectors, reshaped to one-channel signals
    ``(batch, 1, *shape)``: 1-d (``shape=(40,)``, Conv1d) or 2-d (``shape=(28, 28)``, Conv2d). Each
    convolution has stride 2 and "same" padding, so it halves every spatial size (rounding up);
    the last one's feature map is flattened into a linear layer of ``classes`` outputs.

    Args:
        shape: the spatial shape of one input, 1-d or 2-d.
        classes: outputs of the read-out layer.
        channels: output channels of each convolution, in order (e.g. conv 8 -> conv 16).
        kernel: the kernel size of every convolution, odd.
        activation: the nonlinearity after each convolution.
        seed: the initialization seed.
        dtype: the parameters' dtype.

    Raises:
        ValueError: a shape that is neither 1-d nor 2-d, or a non-positive size, or an even kernel.

    Examples:
        >>> net = cnn((28, 28), 10, seed=0)
        >>> net(torch.zeros(5, 784)).shape, sum(p.numel() for p in net.parameters())
        (torch.Size([5, 10]), 9098)
    """
    if len(shape) not in (1, 2) or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape={shape!r} must be a 1-d or 2-d spatial shape of positive sizes")
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"channels={channels!r} must list at least one positive channel count")
    if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel={kernel!r} is out of range; allowed odd integers in [1, inf)")
    conv = nn.Conv1d if len(shape) == 1 else nn.Conv2d
    layers: list[nn.Module] = [nn.Unflatten(1, (1, *shape))]
    spatial = list(shape)
    for c_in, c_out in zip((1, *channels[:-1]), channels):
        layers += [nn.utils.skip_init(conv, c_in, c_out, kernel, stride=2, padding=kernel // 2, dtype=dtype)]
        layers += [activation()]
        spatial = [(s + 1) // 2 for s in spatial]  # stride 2 with "same" padding
    features = channels[-1] * math.prod(spatial)
    layers += [nn.Flatten(), nn.utils.skip_init(nn.Linear, features, classes, dtype=dtype)]
    return _init_(nn.Sequential(*layers), seed)
