"""NaN and inf never reach the state: float64 fitness, overflow-safe weights and norms, refused settings, held steps."""

import dataclasses
import math

import pytest
import torch

from evograd import FunctionEvaluator, Mutation, OpenES, RollingImprovement, ScaleFreeEvolution, noise
from evograd.strategies import SeedStrategy, StrategyState

STRATEGIES = {
    "openes": lambda: OpenES(size=8, mutation=Mutation(sigma=0.1, antithetic=True), lr=0.1),
    "rolling": lambda: RollingImprovement(size=8, lr=0.1),
    "plus": lambda: ScaleFreeEvolution(size=8, mutation=Mutation(kind="cauchy", sigma=0.1)),
    "comma": lambda: ScaleFreeEvolution(size=8, mutation=Mutation(kind="cauchy", sigma=0.1), selection="comma", mu=3),
}


def sphere(x):
    return (x.double() ** 2).sum(1)


def run(strategy, center, generations, fitness=sphere):
    evaluate = FunctionEvaluator(fitness)
    state = strategy.init(center, seed=0)
    for _ in range(generations):
        seeds = strategy.ask(state)
        state, metrics = strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
    return state, metrics


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("value", [1.0, math.nan, math.inf])
def test_a_flat_or_all_non_finite_generation_leaves_the_state_where_it_is(name, value):
    strategy = STRATEGIES[name]()
    state, _ = run(strategy, torch.linspace(-1, 1, 6), 3)  # a moving state with history (Adam moments, estimate)
    fitness = torch.full((strategy.population,), value, dtype=torch.float64)
    new, metrics = strategy.tell(state, strategy.ask(state), fitness)
    assert metrics["held"] == 1 and new.generation == state.generation + 1
    assert dataclasses.replace(new, generation=state.generation) == state  # every other field the same object
    assert all(metrics[key] == 0.0 for key in strategy.extra_metrics)
    moved, metrics = strategy.tell(state, strategy.ask(state), torch.linspace(2, 1, strategy.population).double())
    assert metrics["held"] == 0 and not torch.equal(moved.center, state.center)


class _Broken(SeedStrategy):
    """A strategy whose update overflows: the template must hold the state rather than store it."""

    def _update(self, state, seeds, fitness):
        return {"center": state.center * math.inf}, {}


def test_an_update_that_would_store_nan_or_inf_is_held():
    strategy = _Broken(size=4, mutation=Mutation())
    state = strategy.init(torch.ones(3), seed=0)
    new, metrics = strategy.tell(state, strategy.ask(state), torch.arange(4.0))
    assert metrics["held"] == 1 and torch.equal(new.center, state.center) and isinstance(new, StrategyState)


@pytest.mark.parametrize("use_worse", [False, True])
def test_rolling_survives_a_fitness_beyond_float32(use_worse):
    """One fitness of 1e39 (gains beyond float32) gave a NaN center; the step is the same as for scaled gains."""
    strategy = RollingImprovement(size=8, lr=0.1, use_worse=use_worse)
    state = strategy.init(torch.linspace(-1, 1, 6), seed=0)
    seeds = strategy.ask(state)
    fitness = torch.linspace(1.0, 2.0, strategy.population).double()
    huge = fitness.clone()
    huge[3] = 1e39 if use_worse else huge[3]
    huge[0] = 1e39 if not use_worse else huge[0]  # a parent at 1e39: every gain is about 1e39
    new, metrics = strategy.tell(state, seeds, huge)
    assert metrics["held"] == 0 and bool(torch.isfinite(new.center).all()) and bool(torch.isfinite(new.estimate).all())
    assert float((new.center - state.center).norm()) == pytest.approx(0.1, rel=1e-5)  # a full normalized step


def test_power_of_two_scaling_of_the_gains_changes_no_bit():
    """Gains times 2^k give the same step bit for bit (scaling by a power of two is exact)."""
    strategy = RollingImprovement(size=8, lr=0.1)
    state = strategy.init(torch.linspace(-1, 1, 6), seed=0)
    seeds = strategy.ask(state)
    fitness = torch.tensor([1.0, 0.3, 1.7, 0.9, 1.1, 0.2, 2.0, 0.95, 0.5], dtype=torch.float64)
    new, _ = strategy.tell(state, seeds, fitness)
    scaled, _ = strategy.tell(state, seeds, fitness * 2.0**40)
    assert torch.equal(new.center, scaled.center) and torch.equal(new.estimate, scaled.estimate)


@pytest.mark.parametrize("sigma", [1e-25, 1e-30])
def test_openes_with_a_tiny_sigma_stays_finite(sigma):
    """n·σ² underflows in float32 for σ = 1e-25: the gradient is divided in two steps."""
    strategy = OpenES(size=8, mutation=Mutation(sigma=sigma, antithetic=True), lr=0.01)
    state, metrics = run(strategy, torch.zeros(6), 1)  # at 0 the tiny mutations are not absorbed by the center
    assert metrics["held"] == 0 and bool(torch.isfinite(state.center).all())
    assert bool(torch.isfinite(state.gradient).all()) and metrics["grad_norm"] > 0
    state, metrics = run(strategy, torch.zeros(6), 3)  # later: 0.01 + 1e-25 == 0.01, a flat generation, held
    assert bool(torch.isfinite(state.center).all())


def test_levy_below_half_is_refused_and_heavy_levy_stays_finite():
    with pytest.raises(ValueError, match=r"alpha=0\.2 is out of range; allowed \[0\.5, 2\]"):
        Mutation(kind="levy", alpha=0.2)
    table = noise.draw("levy", 1 << 20, alpha=0.5, generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(table).all()) and float(table.abs().max()) <= noise.LEVY_LIMIT
    strategy = OpenES(size=8, mutation=Mutation(kind="levy", alpha=0.5, sigma=0.01, antithetic=True))
    state, _ = run(strategy, torch.linspace(-1, 1, 6), 5)
    assert bool(torch.isfinite(state.center).all())


def test_norms_beyond_float32_are_taken_in_float64():
    mutation = Mutation(sigma=1e19)  # rows of about 1e19: their float32 squares overflow
    seeds = noise.member_seeds(0, 0, 4)
    total, norms = noise.weighted_sum(mutation, seeds, torch.ones(4), 100, norm_power=2.0)
    rows = noise.sample(mutation, seeds, 100).double()  # the float32 rows, squared without overflow
    assert norms.dtype == torch.float64 and bool(torch.isfinite(norms).all())
    torch.testing.assert_close(norms, rows.norm(dim=1), rtol=1e-6, atol=0)
    assert bool(torch.isfinite(total).all())


@pytest.mark.parametrize("make", [lambda lr: RollingImprovement(lr=lr), lambda lr: OpenES(lr=lr)])
def test_a_step_size_that_overflows_float32_is_refused(make):
    with pytest.raises(ValueError, match=r"lr=1e\+39 is out of range"):
        make(1e39)
    make(1e30)


def test_evolution_with_a_tiny_damping_does_not_overflow():
    strategy = ScaleFreeEvolution(size=8, mutation=Mutation(kind="cauchy", sigma=0.1), damping=1e-4)
    state = strategy.init(torch.ones(4), seed=0)
    fitness = torch.tensor([10.0] + [1.0] * 8, dtype=torch.float64)  # every mutation succeeds
    new, _ = strategy.tell(state, strategy.ask(state), fitness)
    assert new.mutation.sigma == strategy.sigma_bounds[1]
    fitness = torch.tensor([1.0] + [10.0] * 8, dtype=torch.float64)  # none succeeds
    new, _ = strategy.tell(state, strategy.ask(state), fitness)
    assert new.mutation.sigma == strategy.sigma_bounds[0]


def test_fitness_travels_as_float64_so_close_losses_stay_distinct():
    """8 losses near 1e8, 0.1 apart, were one float32 value; losses above 3.4e38 were inf."""
    seeds = noise.member_seeds(0, 0, 8)
    index = FunctionEvaluator(lambda x: torch.arange(len(x), dtype=torch.float64) * 0.1 + 1e8, chunk_size=8)
    fitness = index(torch.zeros(3), seeds, Mutation())
    assert fitness.dtype == torch.float64 and len(torch.unique(fitness)) == 8
    huge = FunctionEvaluator(lambda x: torch.full((len(x),), 1e39, dtype=torch.float64))
    assert bool(torch.isfinite(huge(torch.zeros(3), seeds, Mutation())).all())
