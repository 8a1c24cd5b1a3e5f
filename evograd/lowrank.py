"""Low-rank mutations: each weight matrix of a member perturbed by a rank-r product (EGGROLL).

The math. A full-rank Gaussian mutation perturbs a weight matrix W (out × in) by σE, E with
out·in i.i.d. N(0, 1) entries. A low-rank one (Sarkar et al. 2025) perturbs it by

    σ/√r · A Bᵀ,    A (out × r), B (in × r), entries i.i.d. N(0, 1).

Each entry of A Bᵀ/√r, Σ_k A_ik B_jk/√r, is a sum of r products of independent standard normals:
mean 0 and variance 1, the per-coordinate scale of the full-rank mutation, so ``sigma`` keeps its
meaning (the entries are not Gaussian: heavier-tailed at rank 1, Gaussian as r grows). Every other
tensor (biases, LayerNorm gains, kernels of three or more dimensions) is perturbed coordinate by
coordinate, as a full-rank mutation does.

Why. Three costs per member and matrix fall from out·in to r·(out + in):

* drawing: a member's draws are r·(out + in) numbers per matrix, not out·in;
* evaluating: a member's linear layer computes x (W + σ/√r A Bᵀ)ᵀ = x Wᵀ + σ/√r (x B) Aᵀ. The first
  term is one matrix product for the whole population, which reads W once instead of once per
  member; the second costs r·(in + out) per sample (:class:`evograd.LowRankEvaluator`);
* updating: a strategy's update Σ_i w_i ε_i is, on each matrix,
  σ/√r Σ_i w_i A_i B_iᵀ = σ/√r · A_stack diag(w ⊗ 1_r) B_stackᵀ with A_stack = [A_1 … A_n]
  (out × nr) and B_stack (in × nr): one matrix product (GEMM) instead of n materialized rows
  (:meth:`Members.accumulate`).

Each perturbation is low-rank, the update is not: a sum of n rank-r terms has rank up to
min(nr, out, in), and Sarkar et al. show the low-rank update approaches the full-rank one as O(1/r).

Draws and rows. A member's draws are one window of :attr:`FactorLayout.length` numbers of the noise
table (:mod:`evograd.noise`), hashed from its seed like a full-rank row. Parameters take their
entries in layout order: a matrix takes A then B (row-major, (out, r) then (in, r)), any other
tensor its numel coordinates. Member i's row is ``c_i · d_i ⊙ s``: ``d_i`` the direction of unit
scale (A Bᵀ/√r on matrices, the draws themselves elsewhere), ``s`` the mutation's per-coordinate
scale (constant over each matrix, so the perturbation stays low-rank) and ``c_i`` one factor per
member: ``sign·σ`` for ``"gaussian"``, ``sign·σe^(−kU)/‖d_i‖`` for ``"loguniform"``, with sign −1 for
an antithetic mirror and 0 for the parent. A mirror shares its twin's A and B, so negating ``c_i``
negates every coordinate exactly. :func:`evograd.noise.sample` materializes rows from these
draws, so every consumer of (dim,) rows works unchanged.

References:
    Sarkar, Fellows, Duque et al. (2025), Evolution strategies at the hyperscale (EGGROLL),
    arXiv:2511.16652.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch

from evograd.flat import Layout

__all__ = ["KINDS", "Block", "FactorLayout", "Members", "factor_layout", "direction_norms"]

#: The kinds a rank may be combined with (see :class:`evograd.Mutation`).
KINDS = ("gaussian", "loguniform")


@dataclasses.dataclass(frozen=True)
class Block:
    """One parameter's place in a member's row and in its draws.

    Attributes:
        name: the parameter's name in the layout.
        shape: its shape.
        coords: its coordinates in the (dim,) row.
        draws: its entries in the (length,) draws.
        rank: r for a matrix perturbed by A Bᵀ, 0 for a tensor perturbed coordinate by coordinate.
    """

    name: str
    shape: tuple[int, ...]
    coords: slice
    draws: slice
    rank: int

    @property
    def matrix(self) -> bool:
        """Whether the block is a matrix perturbed by A Bᵀ."""
        return self.rank > 0

    def a(self, draws: torch.Tensor) -> torch.Tensor:
        """A of each member: a (c, out, r) view of (c, length) draws."""
        start = self.draws.start
        return draws[:, start : start + self.shape[0] * self.rank].view(-1, self.shape[0], self.rank)

    def b(self, draws: torch.Tensor) -> torch.Tensor:
        """B of each member: a (c, in, r) view of (c, length) draws."""
        start = self.draws.start + self.shape[0] * self.rank
        return draws[:, start : self.draws.stop].view(-1, self.shape[1], self.rank)

    def dense(self, draws: torch.Tensor) -> torch.Tensor:
        """The coordinates of a tensor that is not a matrix: a (c, numel) view of (c, length) draws."""
        return draws[:, self.draws]


@dataclasses.dataclass(frozen=True)
class FactorLayout:
    """Where each parameter's factors sit in a member's draws (see the module docstring).

    Attributes:
        rank: r of every matrix.
        blocks: one per parameter, in layout order.
        dim: coordinates of a row.
        length: numbers of a member's draws: Σ r·(out + in) over matrices plus the other coordinates.
    """

    rank: int
    blocks: tuple[Block, ...]
    dim: int
    length: int

    def check_scale(self, scale: torch.Tensor) -> None:
        """Refuse per-coordinate factors that vary inside a matrix (the perturbation would not be low-rank).

        Raises:
            ValueError: naming the first parameter whose factors vary.
        """
        for block in self.blocks:
            if block.matrix:
                factors = scale[block.coords]
                if not bool((factors == factors[0]).all()):
                    raise ValueError(
                        f"scale varies inside the matrix {block.name!r}; with a rank, allowed are factors constant "
                        "over each matrix (e.g. scale by parameter name)"
                    )


@functools.lru_cache(maxsize=64)
def factor_layout(layout: Layout, rank: int) -> FactorLayout:
    """The factor layout of a model's parameters under rank-``rank`` mutations of its 2-d parameters.

    Args:
        layout: the model's parameter layout (:func:`evograd.flat.layout_of`).
        rank: r, at least 1 and at most the smaller side of every 2-d parameter.

    Raises:
        ValueError: ``rank`` larger than a matrix's smaller side, naming the parameter.

    Examples:
        >>> from evograd import flat
        >>> layout = flat.layout_of(torch.nn.Linear(5, 3))
        >>> factors = factor_layout(layout, 2)
        >>> factors.length, [(b.name, b.rank) for b in factors.blocks]  # 2·(3 + 5) + 3
        (19, [('weight', 2), ('bias', 0)])
    """
    blocks, coord, draw = [], 0, 0
    for name, shape, numel in zip(layout.names, layout.shapes, layout.numels):
        shape = tuple(int(d) for d in shape)
        matrix = len(shape) == 2
        if matrix and rank > min(shape):
            raise ValueError(
                f"rank={rank} is larger than the smaller side of parameter {name!r} ({shape[0]} x {shape[1]}); "
                f"allowed rank <= {min(shape)}"
            )
        width = rank * (shape[0] + shape[1]) if matrix else numel
        blocks.append(Block(name, shape, slice(coord, coord + numel), slice(draw, draw + width), rank if matrix else 0))
        coord, draw = coord + numel, draw + width
    return FactorLayout(rank, tuple(blocks), coord, draw)


def _frobenius_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖A_i B_iᵀ‖² of each member from its (c, out, r) A and (c, in, r) B: Σ (AᵀA) ⊙ (BᵀB), no out×in product."""
    gram_a = torch.bmm(a.transpose(1, 2), a)  # (c, r, r)
    gram_b = torch.bmm(b.transpose(1, 2), b)  # (c, r, r)
    return (gram_a * gram_b).sum((1, 2))  # (c,)


def direction_norms(
    factors: FactorLayout, draws: torch.Tensor, block_scales: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """‖d_i ⊙ s‖ of each member's direction of unit scale, from its draws alone.

    Args:
        factors: the factor layout.
        draws: (c, length) draws.
        block_scales: per block name, the scale of its coordinates (a 0-d tensor for a matrix, the
            (numel,) factors otherwise); None for no scale.

    Returns:
        (c,) norms, in O(c·r²·(out + in)) per matrix instead of O(c·out·in).
    """
    total = torch.zeros(len(draws), dtype=draws.dtype, device=draws.device)  # (c,)
    for block in factors.blocks:
        scale = None if block_scales is None else block_scales[block.name]
        if block.matrix:
            sq = _frobenius_sq(block.a(draws), block.b(draws)) / block.rank  # (c,) ‖A Bᵀ‖²/r
            total += sq if scale is None else sq * scale.square()
        else:
            values = block.dense(draws) if scale is None else block.dense(draws) * scale  # (c, numel)
            total += values.square().sum(1)
    return total.sqrt()


@dataclasses.dataclass(frozen=True, eq=False)
class Members:
    """A chunk of low-rank members as their draws: rows, norms and weighted sums, without rows where possible.

    Attributes:
        factors: the layout of the draws.
        draws: (c, length) draws of unit scale.
        coef: (c,) each member's factor ``c_i`` (sign·σ, or the loguniform magnitude over the
            direction's norm; 0 for the parent).
        scale: (dim,) per-coordinate factors, constant over each matrix; None for none.
    """

    factors: FactorLayout
    draws: torch.Tensor
    coef: torch.Tensor
    scale: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.draws)

    @functools.cached_property
    def block_scales(self) -> dict[str, torch.Tensor] | None:
        """Per block name: a matrix's one factor (0-d tensor), another tensor's (numel,) factors; None for no scale."""
        if self.scale is None:
            return None
        return {b.name: self.scale[b.coords.start] if b.matrix else self.scale[b.coords] for b in self.factors.blocks}

    def matrix_coef(self, block: Block, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(c,) the factor of each member's A Bᵀ on ``block``: ``w_i · c_i · s / √r`` (``w_i`` = 1 without weights)."""
        coef = self.coef if weights is None else weights * self.coef  # (c,)
        factor = 1.0 / math.sqrt(block.rank)
        if self.block_scales is not None:
            return coef * (self.block_scales[block.name] * factor)
        return coef * factor

    def perturbation(self, block: Block) -> torch.Tensor:
        """``(c, *shape)``: each member's perturbation of ``block``, materialized."""
        if block.matrix:
            a = block.a(self.draws) * self.matrix_coef(block)[:, None, None]  # (c, out, r)
            return torch.bmm(a, block.b(self.draws).transpose(1, 2))  # (c, out, in)
        values = block.dense(self.draws) * self.coef[:, None]  # (c, numel)
        if self.block_scales is not None:
            values = values * self.block_scales[block.name]
        return values.view(len(self), *block.shape)

    def rows(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """The (c, dim) rows, materialized (into ``out`` if given)."""
        if out is None:
            out = torch.empty(len(self), self.factors.dim, dtype=self.draws.dtype, device=self.draws.device)
        for block in self.factors.blocks:
            out[:, block.coords] = self.perturbation(block).reshape(len(self), -1)
        return out

    def norms(self) -> torch.Tensor:
        """(c,) the norm of each member's row, ``|c_i|·‖d_i ⊙ s‖``, without materializing it."""
        return self.coef.abs() * direction_norms(self.factors, self.draws, self.block_scales)

    def accumulate(self, total: torch.Tensor, weights: torch.Tensor) -> None:
        """Add ``Σ_i weights[i] · row_i`` to the (dim,) ``total`` in place, one GEMM per matrix.

        On a matrix block: σ/√r Σ_i w_i c_i A_i B_iᵀ = [A_1 … A_c] diag(k ⊗ 1_r) [B_1 … B_c]ᵀ, with
        ``k_i = w_i c_i s/√r``; the diagonal is folded into A's columns. Other blocks: ``(w·c) @ draws``.
        """
        c = len(self)
        for block in self.factors.blocks:
            target = total[block.coords]
            if block.matrix:
                out, fan_in = block.shape
                k = self.matrix_coef(block, weights)  # (c,)
                a = (block.a(self.draws) * k[:, None, None]).transpose(0, 1).reshape(out, c * block.rank)
                b = block.b(self.draws).transpose(0, 1).reshape(fan_in, c * block.rank)  # (in, c·r)
                target.view(out, fan_in).addmm_(a, b.T)  # (out, c·r) @ (c·r, in)
            else:
                step = (weights * self.coef) @ block.dense(self.draws)  # (numel,)
                if self.block_scales is not None:
                    step = step * self.block_scales[block.name]
                target.add_(step)
