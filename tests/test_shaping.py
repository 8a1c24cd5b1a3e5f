"""Tests of evograd.shaping: rank shaping is invariant to monotone transforms; non-finite is worst."""

import torch

from evograd import shaping


def test_centered_ranks_are_invariant_under_monotone_transforms():
    f = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = shaping.centered_ranks(f)
    assert torch.equal(r, shaping.centered_ranks(f.exp()))
    assert torch.equal(r, shaping.centered_ranks(f**3 + 7))
    assert float(r.min()) == -0.5 and float(r.max()) == 0.5
    assert abs(float(r.sum())) < 1e-12
    assert int(r.argmin()) == int(f.argmin())


def test_non_finite_fitness_ranks_worst():
    f = torch.tensor([1.0, float("nan"), -3.0, float("-inf"), 2.0])
    r = shaping.ranks(f)
    assert set(r[[1, 3]].tolist()) == {3, 4}
    assert int(r[2]) == 0
    z = shaping.zscore(f)
    assert torch.isfinite(z).all() and float(z[1]) == float(z.max())


def test_improvements_only_count_real_gains():
    gain = shaping.improvements(1.0, torch.tensor([0.5, 1.0, 2.0, float("nan")]))
    assert torch.equal(gain, torch.tensor([0.5, 0.0, 0.0, 0.0]))


def test_zscore_has_zero_mean_unit_std():
    f = torch.arange(10, dtype=torch.float64)
    z = shaping.zscore(f)
    assert abs(float(z.mean())) < 1e-12 and abs(float(z.std()) - 1) < 1e-12
