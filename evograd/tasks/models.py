"""The models every method trains: a multilayer perceptron, a small convolutional network and a
small decoder-only transformer.

Each is initialized from a seed of its own (torch's default ranges, drawn from a private
generator), never from the global random generator (docs/design.rst, contract 2), so the same seed
gives every method the same initial weights. The MLP and CNN take flat feature vectors: the
convolutional network reshapes them into images itself, so one :class:`~evograd.tasks.data.Split`
serves both. The transformer takes byte sequences (:mod:`evograd.tasks.text`).

The transformer's attention is written out (projections, scores, causal mask, softmax) rather than
taken from ``nn.MultiheadAttention`` or ``scaled_dot_product_attention``: written out, it runs under
``torch.func.vmap`` (:class:`~evograd.VmapEvaluator`) and its projections are plain ``nn.Linear``
layers, which :class:`~evograd.LowRankEvaluator` scores without forming member weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from evograd import validate

__all__ = ["mlp", "cnn", "CausalSelfAttention", "TransformerBlock", "CharTransformer", "char_transformer"]


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
            elif isinstance(layer, CharTransformer):  # its embeddings: N(0, 1), nn.Embedding's own default
                layer.embed.weight.normal_(generator=gen)
                layer.position.normal_(generator=gen)
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


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, written out: one ``qkv`` projection, scaled dot products,
    a lower-triangular mask, softmax, and an output projection ``proj``.

    Args:
        width: model width, a multiple of ``heads``.
        heads: attention heads.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.utils.skip_init(nn.Linear, width, 3 * width)
        self.proj = nn.utils.skip_init(nn.Linear, width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)  # (B, T, C) each
        q, k, v = (t.view(batch, steps, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, h, T, C/h)
        scores = q @ k.transpose(-1, -2) / math.sqrt(width // self.heads)  # (B, h, T, T)
        causal = torch.ones(steps, steps, dtype=torch.bool, device=x.device).tril()  # (T, T)
        weights = scores.masked_fill(~causal, float("-inf")).softmax(-1)  # (B, h, T, T)
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, steps, width))  # (B, T, C)


class TransformerBlock(nn.Module):
    """A pre-LayerNorm block: ``x + attention(LN(x))``, then ``x + MLP(LN(x))`` (GELU, 4x wide)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.attention = nn.LayerNorm(width), CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.fc1 = nn.utils.skip_init(nn.Linear, width, 4 * width)
        self.fc2 = nn.utils.skip_init(nn.Linear, 4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))  # (B, T, C)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))  # (B, T, C)


class CharTransformer(nn.Module):
    """A decoder-only character (byte) model: token and position embeddings, pre-LN blocks, a
    final LayerNorm and a linear head (untied from the embedding).

    ``forward(tokens)`` takes (B, T) integer tokens of any integer dtype (bytes arrive as uint8),
    T at most ``context``, and returns (B, T, vocab) next-token logits.

    Build it with :func:`char_transformer` (seeded initialization).

    References:
        Radford, Wu, Child, Luan, Amodei & Sutskever (2019), Language models are unsupervised
        multitask learners (GPT-2: the pre-LayerNorm decoder block).
    """

    def __init__(self, vocab: int, context: int, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.utils.skip_init(nn.Embedding, vocab, width)
        self.position = nn.Parameter(torch.empty(context, width))
        self.blocks = nn.Sequential(*(TransformerBlock(width, heads) for _ in range(layers)))
        self.ln = nn.LayerNorm(width)
        self.head = nn.utils.skip_init(nn.Linear, width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        steps = tokens.shape[-1]
        x = self.embed(tokens.long()) + self.position[:steps]  # (B, T, C)
        return self.head(self.ln(self.blocks(x)))  # (B, T, vocab)


def char_transformer(
    *,
    vocab: int = 256,
    context: int = 64,
    width: int = 128,
    heads: int = 4,
    layers: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> CharTransformer:
    """A :class:`CharTransformer` initialized from ``seed`` (no global RNG).

    Linear layers take torch's default range (uniform in ±1/sqrt(fan_in), weight and bias), the
    token and position embeddings N(0, 1) (``nn.Embedding``'s default), LayerNorms gain 1 and
    bias 0. The defaults (byte vocabulary, context 64, width 128, 4 heads, 3 blocks) have 669,056
    parameters.

    Raises:
        ValueError: a size that is not a positive integer, or ``width`` not a multiple of ``heads``.

    Examples:
        >>> net = char_transformer(seed=0)
        >>> net(torch.zeros(2, 64, dtype=torch.uint8)).shape, sum(p.numel() for p in net.parameters())
        (torch.Size([2, 64, 256]), 669056)
    """
    for name, value in (("vocab", vocab), ("context", context), ("width", width), ("heads", heads), ("layers", layers)):
        validate.integer(name, value, low=1)
    if width % heads:
        raise ValueError(f"width={width} is not a multiple of heads={heads}; allowed widths k * heads")
    return _init_(CharTransformer(vocab, context, width, heads, layers), seed).to(dtype)
