"""Scale-free mutations regenerated from integer seeds.

A :class:`Mutation` says how a population member perturbs the center; :func:`sample` turns a vector
of member seeds into the perturbation rows, ``row i`` depending on ``seeds[i]`` alone. This is what
lets strategies hand out seeds instead of parameter vectors (docs/design.rst, contract 3) and lets MPI
ranks exchange seeds and fitness only.

Why a noise table. Drawing fresh random numbers for every coordinate of every member costs about as
much as the forward pass it feeds (2.6 ns per number here, against ~5 ns of forward pass per
parameter per member at batch 256), and a strategy needs the rows twice: once to evaluate, once to
update. So, like OpenAI's ES (Salimans et al. 2017), each distribution keeps one large table of
i.i.d. draws, made once from a fixed seed, and a member's row is a window of it at an offset hashed
from the member's seed. Windows at different offsets are uncorrelated (shifts of an i.i.d.
sequence), a row costs a memory copy instead of a random number generator, and the per-layer
scales, sparse masks, clipping and radial magnitudes are applied on top. The table is the same on
every rank and every run: it is a fixed codebook, not a source of run-to-run randomness.

Low-rank mutations (``Mutation(rank=r)``): a member's window holds the factors of its row instead
(A and B of each weight matrix, the coordinates of every other parameter), r·(out + in) numbers per
matrix; :func:`sample` expands them into rows, :func:`iter_members` hands them out unexpanded and
:func:`weighted_sum` sums them as one GEMM per matrix. The math is in :mod:`evograd.lowrank`.

Seed conventions (what :func:`member_seeds` hands out):

* ``0 <= s < 2**62``: an ordinary member.
* ``s < 0`` (other than :data:`PARENT_SEED`): the antithetic mirror of member ``~s``: exactly the
  negated row, so antithetic pairs sum to zero bit for bit.
* :data:`PARENT_SEED`: the zero perturbation; strategies use it to have the parent evaluated on the
  same data as its mutations.

Streams other than the population's (minibatch order, label shuffles, episode starts) take their
seeds from :func:`stream_seed`, the same hash keyed by the stream's name.

References:
    Yao, Liu & Lin (1999), Evolutionary programming made faster (Cauchy mutation).
    Lee & Yao (2004), Evolutionary programming using mutations based on the Lévy probability
    distribution.
    Chambers, Mallows & Stuck (1976), A method for simulating stable random variables.
    Salimans, Ho, Chen, Sidor & Sutskever (2017), Evolution strategies as a scalable alternative to
    reinforcement learning (shared noise table).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from evograd import lowrank, validate
from evograd.flat import Layout, layout_of

__all__ = [
    "KINDS",
    "PARENT_SEED",
    "Mutation",
    "member_seeds",
    "stream_seed",
    "draw",
    "sample",
    "iter_rows",
    "iter_members",
    "scale_vector",
    "chunk_rows",
    "weighted_sum",
]

KINDS = ("gaussian", "cauchy", "levy", "loguniform")
PARENT_SEED = -(2**63)
_MEMBER_SEED_BITS = 62
_UINT64 = (1 << 64) - 1
_TABLE_SEED = 0x5EED_7AB1E  # the codebook's own seed; never a user's
_MIN_TABLE_LENGTH = 1 << 24  # 16M numbers, 64 MiB in float32
_CHUNK_BYTES = 4 << 20  # default chunk of weighted_sum on a CPU: about what stays in cache across its passes
_GPU_CHUNK_BYTES = 512 << 20  # on a GPU: few kernel launches per call (benchmarks/chunk_sweep.py)

Scale = torch.Tensor | Mapping[str, float] | None


@dataclasses.dataclass(frozen=True)
class Mutation:
    """How one population member perturbs the center.

    Args:
        kind: ``"gaussian"`` (the reference), ``"cauchy"``, ``"levy"`` (symmetric α-stable, any
            α in (0, 2]) or ``"loguniform"`` (a direction uniform on the sphere with magnitude
            ``sigma * exp(-log_range * U)``, U ~ U(0, 1): every scale from ``sigma*e^-log_range`` to
            ``sigma`` is equally likely per octave).
        sigma: scale. Per coordinate for gaussian/cauchy/levy (the standard deviation for gaussian,
            the scale parameter for cauchy and levy); for loguniform it is the *whole row's*
            largest norm, so ``sigma_gauss * sqrt(dim)`` is the comparable setting.
        alpha: stability index of ``"levy"`` (1 is Cauchy, 2 is Gaussian with variance 2·sigma²).
        log_range: how many e-folds of magnitude ``"loguniform"`` spans.
        antithetic: strategies hand out mirrored pairs (ε, −ε).
        sparsity: fraction of coordinates left unmutated in each row, drawn from the row's seed.
        clip: if set, coordinates are clamped to ``±clip * sigma`` (tames heavy tails).
        scale: per-coordinate factors: a tensor of length dim, or a mapping from parameter name (or
            module prefix such as ``"0"`` for ``"0.weight"`` and ``"0.bias"``) to a factor, so bottom
            layers can be searched harder than top ones. A mapping needs the model's layout: see
            :meth:`resolve`. Not part of equality.
        rank: None (full rank, every coordinate drawn independently) or r >= 1: every 2-d parameter
            W (out × in) is perturbed by ``sigma/sqrt(r) · A Bᵀ``, A (out × r) and B (in × r) drawn
            from the member's seed, every other parameter coordinate by coordinate as without a
            rank (:mod:`evograd.lowrank`, EGGROLL). Entries keep the per-coordinate scale
            ``sigma``; drawing, evaluating (with :class:`evograd.LowRankEvaluator`) and the
            strategies' updates cost r·(out + in) per member and matrix instead of out·in, which
            pays when members see few samples each (RL steps, one sequence each). Which
            coordinates form matrices comes from the model: :meth:`resolve` the mutation first.
            Allowed with ``"gaussian"`` (A and B Gaussian: the reference, as in EGGROLL) and
            ``"loguniform"`` (the scale-free magnitude applies to the whole row, whose direction is
            the normalized low-rank Gaussian row, no longer uniform on the sphere); not with
            ``"cauchy"``/``"levy"`` (products of heavy-tailed factors put the outliers on whole rows
            and columns, and ``sigma`` would lose its meaning), ``sparsity`` or ``clip`` (a masked
            or clamped A Bᵀ is not low-rank); ``scale`` must be constant over each matrix.
        layout: the model's parameter layout, set by :meth:`resolve` when ``rank`` is set.

    Raises:
        TypeError: ``rank`` not an integer, or ``layout`` not an :class:`evograd.flat.Layout`.
        ValueError: a field out of its allowed range, naming the field (``rank`` larger than a
            matrix's smaller side names the parameter).

    Examples:
        >>> Mutation(kind="levy", alpha=1.5, sigma=0.01).kind
        'levy'
        >>> Mutation(sigma=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: sigma=-1.0 is out of range; allowed (0, inf)
        >>> low = Mutation(sigma=0.01, rank=4, antithetic=True).resolve(torch.nn.Linear(16, 8))
        >>> sample(low, member_seeds(0, 0, 2), 16 * 8 + 8).shape
        torch.Size([2, 136])
        >>> Mutation(rank=16).resolve(torch.nn.Linear(16, 8))
        Traceback (most recent call last):
        ...
        ValueError: rank=16 is larger than the smaller side of parameter 'weight' (8 x 16); allowed rank <= 8
    """

    kind: str = "gaussian"
    sigma: float = 0.02
    alpha: float = 1.5
    log_range: float = 5.0
    antithetic: bool = False
    sparsity: float = 0.0
    clip: float | None = None
    scale: Scale = dataclasses.field(default=None, compare=False, repr=False)
    rank: int | None = None
    layout: Layout | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not a mutation kind; allowed {KINDS}")
        validate.real("sigma", self.sigma, low=0.0, low_open=True)
        validate.real("alpha", self.alpha, low=0.0, high=2.0, low_open=True)
        validate.real("log_range", self.log_range, low=0.0)
        validate.real("sparsity", self.sparsity, low=0.0, high=1.0, high_open=True)
        if self.clip is not None:
            validate.real("clip", self.clip, low=0.0, low_open=True)
        if not isinstance(self.antithetic, bool):
            raise ValueError(f"antithetic={self.antithetic!r} must be a bool")
        if self.scale is not None and not isinstance(self.scale, (torch.Tensor, Mapping)):
            raise ValueError(
                f"scale must be a tensor of length dim or a mapping name -> factor, got {type(self.scale).__name__}"
            )
        if isinstance(self.scale, torch.Tensor) and (self.scale.dim() != 1 or not torch.isfinite(self.scale).all()):
            raise ValueError("scale must be a 1-d tensor of finite factors")
        if self.rank is not None:
            object.__setattr__(self, "rank", validate.integer("rank", self.rank, low=1))
            self._check_rank_options()
        if self.layout is not None:
            if not isinstance(self.layout, Layout):
                raise TypeError(f"layout must be an evograd.flat.Layout or None, got {type(self.layout).__name__}")
            # shapes as plain tuples of ints: a state holding the mutation stays plain data (checkpoints)
            shapes = tuple(tuple(int(d) for d in shape) for shape in self.layout.shapes)
            object.__setattr__(self, "layout", Layout(tuple(self.layout.names), shapes))
            if self.rank is not None:
                factors = lowrank.factor_layout(self.layout, self.rank)  # checks the rank against every matrix
                if isinstance(self.scale, torch.Tensor):
                    if self.scale.numel() != self.layout.dim:
                        raise ValueError(f"mutation.scale has {self.scale.numel()} entries but dim={self.layout.dim}")
                    factors.check_scale(self.scale)

    def _check_rank_options(self) -> None:
        """Refuse the kinds and options a rank cannot honour (see the class docstring for why)."""
        if self.kind not in lowrank.KINDS:
            raise ValueError(
                f"kind={self.kind!r} is not allowed with rank={self.rank}; allowed kinds with a rank: {lowrank.KINDS}"
            )
        if self.sparsity:
            raise ValueError(
                f"sparsity={self.sparsity!r} is not allowed with rank={self.rank}; allowed 0.0 "
                "(a masked A Bᵀ is not low-rank)"
            )
        if self.clip is not None:
            raise ValueError(
                f"clip={self.clip!r} is not allowed with rank={self.rank}; allowed None "
                "(a clamped A Bᵀ is not low-rank)"
            )

    def replace(self, **changes) -> Mutation:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def resolve(self, model_or_layout) -> Mutation:
        """A copy for this model: a ``scale`` mapping turned into a per-coordinate tensor, and with a
        ``rank``, the model's layout kept (which parameters are matrices); otherwise ``self``.

        Raises:
            ValueError: a ``scale`` name matches no parameter, or ``rank`` is larger than a matrix's
                smaller side (naming the parameter).
        """
        if not isinstance(self.scale, Mapping) and self.rank is None:
            return self
        layout = model_or_layout if isinstance(model_or_layout, Layout) else layout_of(model_or_layout)
        changes: dict = {"layout": layout} if self.rank is not None else {}
        if isinstance(self.scale, Mapping):
            changes["scale"] = scale_vector(self.scale, layout)
        return self.replace(**changes)


def scale_vector(scale: Mapping[str, float], layout: Layout) -> torch.Tensor:
    """Per-coordinate factors from a mapping of parameter names (or module prefixes) to factors.

    A name matches a parameter when it equals the parameter's name or is a dotted prefix of it;
    parameters no name matches keep factor 1. An unknown name raises, so a typo is not silently a
    uniform scale.
    """
    factors = torch.ones(layout.dim, dtype=torch.float64)
    for key, factor in scale.items():
        validate.real(f"scale[{key!r}]", factor, low=0.0)
        hits = [s for name, s in layout.slices.items() if name == key or name.startswith(key + ".")]
        if not hits:
            raise ValueError(f"scale key {key!r} matches no parameter; parameters are {list(layout.slices)}")
        for s in hits:
            factors[s] = float(factor)
    return factors


# ----------------------------------------------------------------------------------------------
# seeds


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 (wrapping arithmetic): a cheap, well-mixed hash."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _splitmix64_int(x: int) -> int:
    """:func:`_splitmix64` of one Python integer: the same hash, without numpy's per-call cost.

    Examples:
        >>> x = np.array([0, 1, 2**63, _UINT64], dtype=np.uint64)
        >>> [_splitmix64_int(int(v)) for v in x] == _splitmix64(x).tolist()
        True
    """
    x = (x + 0x9E3779B97F4A7C15) & _UINT64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _UINT64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _UINT64
    return x ^ (x >> 31)


def member_seeds(seed: int, generation: int, n: int, *, antithetic: bool = False) -> torch.Tensor:
    """Seeds of the ``n`` members of one generation, derived from ``(seed, generation, member)``.

    With ``antithetic`` the second half mirrors the first (``~s``), so ``n`` must be even.

    Examples:
        >>> s = member_seeds(0, 0, 4, antithetic=True)
        >>> bool((s[2:] == ~s[:2]).all())
        True
    """
    if n < 1:
        raise ValueError(f"n={n} is out of range; allowed [1, inf)")
    if antithetic and n % 2:
        raise ValueError(f"n={n} must be even for antithetic pairs")
    half = n // 2 if antithetic else n
    key = _splitmix64(np.array([seed], dtype=np.int64).view(np.uint64))
    key = _splitmix64(key ^ np.array([generation], dtype=np.int64).view(np.uint64))
    members = _splitmix64(key ^ np.arange(half, dtype=np.uint64))
    base = torch.from_numpy((members >> np.uint64(64 - _MEMBER_SEED_BITS)).astype(np.int64))
    return torch.cat([base, ~base]) if antithetic else base


def stream_seed(seed: int, stream: str, *index: int) -> int:
    """The seed of the auxiliary random stream ``stream`` of run ``seed`` (minibatch order, label shuffles, ...).

    Every random number of a run derives from its one seed (docs/design.rst, contract 2). Streams
    other than the population's (which :func:`member_seeds` hands out) get their seeds here, by the
    same SplitMix64 hash: of the run's seed, then of a fixed 64-bit digest of the stream's name,
    then of each ``index`` in turn (e.g. a generation or a step). Different names give independent
    streams, so no two streams of one run, and no stream of two runs, share numbers the way hand-picked
    offsets (``seed + 1``, ``10_007 + seed``) can. The result is itself a valid seed.

    Args:
        seed: the run's seed, in :data:`evograd.validate.SEED_RANGE`.
        stream: what the stream is for, e.g. ``"minibatches"``; any non-empty string.
        *index: non-negative integers selecting one seed of the stream (a step, a generation).

    Returns:
        An integer in [0, 2**63), for ``torch.Generator().manual_seed`` or as a seed of its own.

    Raises:
        TypeError: ``seed`` or an index is not an integer, or ``stream`` is not a string.
        ValueError: ``seed`` or an index is negative (or ``seed`` too large), or ``stream`` is empty.

    Examples:
        >>> stream_seed(0, "minibatches") == stream_seed(0, "minibatches")
        True
        >>> len({stream_seed(0, "minibatches"), stream_seed(1, "minibatches"), stream_seed(0, "labels")})
        3
        >>> stream_seed(0, "minibatches", 7) != stream_seed(0, "minibatches", 8)
        True
    """
    if not isinstance(stream, str):
        raise TypeError(f"stream={stream!r} must be a string, got {type(stream).__name__}")
    if not stream:
        raise ValueError("stream='' is not allowed; allowed any non-empty name")
    key = _splitmix64_int(_splitmix64_int(validate.seed("seed", seed)) ^ _stream_key(stream))
    for i in index:
        key = _splitmix64_int(key ^ validate.integer("index", i, low=0, high=_UINT64))
    return key >> 1


@functools.lru_cache(maxsize=256)
def _stream_key(stream: str) -> int:
    """The hashed 64-bit digest of a stream's name (fixed across runs, processes and machines)."""
    return _splitmix64_int(int.from_bytes(hashlib.blake2b(stream.encode(), digest_size=8).digest(), "little"))


def _row_hash(base_seeds: np.ndarray, salt: int) -> np.ndarray:
    """An independent uint64 hash of each member seed per ``salt`` (offset, mask, magnitude)."""
    return _splitmix64(base_seeds.astype(np.uint64) ^ _splitmix64(np.array([salt], dtype=np.uint64)))


# ----------------------------------------------------------------------------------------------
# tables


_TABLES: dict[tuple, torch.Tensor] = {}


def _table_length(dim: int) -> int:
    return max(_MIN_TABLE_LENGTH, 1 << (4 * dim - 1).bit_length())


def draw(
    kind: str,
    length: int,
    *,
    generator: torch.Generator,
    alpha: float = 1.5,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``length`` i.i.d. unit-scale draws of ``kind`` (or ``"uniform"`` on [0, 1)) from ``generator``.

    ``"loguniform"`` draws are Gaussian: they are the directions, the magnitude comes per row.

    Examples:
        >>> draw("levy", 3, alpha=1.2, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3])
    """
    gen = generator
    if kind in ("gaussian", "loguniform"):
        return torch.randn(length, generator=gen, device=device, dtype=dtype)
    if kind == "uniform":
        return torch.rand(length, generator=gen, device=device, dtype=dtype)
    if kind == "cauchy":
        return torch.empty(length, device=device, dtype=dtype).cauchy_(generator=gen)
    # Chambers-Mallows-Stuck for symmetric alpha-stable, S(alpha, 0, 1), in float64:
    # X = sin(aV)/cos(V)^(1/a) * (cos(V - aV)/W)^((1-a)/a),  V ~ U(-pi/2, pi/2),  W ~ Exp(1).
    v = (torch.rand(length, generator=gen, device=device, dtype=torch.float64) - 0.5) * math.pi
    w = torch.empty(length, device=device, dtype=torch.float64).exponential_(generator=gen)
    a = alpha
    x = torch.sin(a * v) / torch.cos(v).pow(1.0 / a) * (torch.cos(v - a * v) / w).pow((1.0 - a) / a)
    return x.to(dtype)


def _draw_table(kind: str, alpha: float, length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The codebook of ``kind``: ``length`` draws from the library's fixed table seed.

    Always drawn by the CPU generator and then moved, so every device holds the same codebook and a
    run on a GPU perturbs by the same rows as on the CPU (a GPU's generator would give other
    numbers). It costs one transfer of the table, once per process.
    """
    gen = torch.Generator().manual_seed(_TABLE_SEED)
    return draw(kind, length, generator=gen, alpha=alpha, dtype=dtype).to(device)


def _table(kind: str, alpha: float, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    length = _table_length(dim)
    key = (kind, alpha if kind == "levy" else None, length, str(device), dtype)
    if key not in _TABLES:
        _TABLES[key] = _draw_table(kind, alpha, length, device, dtype)
    return _TABLES[key]


def _offsets(base: np.ndarray, salt: int, table: torch.Tensor, dim: int) -> np.ndarray:
    """Window starts in ``table``, hashed from the member seeds: rows of ``dim`` consecutive entries."""
    span = table.numel() - dim + 1
    return (_row_hash(base, salt) % np.uint64(span)).astype(np.int64)


def _windows(table: torch.Tensor, offsets: torch.Tensor, dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """The (n, dim) rows of ``table`` starting at ``offsets`` (a tensor on the table's device), into ``out``."""
    return torch.index_select(table.unfold(0, dim, 1), 0, offsets, out=out)


# ----------------------------------------------------------------------------------------------
# sampling


def _coordinate_scale(mutation: Mutation, dim: int, layout: Layout | None, device, dtype) -> torch.Tensor | None:
    scale = mutation.scale
    if scale is None:
        return None
    if isinstance(scale, Mapping):
        if layout is None:
            raise ValueError(
                "mutation.scale names parameters; resolve it first with mutation.resolve(model) or pass layout="
            )
        scale = scale_vector(scale, layout)
    if scale.numel() != dim:
        raise ValueError(f"mutation.scale has {scale.numel()} entries but dim={dim}")
    return scale.to(device=device, dtype=dtype)


def _model_layout(mutation: Mutation, layout: Layout | None) -> Layout | None:
    """The layout a call works with: the one the mutation was resolved with, else the caller's."""
    return mutation.layout if mutation.layout is not None else layout


def _factor_layout(mutation: Mutation, dim: int, layout: Layout | None) -> lowrank.FactorLayout | None:
    """Where a low-rank mutation's factors sit in a member's draws (None without a rank)."""
    if mutation.rank is None:
        return None
    if layout is None:
        raise ValueError(
            f"mutation.rank={mutation.rank} needs the model's layout (which parameters are matrices): resolve it "
            "first with mutation.resolve(model) or pass layout="
        )
    if layout.dim != dim:
        raise ValueError(f"mutation.layout has {layout.dim} parameters but dim={dim}")
    return lowrank.factor_layout(layout, mutation.rank)


def _checked(seeds: torch.Tensor, dim: int, device: torch.device | str | None) -> tuple[torch.Tensor, torch.device]:
    """The seeds as a CPU int64 vector and the device with its index (``"cuda"`` is ``cuda:0`` on tensors)."""
    if dim < 1:
        raise ValueError(f"dim={dim} is out of range; allowed [1, inf)")
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type != "cpu" and device.index is None:
        device = torch.empty(0, device=device).device  # the current device of that type
    return torch.as_tensor(seeds, dtype=torch.int64).reshape(-1).cpu(), device


@dataclasses.dataclass(frozen=True)
class _Call:
    """What one call of the samplers resolved once for all its chunks: seeds, device, scale and plan."""

    seeds: torch.Tensor  # (n,) int64 on the CPU
    device: torch.device
    scale: torch.Tensor | None  # (dim,) per-coordinate factors on the device
    plan: _Plan | None  # None for no seeds

    @classmethod
    def of(cls, mutation: Mutation, seeds, dim: int, device, dtype: torch.dtype, layout: Layout | None) -> _Call:
        seeds, device = _checked(seeds, dim, device)
        layout = _model_layout(mutation, layout)
        scale = _coordinate_scale(mutation, dim, layout, device, dtype)  # resolved and moved once, not per chunk
        factors = _factor_layout(mutation, dim, layout)
        if factors is not None and scale is not None and mutation.layout is None:
            factors.check_scale(scale)  # a resolved mutation checked its scale when it was built
        plan = _Plan.of(mutation, seeds, dim, device, dtype, factors) if len(seeds) else None
        return cls(seeds, device, scale, plan)

    def parts(self, chunk_size: int) -> Iterator[slice]:
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} is out of range; allowed [1, inf)")
        n = len(self.seeds)
        return (slice(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size))


def sample(
    mutation: Mutation,
    seeds: torch.Tensor,
    dim: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    layout: Layout | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The perturbation rows of the given member seeds.

    Args:
        mutation: the distribution and its options.
        seeds: (n,) int64 member seeds (see the module docstring for the conventions).
        dim: number of coordinates of a row.
        device: where the rows live (default: CPU).
        dtype: floating dtype of the rows.
        layout: the model's parameter layout, needed only when ``mutation.scale`` names parameters
            or ``mutation.rank`` is set, and the mutation was not resolved.
        out: a contiguous (n, dim) tensor of that device and dtype to write the rows into, instead
            of a new one.

    Returns:
        (n, dim) tensor (``out`` if given); row i depends only on ``seeds[i]``, bit-identical on
        every device for the per-coordinate kinds (a ``"loguniform"`` row's norm is computed by the
        device, so its rows agree to rounding; so do low-rank rows, products of A and B). A
        low-rank mutation's rows are materialized from its factors (:mod:`evograd.lowrank`).

    Examples:
        >>> m = Mutation(kind="cauchy", sigma=0.1)
        >>> s = member_seeds(0, 0, 4, antithetic=True)
        >>> rows = sample(m, s, 10)
        >>> rows.shape, bool((rows[:2] + rows[2:] == 0).all())
        (torch.Size([4, 10]), True)
    """
    call = _Call.of(mutation, seeds, dim, device, dtype, layout)
    n = len(call.seeds)
    if out is not None and (
        out.shape != (n, dim) or out.dtype != dtype or out.device != call.device or not out.is_contiguous()
    ):
        raise ValueError(
            f"out must be a contiguous ({n}, {dim}) {dtype} tensor on {call.device}, got "
            f"{'contiguous' if out.is_contiguous() else 'strided'} {tuple(out.shape)} {out.dtype} "
            f"on {out.device}"
        )
    if call.plan is None:
        return torch.empty(0, dim, device=call.device, dtype=dtype) if out is None else out
    return call.plan.rows(slice(0, n), call.scale, out)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the rows of some member seeds need from the host, moved to the device once for all chunks.

    Everything here is a function of the seeds alone, computed with numpy: the window offsets, and
    one factor per row. Moving them once per call, rather than once per chunk, matters on a GPU:
    each copy from host memory waits for the device to catch up, which would stall it every chunk.
    """

    mutation: Mutation
    dim: int
    table: torch.Tensor
    offsets: torch.Tensor  # (n,) window starts in ``table``, on its device
    keep_table: torch.Tensor | None  # the uniform table sparse masks are read from
    keep_offsets: torch.Tensor | None  # (n,)
    factors: torch.Tensor | None  # (n,) sign × sigma, or the signed radius of a loguniform row; None: all sigma
    low_rank: lowrank.FactorLayout | None  # where a low-rank member's factors sit in its draws; None: full rank

    @classmethod
    def of(
        cls,
        mutation: Mutation,
        seeds: torch.Tensor,
        dim: int,
        device: torch.device,
        dtype: torch.dtype,
        low_rank: lowrank.FactorLayout | None = None,
    ) -> _Plan:
        signed = seeds.numpy()
        parent = signed == PARENT_SEED
        mirrored = (signed < 0) & ~parent
        base = np.where(mirrored, ~signed, signed)
        base = np.where(parent, 0, base)
        # The mirror sign (-1, or 0 for the parent) rides on the per-row factor instead of costing a
        # pass of its own; negation commutes exactly with the symmetric clip and the coordinate
        # scales, so the rows are bit for bit those of applying it last.
        sign = np.where(mirrored, -1.0, 1.0)
        sign[parent] = 0.0
        width = dim if low_rank is None else low_rank.length  # a row, or a low-rank member's draws
        table = _table(mutation.kind, mutation.alpha, width, device, dtype)
        host = [_offsets(base, 1, table, width)]
        keep_table = None
        if mutation.sparsity > 0:
            keep_table = _table("uniform", 0.0, dim, device, dtype)
            host.append(_offsets(base, 2, keep_table, dim))
        moved = torch.from_numpy(np.stack(host)).to(device)  # (1 or 2, n): one transfer
        factors = None
        if mutation.kind == "loguniform":
            u = (_row_hash(base, 3) >> np.uint64(11)).astype(np.float64) / float(1 << 53)  # U(0, 1)
            factors = sign * mutation.sigma * np.exp(-mutation.log_range * u)
        elif not (sign == 1.0).all():
            factors = sign * mutation.sigma
        if factors is not None:
            factors = torch.from_numpy(factors).to(device=device, dtype=dtype)
        keep_offsets = moved[1] if keep_table is not None else None
        return cls(mutation, dim, table, moved[0], keep_table, keep_offsets, factors, low_rank)

    def rows(
        self,
        part: slice,
        scale: torch.Tensor | None,
        out: torch.Tensor | None,
        columns: slice | None = None,
        directions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The rows of the members in ``part``, or their coordinates ``columns`` only.

        Args:
            part: which of the plan's members.
            scale: per-coordinate factors of the coordinates drawn (``columns`` only), on the device, or None.
            out: a buffer for the (c, width) rows, or None.
            columns: a contiguous range of coordinates (default all). Every coordinate of a row is
                its own window entry times per-row factors, so a slice of a row is drawn without
                the rest, bit for bit the same as those coordinates of the whole row.
            directions: (n,) for ``"loguniform"`` only: the norms of the plan's whole masked windows
                (:meth:`direction_norms`), which a slice cannot compute; None computes them from
                the rows, so then ``columns`` must cover the whole row.
        """
        if self.low_rank is not None:  # whole rows only: _columns refuses a slice of low-rank rows
            return self.members(part, scale).rows(out)
        mutation = self.mutation
        start, width = (0, self.dim) if columns is None else (columns.start, columns.stop - columns.start)
        rows = self.masked(part, start, width, out)  # (c, width)
        if mutation.kind == "loguniform":
            norms = self.direction_norms(rows) if directions is None else directions[part]  # (c,)
            rows.mul_(self.factors[part, None] / norms[:, None])
        elif self.factors is None:
            rows.mul_(mutation.sigma)
        else:
            rows.mul_(self.factors[part, None])
        if mutation.clip is not None:
            bound = mutation.clip * mutation.sigma
            rows.clamp_(-bound, bound)
        if scale is not None:
            rows.mul_(scale)
        return rows

    def masked(self, part: slice, start: int, width: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """The (c, width) unit-scale windows of the members in ``part`` from coordinate ``start``, masked."""
        offsets = self.offsets[part] if start == 0 else self.offsets[part] + start
        rows = _windows(self.table, offsets, width, out)  # (c, width)
        if self.keep_table is not None:
            keep = self.keep_offsets[part] if start == 0 else self.keep_offsets[part] + start
            rows.mul_(_windows(self.keep_table, keep, width) >= self.mutation.sparsity)
        return rows

    def direction_norms(self, masked: torch.Tensor) -> torch.Tensor:
        """The (c,) norms a ``"loguniform"`` row divides its whole masked window by (never below the tiniest float)."""
        return masked.norm(dim=1).clamp_min(torch.finfo(masked.dtype).tiny)

    def members(self, part: slice, scale: torch.Tensor | None) -> lowrank.Members:
        """The low-rank members in ``part`` as their draws and per-member factors."""
        draws = _windows(self.table, self.offsets[part], self.low_rank.length)  # (c, length)
        if self.factors is None:
            coef = torch.full((len(draws),), self.mutation.sigma, dtype=draws.dtype, device=draws.device)  # (c,)
        else:
            coef = self.factors[part]  # (c,)
        if self.mutation.kind == "loguniform":  # the radius over the norm of the low-rank direction
            coef = coef / lowrank.direction_norms(self.low_rank, draws).clamp_min(torch.finfo(draws.dtype).tiny)
        return lowrank.Members(self.low_rank, draws, coef, scale)


def iter_rows(
    mutation: Mutation,
    seeds: torch.Tensor,
    dim: int,
    *,
    chunk_size: int,
    device=None,
    dtype: torch.dtype = torch.float32,
    layout: Layout | None = None,
    reuse: bool = False,
    columns: slice | None = None,
    directions: torch.Tensor | None = None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Perturbation rows in chunks of at most ``chunk_size``: memory never holds n × dim at once.

    With ``reuse`` every chunk is written into one buffer, so a chunk is valid only until the next
    one is drawn. That saves an allocation per chunk, and with it the page faults of touching fresh
    memory, which for chunks of megabytes cost about as much as filling them (measured here: a
    64 × 100,810 chunk in 2 ms instead of 5 ms).

    With ``columns`` (a contiguous range of coordinates) only those coordinates of each row are
    drawn, bit for bit the same as in the whole row; a ``"loguniform"`` mutation then needs the
    ``(n,)`` ``directions`` of :func:`row_norms`, the norms of whole windows a slice cannot see.
    """
    call = _Call.of(mutation, seeds, dim, device, dtype, layout)
    columns = _columns(columns, dim, mutation)
    if columns is not None and mutation.kind == "loguniform" and directions is None:
        raise ValueError("a slice of loguniform rows needs directions=, the norms of the whole windows (row_norms)")
    scale = call.scale if call.scale is None or columns is None else call.scale[columns]
    if directions is not None:
        directions = directions.to(device=call.device, dtype=dtype)
    width = dim if columns is None else columns.stop - columns.start
    buffer = torch.empty(min(chunk_size, len(call.seeds)), width, device=call.device, dtype=dtype) if reuse else None
    for part in call.parts(chunk_size):
        out = None if buffer is None else buffer[: part.stop - part.start]
        yield part, call.plan.rows(part, scale, out, columns, directions)


def _columns(columns: slice | None, dim: int, mutation: Mutation) -> slice | None:
    """``columns`` checked against ``dim``: None for the whole row, else a non-empty contiguous slice inside it."""
    if columns is None:
        return None
    if not isinstance(columns, slice) or columns.step not in (1, None):
        raise ValueError(f"columns={columns!r} must be a contiguous slice of coordinates")
    start, stop = columns.start, columns.stop
    if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop <= dim):
        raise ValueError(f"columns={columns!r} is out of range; allowed slice(start, stop), 0 <= start < stop <= {dim}")
    if (start, stop) == (0, dim):
        return None
    if mutation.rank is not None:
        raise ValueError(
            f"columns={columns!r} with mutation.rank={mutation.rank}: a slice of coordinates needs full-rank rows "
            "(a low-rank update is one GEMM of the factors already; do not shard it)"
        )
    return columns


def row_norms(
    mutation: Mutation,
    seeds: torch.Tensor,
    dim: int,
    *,
    chunk_size: int | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    layout: Layout | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (n,) norms of whole rows, and for ``"loguniform"`` the (n,) norms of their masked windows.

    The norms are what :func:`weighted_sum` computes for the same rows, bit for bit (a row's norm
    is a reduction over that row alone); the window norms are what a slice of a ``"loguniform"``
    row is normalized by (``directions`` of :func:`iter_rows`). Ranks that share an update each
    compute them for a share of the members and exchange them, instead of every rank drawing every
    whole row.

    Returns:
        ``(norms, directions)``; ``directions`` is None for the per-coordinate kinds.
    """
    if mutation.rank is not None:
        raise ValueError(f"mutation.rank={mutation.rank}: row_norms is for full-rank rows (a slice needs them)")
    call = _Call.of(mutation, seeds, dim, device, dtype, layout)
    seeds, device = call.seeds, call.device
    chunk_size = chunk_rows(dim, dtype, device=device) if chunk_size is None else chunk_size
    norms = torch.zeros(len(seeds), device=device, dtype=dtype)
    loguniform = mutation.kind == "loguniform"
    directions = torch.zeros(len(seeds), device=device, dtype=dtype) if loguniform else None
    if len(seeds) == 0:
        return norms, directions
    scale, plan = call.scale, call.plan
    buffer = torch.empty(min(chunk_size, len(seeds)), dim, device=device, dtype=dtype)
    for start in range(0, len(seeds), chunk_size):
        part = slice(start, min(start + chunk_size, len(seeds)))
        given = None
        if loguniform:
            directions[part] = plan.direction_norms(plan.masked(part, 0, dim, buffer[: part.stop - part.start]))
            given = directions
        norms[part] = plan.rows(part, scale, buffer[: part.stop - part.start], None, given).norm(dim=1)
    return norms, directions


def iter_members(
    mutation: Mutation,
    seeds: torch.Tensor,
    dim: int,
    *,
    chunk_size: int,
    device=None,
    dtype: torch.dtype = torch.float32,
    layout: Layout | None = None,
) -> Iterator[tuple[slice, lowrank.Members]]:
    """A low-rank mutation's members in chunks of at most ``chunk_size``, as their draws, never as rows.

    What evaluators and updates that work on the factors use (:class:`evograd.LowRankEvaluator`,
    :func:`weighted_sum`): a chunk's :class:`~evograd.lowrank.Members` holds its (c, length)
    draws and (c,) factors, from which ``members.rows()`` gives exactly the rows :func:`iter_rows`
    would.

    Raises:
        ValueError: ``mutation.rank`` is None, or the layout is missing (see :func:`sample`).
    """
    if mutation.rank is None:
        raise ValueError("mutation.rank=None: iter_members needs a low-rank mutation; use iter_rows for full rank")
    call = _Call.of(mutation, seeds, dim, device, dtype, layout)
    for part in call.parts(chunk_size):
        yield part, call.plan.members(part, call.scale)


def chunk_rows(
    dim: int, dtype: torch.dtype = torch.float32, *, nbytes: int | None = None, device: torch.device | str | None = None
) -> int:
    """How many rows of ``dim`` coordinates fit in ``nbytes`` (at least one).

    By default ``nbytes`` is :func:`weighted_sum`'s chunk for ``device``: 4 MiB on a CPU, 512 MiB
    on a GPU. The CPU's sum passes over each chunk several times (fill, scale, norm, product), and
    a chunk that stays in cache between passes makes them nearly free. Measured on a 2-core EPYC at
    P=1024: 100,810 coordinates summed 2-4× faster in chunks of 8-16 rows than of 256, while 4,810
    coordinates were fastest in chunks of about 256 (fewer, larger calls), which is what a fixed
    byte budget gives both. A GPU pays per kernel launch instead, so there fewer, larger chunks win:
    on an H100 at P=8192, 100,810 coordinates summed in 39 ms in chunks of 41 rows, 12 ms in 665
    and 11 ms in 2662 (``benchmarks/chunk_sweep.py``; figures in ``benchmarks/RESULTS.rst``).

    Examples:
        >>> chunk_rows(100_000), chunk_rows(1_000), chunk_rows(1_000, nbytes=8_000)
        (10, 1048, 2)
        >>> chunk_rows(100_000, device="cuda")
        1342
    """
    if nbytes is None:
        on_cpu = device is None or torch.device(device).type == "cpu"
        nbytes = _CHUNK_BYTES if on_cpu else _GPU_CHUNK_BYTES
    return max(1, nbytes // (dim * torch.finfo(dtype).bits // 8))


class _Rows:
    """A chunk of materialized rows, with the two operations :func:`weighted_sum` needs of a chunk."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows  # (c, dim)

    def norms(self) -> torch.Tensor:
        return self.rows.norm(dim=1)  # (c,)

    def accumulate(self, total: torch.Tensor, weights: torch.Tensor) -> None:
        total.add_(weights @ self.rows)  # (dim,)


def weighted_sum(
    mutation: Mutation,
    seeds: torch.Tensor,
    weights: torch.Tensor,
    dim: int,
    *,
    norm_power: float = 0.0,
    chunk_size: int | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    layout: Layout | None = None,
    columns: slice | None = None,
    norms: torch.Tensor | None = None,
    directions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_i weights[i] * row_i / ||row_i||**norm_power``, regenerating rows chunk by chunk.

    Rows whose weight is zero are not regenerated. This is the update of every seed-based
    strategy: the population is never held in memory, only the (dim,) sum and one chunk of rows
    (``chunk_size`` rows; by default :func:`chunk_rows` of ``device``).

    A share of the sum. With ``columns`` only those coordinates of the sum are formed, from those
    coordinates of the rows: with the same ``chunk_size`` each coordinate is summed over the same
    chunks of members in the same order, so the slice equals those coordinates of the whole sum
    bit for bit (ranks that each sum a slice assemble exactly the one-process sum). A slice cannot
    see whole rows, so it takes their norms from :func:`row_norms`: ``norms`` when
    ``norm_power`` is not 0, and ``directions`` for a ``"loguniform"`` mutation.

    Args:
        mutation, seeds, dim, device, dtype, layout: the rows, as for :func:`sample`.
        weights: (n,) one weight per row.
        norm_power: divide each row by its norm to this power.
        chunk_size: rows regenerated at once; default :func:`chunk_rows` of the whole row.
        columns: a contiguous range of coordinates to sum (default all).
        norms: (n,) the rows' norms from :func:`row_norms`, used instead of computing them.
        directions: (n,) the window norms of :func:`row_norms`, for a slice of ``"loguniform"`` rows.

    A low-rank mutation's rows are never materialized: each matrix's share of the sum is one GEMM
    of the stacked factors, ``A_stack · diag(w) · B_stackᵀ``, the norms come from the factors
    (:meth:`evograd.lowrank.Members.accumulate`), and a chunk is ``chunk_size`` members' draws
    (by default :func:`chunk_rows` of the draws' length). Its sum is never sliced.

    Returns:
        The (dim,) sum (``(stop - start,)`` with ``columns``), and the (n,) row norms (0 where the
        weight was zero).

    Raises:
        ValueError: ``weights`` of the wrong shape, or a slice without the norms it needs.
    """
    weights = torch.as_tensor(weights)
    if weights.shape != (len(seeds),):
        raise ValueError(f"weights must have shape ({len(seeds)},), got {tuple(weights.shape)}")
    columns = _columns(columns, dim, mutation)
    if columns is not None and norm_power and norms is None:
        raise ValueError(f"norm_power={norm_power} over a slice of columns needs norms=, the whole rows' (row_norms)")
    width = dim if columns is None else columns.stop - columns.start
    total = torch.zeros(width, device=device, dtype=dtype)
    found = torch.zeros(len(seeds), device=device, dtype=dtype)
    active = torch.nonzero(weights != 0).reshape(-1).cpu()
    if len(active) == 0:
        return total, found
    weights = weights.to(device=device, dtype=dtype)
    if norms is not None:
        norms = norms.to(device=device, dtype=dtype)
    options = {"device": device, "dtype": dtype, "layout": layout}
    if mutation.rank is None:
        size = chunk_size if chunk_size is not None else chunk_rows(dim, dtype, device=device)
        given = None if directions is None else directions[active]
        chunks = (
            (part, _Rows(rows))
            for part, rows in iter_rows(
                mutation, seeds[active], dim, chunk_size=size, reuse=True, columns=columns, directions=given, **options
            )
        )
    else:
        factors = _factor_layout(mutation, dim, _model_layout(mutation, layout)).length
        size = chunk_size if chunk_size is not None else chunk_rows(factors, dtype, device=device)
        chunks = iter_members(mutation, seeds[active], dim, chunk_size=size, **options)
    for part, chunk in chunks:
        index = active[part].to(found.device)
        chunk_norms = chunk.norms() if norms is None else norms[index]  # (c,)
        found[index] = chunk_norms
        coef = weights[index]
        if norm_power:
            coef = coef / chunk_norms.clamp_min(torch.finfo(dtype).tiny).pow(norm_power)
        chunk.accumulate(total, coef)
    return total, found
