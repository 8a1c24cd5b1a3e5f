"""Tests of evograd.noise: determinism per seed, distributions, and every mutation option."""

import math

import pytest
import torch

from evograd import flat, noise
from evograd.noise import Mutation

stats = pytest.importorskip("scipy.stats")

SEEDS = noise.member_seeds(7, 3, 400)
DIM = 500


def _ecdf_matches(values: torch.Tensor, cdf, points) -> None:
    """Empirical CDF within 5 standard errors of the reference CDF at each point.

    With n = 200,000 draws the standard error of an empirical probability p is sqrt(p(1-p)/n) <= 0.0011;
    5 of them make a false alarm (for a correct sampler) less likely than 1e-5 per point.
    """
    x = values.double().reshape(-1).numpy()
    n = x.size
    for point in points:
        expected = float(cdf(point))
        empirical = float((x <= point).mean())
        tolerance = 5 * math.sqrt(max(expected * (1 - expected), 1e-4) / n)
        assert abs(empirical - expected) < tolerance, (point, empirical, expected)


@pytest.mark.slow
def test_rows_depend_only_on_their_seed():
    m = Mutation(kind="levy", alpha=1.3, sigma=0.3, sparsity=0.2, clip=10.0)
    rows = noise.sample(m, SEEDS[:20], 64)
    assert torch.equal(rows, noise.sample(m, SEEDS[:20], 64))
    assert torch.equal(rows[5:8], noise.sample(m, SEEDS[5:8], 64))
    assert torch.equal(rows[[3, 1]], noise.sample(m, SEEDS[[3, 1]], 64))
    assert not torch.equal(rows[0], rows[1])


def test_member_seeds_are_deterministic_and_distinct():
    a = noise.member_seeds(0, 0, 100)
    assert torch.equal(a, noise.member_seeds(0, 0, 100))
    assert len(set(a.tolist())) == 100
    assert not torch.equal(a, noise.member_seeds(0, 1, 100))
    assert not torch.equal(a, noise.member_seeds(1, 0, 100))
    assert bool((a >= 0).all())


@pytest.mark.parametrize("kind", noise.KINDS)
def test_antithetic_rows_sum_to_zero(kind):
    m = Mutation(kind=kind, sigma=0.5, antithetic=True)
    seeds = noise.member_seeds(0, 0, 16, antithetic=True)
    rows = noise.sample(m, seeds, 33)
    assert torch.equal(rows[:8] + rows[8:], torch.zeros(8, 33))
    assert rows[:8].abs().sum() > 0


def test_parent_seed_is_the_zero_perturbation():
    rows = noise.sample(Mutation(kind="cauchy"), torch.tensor([noise.PARENT_SEED, 5]), 10)
    assert torch.equal(rows[0].abs(), torch.zeros(10))
    assert rows[1].abs().sum() > 0


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k == "levy" else k for k in noise.KINDS])
def test_sigma_scales_rows_linearly(kind):
    small = noise.sample(Mutation(kind=kind, sigma=0.1, clip=4.0), SEEDS[:10], 50, dtype=torch.float64)
    large = noise.sample(Mutation(kind=kind, sigma=0.7, clip=4.0), SEEDS[:10], 50, dtype=torch.float64)
    torch.testing.assert_close(large, 7.0 * small, rtol=1e-12, atol=0)


def test_gaussian_quantiles_match_scipy():
    rows = noise.sample(Mutation(kind="gaussian", sigma=2.0), SEEDS, DIM, dtype=torch.float64)
    _ecdf_matches(rows, stats.norm(scale=2.0).cdf, [-4, -2, -1, -0.3, 0, 0.3, 1, 2, 4])


def test_cauchy_quantiles_match_scipy():
    rows = noise.sample(Mutation(kind="cauchy", sigma=0.5), SEEDS, DIM, dtype=torch.float64)
    _ecdf_matches(rows, stats.cauchy(scale=0.5).cdf, [-20, -3, -1, -0.5, -0.1, 0, 0.1, 0.5, 1, 3, 20])


def test_levy_quantiles_match_scipy():
    rows = noise.sample(Mutation(kind="levy", alpha=1.5, sigma=1.0), SEEDS, DIM, dtype=torch.float64)
    reference = stats.levy_stable(1.5, 0.0)
    _ecdf_matches(rows, reference.cdf, [-10, -2, -1, 0, 1, 2, 10])


@pytest.mark.slow
def test_levy_limits_are_cauchy_and_gaussian():
    cauchy = noise.sample(Mutation(kind="levy", alpha=1.0), SEEDS, DIM, dtype=torch.float64) / 0.02
    _ecdf_matches(cauchy, stats.cauchy().cdf, [-5, -1, 0, 1, 5])
    gauss = noise.sample(Mutation(kind="levy", alpha=2.0), SEEDS, DIM, dtype=torch.float64) / 0.02
    _ecdf_matches(gauss, stats.norm(scale=math.sqrt(2.0)).cdf, [-3, -1, 0, 1, 3])


def test_loguniform_magnitudes_are_uniform_per_octave():
    m = Mutation(kind="loguniform", sigma=3.0, log_range=4.0)
    seeds = noise.member_seeds(1, 0, 4000)
    norms = noise.sample(m, seeds, 20, dtype=torch.float64).norm(dim=1)
    assert float(norms.max()) <= 3.0 * (1 + 1e-12)
    assert float(norms.min()) >= 3.0 * math.exp(-4.0) * (1 - 1e-12)
    # -log(norm/sigma)/log_range should be U(0, 1): Kolmogorov-Smirnov at the 0.1% level.
    u = (-(norms / 3.0).log() / 4.0).numpy()
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_loguniform_directions_are_isotropic():
    rows = noise.sample(Mutation(kind="loguniform", sigma=1.0), noise.member_seeds(2, 0, 4000), 3, dtype=torch.float64)
    units = rows / rows.norm(dim=1, keepdim=True)
    # the mean of n unit vectors in R^3 has norm ~ 1/sqrt(n) = 0.016; 0.06 is ~4 of those
    assert float(units.mean(0).norm()) < 0.06


@pytest.mark.parametrize("sparsity", [0.3, 0.9])
def test_sparse_masks_hit_the_requested_fraction(sparsity):
    rows = noise.sample(Mutation(kind="cauchy", sparsity=sparsity), SEEDS, DIM)
    zero = float((rows == 0).double().mean())
    se = math.sqrt(sparsity * (1 - sparsity) / rows.numel())
    assert abs(zero - sparsity) < 5 * se
    again = noise.sample(Mutation(kind="gaussian", sparsity=sparsity), SEEDS, DIM)
    assert torch.equal(rows == 0, again == 0), "the mask is drawn from the seed, whatever the kind"


def test_clip_bounds_heavy_tails():
    rows = noise.sample(Mutation(kind="cauchy", sigma=0.1, clip=3.0), SEEDS, DIM)
    assert float(rows.abs().max()) == pytest.approx(0.3)
    unclipped = noise.sample(Mutation(kind="cauchy", sigma=0.1), SEEDS, DIM)
    inside = unclipped.abs() < 0.3
    assert torch.equal(rows[inside], unclipped[inside])


def test_per_layer_scales_land_on_the_right_slices():
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    layout = flat.layout_of(model)
    seeds = SEEDS[:6]
    base = noise.sample(Mutation(kind="cauchy"), seeds, layout.dim)
    scaled = Mutation(kind="cauchy", scale={"0": 3.0, "2.bias": 0.0})
    rows = noise.sample(scaled, seeds, layout.dim, layout=layout)
    s = layout.slices
    torch.testing.assert_close(rows[:, s["0.weight"]], 3.0 * base[:, s["0.weight"]])
    torch.testing.assert_close(rows[:, s["0.bias"]], 3.0 * base[:, s["0.bias"]])
    assert torch.equal(rows[:, s["2.weight"]], base[:, s["2.weight"]])
    assert torch.equal(rows[:, s["2.bias"]], torch.zeros(6, 3))
    resolved = scaled.resolve(model)
    assert torch.equal(noise.sample(resolved, seeds, layout.dim), rows)
    chunks = torch.cat([r for _, r in noise.iter_rows(scaled, seeds, layout.dim, chunk_size=4, layout=layout)])
    assert torch.equal(chunks, rows), "iter_rows resolves the names once and gives the same rows"
    vector = torch.linspace(0.5, 2.0, layout.dim)
    torch.testing.assert_close(noise.sample(Mutation(kind="cauchy", scale=vector), seeds, layout.dim), base * vector)


def test_scale_by_name_needs_a_layout_and_known_names():
    m = Mutation(scale={"0": 2.0})
    with pytest.raises(ValueError, match="resolve"):
        noise.sample(m, SEEDS[:2], 10)
    with pytest.raises(ValueError, match="'9'"):
        Mutation(scale={"9": 2.0}).resolve(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "field, value",
    [
        ("kind", "uniform"),
        ("sigma", 0.0),
        ("sigma", float("nan")),
        ("alpha", 0.0),
        ("alpha", 2.5),
        ("sparsity", 1.0),
        ("sparsity", -0.1),
        ("clip", 0.0),
        ("log_range", -1.0),
        ("antithetic", 1),
    ],
)
def test_bad_mutation_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        Mutation(**{field: value})


def test_weighted_sum_equals_dense_reference():
    m = Mutation(kind="levy", alpha=1.7, sigma=0.2)
    seeds = SEEDS[:50]
    weights = torch.linspace(-1, 1, 50, dtype=torch.float64)
    weights[::7] = 0
    rows = noise.sample(m, seeds, 40, dtype=torch.float64)
    total, norms = noise.weighted_sum(m, seeds, weights, 40, norm_power=1.0, chunk_size=8, dtype=torch.float64)
    expected = (weights[:, None] * rows / rows.norm(dim=1, keepdim=True)).sum(0)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(norms[weights != 0], rows.norm(dim=1)[weights != 0])


def test_stream_seeds_are_deterministic_distinct_and_uniform():
    """Named streams: the same inputs give the same seed; runs, names and indices give distinct,
    uniformly distributed 63-bit seeds, none equal to a member seed of the same run."""
    by_run = [noise.stream_seed(s, "minibatches") for s in range(2000)]
    by_step = [noise.stream_seed(0, "minibatches", k) for k in range(2000)]
    by_name = [noise.stream_seed(0, f"stream {i}") for i in range(2000)]
    assert by_run == [noise.stream_seed(s, "minibatches") for s in range(2000)]
    found = by_run + by_step + by_name
    assert len(set(found)) == len(found)
    assert all(0 <= s < 2**63 for s in found)
    assert not set(found) & set(noise.member_seeds(0, 0, 2000).tolist())
    # every bit is a fair coin: mean within 5 standard errors of 1/2 (a false alarm < 1e-4 overall)
    bits = torch.tensor([[(s >> b) & 1 for b in range(63)] for s in found], dtype=torch.float64)  # (6000, 63)
    assert (bits.mean(0) - 0.5).abs().max() < 5 * 0.5 / math.sqrt(len(found))


def test_stream_seed_validates_its_arguments():
    with pytest.raises(ValueError, match="seed=-1"):
        noise.stream_seed(-1, "minibatches")
    with pytest.raises(TypeError, match="stream=3"):
        noise.stream_seed(0, 3)
    with pytest.raises(ValueError, match="stream=''"):
        noise.stream_seed(0, "")
    with pytest.raises(ValueError, match="index=-1"):
        noise.stream_seed(0, "minibatches", -1)
    with pytest.raises(TypeError, match="index=1.5"):
        noise.stream_seed(0, "minibatches", 1.5)


@pytest.mark.parametrize(
    "mutation",
    [
        Mutation(),
        Mutation(kind="cauchy", clip=3.0, antithetic=True),
        Mutation(kind="levy", sparsity=0.3),
        Mutation(kind="loguniform", sigma=1.0, sparsity=0.2, scale=torch.linspace(0.5, 2.0, 3000)),
        Mutation(kind="gaussian", scale=torch.linspace(0.5, 2.0, 3000), clip=2.0),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm_power", [0.0, 1.0, 2.0])
def test_slices_of_the_weighted_sum_assemble_the_whole_sum_bit_for_bit(mutation, dtype, norm_power):
    """Slices of columns (with the norms row_norms computes in other chunks) are the whole sum's coordinates."""
    dim = 3000
    seeds = noise.member_seeds(3, 1, 40, antithetic=True)
    weights = torch.randn(40, generator=torch.Generator().manual_seed(0))
    weights[5] = 0.0
    total, found = noise.weighted_sum(mutation, seeds, weights, dim, norm_power=norm_power, chunk_size=7, dtype=dtype)
    norms, directions = noise.row_norms(mutation, seeds, dim, chunk_size=5, dtype=dtype)
    active = weights != 0
    assert torch.equal(norms[active], found[active])
    assert (directions is None) == (mutation.kind != "loguniform")
    parts = [
        noise.weighted_sum(
            mutation,
            seeds,
            weights,
            dim,
            norm_power=norm_power,
            chunk_size=7,
            dtype=dtype,
            columns=slice(start, min(dim, start + 512)),
            norms=norms,
            directions=directions,
        )[0]
        for start in range(0, dim, 512)
    ]
    assert torch.equal(torch.cat(parts), total)
    rows = noise.sample(mutation, seeds[10:13], dim, dtype=dtype)  # (3, dim)
    chunks = noise.iter_rows(
        mutation,
        seeds[10:13],
        dim,
        chunk_size=2,
        dtype=dtype,
        columns=slice(100, 700),
        directions=directions[10:13] if directions is not None else None,
    )
    assert torch.equal(torch.cat([r for _, r in chunks]), rows[:, 100:700])


def test_a_slice_refuses_what_it_cannot_compute():
    seeds = noise.member_seeds(0, 0, 4)
    with pytest.raises(ValueError, match="norm_power"):
        noise.weighted_sum(Mutation(), seeds, torch.ones(4), 100, norm_power=1.0, columns=slice(0, 50))
    with pytest.raises(ValueError, match="directions"):
        next(noise.iter_rows(Mutation(kind="loguniform"), seeds, 100, chunk_size=2, columns=slice(0, 50)))
    with pytest.raises(ValueError, match="columns"):
        noise.weighted_sum(Mutation(), seeds, torch.ones(4), 100, columns=slice(50, 120))
    with pytest.raises(ValueError, match="columns"):
        noise.weighted_sum(Mutation(), seeds, torch.ones(4), 100, columns=slice(0, 50, 2))
