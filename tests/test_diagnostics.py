"""Tests of evograd.diagnostics: alignment of directions with the backprop gradient."""

import math

import pytest
import torch
from torch.nn import functional as F

from evograd import HybridOptimizer, Mutation, RollingImprovement, VmapEvaluator, diagnostics
from evograd import directions as D
from evograd.tasks import mlp


class RandomDirection(D.Direction):
    """Gaussian noise per step, from a local generator: no information about the loss."""

    def update(self, state, ctx):
        gen = torch.Generator().manual_seed(1000 + ctx.step)
        return [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in ctx.params], state


def regression(seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(300, 100, dtype=torch.float64)
    x = torch.randn(64, 300, generator=gen, dtype=torch.float64)
    y = torch.randn(64, 100, generator=gen, dtype=torch.float64)
    return model, (lambda: F.mse_loss(model(x), y))


def test_backprop_is_aligned_exactly_and_grad_is_left_alone():
    model, closure = regression()
    sentinel = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, s in zip(model.parameters(), sentinel):
        p.grad = s
    result = diagnostics.alignment(D.backprop(), model, closure)
    assert result.overall == pytest.approx(1.0, abs=1e-12)
    assert result.layers == pytest.approx({"weight": 1.0, "bias": 1.0}, abs=1e-12)
    assert all(p.grad is s for p, s in zip(model.parameters(), sentinel))


def test_random_direction_is_nearly_orthogonal_in_high_dimension():
    """For a Gaussian direction in D dimensions the cosine with a fixed vector has std 1/sqrt(D);
    |cos| < 4/sqrt(D) fails with probability about 6e-5 (and the seed is fixed)."""
    model, closure = regression()
    result = diagnostics.alignment(RandomDirection(), model, closure)
    assert abs(result.overall) < 4 / math.sqrt(300 * 100 + 100)
    assert abs(result.layers["weight"]) < 4 / math.sqrt(300 * 100)
    assert abs(result.layers["bias"]) < 4 / math.sqrt(100)
    negated = diagnostics.alignment(D.chain(D.backprop(), D.clip_norm(1e-3)), model, closure)
    assert negated.overall == pytest.approx(1.0, abs=1e-12)  # scaling never changes the cosine


def test_optimizer_logs_alignment_of_the_mix_and_its_members():
    """With unit-norm members weighted 50/50, cos(mix, g) = sqrt((1 + c) / 2) where c = cos(evo, g)."""
    model = mlp(seed=0, dtype=torch.float64)
    strategy = RollingImprovement(size=8, mutation=Mutation(sigma=0.01, antithetic=True))
    direction = D.mix(
        bp=(0.5, D.chain(D.backprop(), D.normalize())),
        evo=(0.5, D.chain(D.improvement(strategy, seed=0), D.normalize())),
    )
    optimizer = HybridOptimizer(
        model.parameters(), direction, evaluator=VmapEvaluator(model, F.cross_entropy), log_alignment_every=2, lr=0.1
    )
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        x, y = torch.randn(32, 64, generator=gen, dtype=torch.float64), torch.randint(0, 10, (32,), generator=gen)

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        optimizer.step(closure, batch=(x, y))
    history = optimizer.alignment_history
    expected = [(step, source) for step in (0, 2, 4) for source in ("direction", "bp", "evo")]
    assert [(h["step"], h["source"]) for h in history] == expected
    for step in (0, 2, 4):
        logged = {h["source"]: h for h in history if h["step"] == step}
        assert logged["bp"]["overall"] == pytest.approx(1.0, abs=1e-12)
        c = logged["evo"]["overall"]
        assert logged["direction"]["overall"] == pytest.approx(math.sqrt((1 + c) / 2), abs=1e-9)
        assert sorted(logged["evo"]["layers"]) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert optimizer.fe == 6 * (9 * 32 + 3 * 32)  # the logged gradient is the closure's, called once per step
    with pytest.raises(ValueError, match="log_alignment_every needs the true gradient"):
        optimizer.step(batch=(x, y))
