"""Tests of evograd.population: the ask/tell strategies."""

import dataclasses
import json
import math
import pathlib
import subprocess
import sys

import pytest
import torch
from problems import quadratic, rastrigin, sphere

from evograd import FunctionEvaluator, Mutation, OpenES, RollingImprovement, ScaleFreeEvolution, noise

ROOT = pathlib.Path(__file__).resolve().parents[1]
STRATEGIES = {
    "ScaleFreeEvolution": lambda: ScaleFreeEvolution(size=8, mutation=Mutation(kind="cauchy", sigma=0.3)),
    "RollingImprovement": lambda: RollingImprovement(
        size=8, mutation=Mutation(kind="loguniform", sigma=1.0, antithetic=True)
    ),
    "OpenES": lambda: OpenES(size=8, mutation=Mutation(kind="gaussian", sigma=0.3, antithetic=True), lr=0.1),
}


def run(strategy, evaluate, center, generations, seed=0):
    state = strategy.init(center, seed=seed)
    history = []
    for _ in range(generations):
        seeds = strategy.ask(state)
        state, metrics = strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        history.append(metrics)
    return state, history


def golden_run(name: str) -> list[dict]:
    """The first 3 generations of one strategy at seed 0 on a 6-d quadratic, float64."""
    value, _ = quadratic(6)
    center = torch.linspace(-1, 1, 6, dtype=torch.float64)
    state = STRATEGIES[name]().init(center, seed=0)
    strategy = STRATEGIES[name]()
    evaluate = FunctionEvaluator(value)
    steps = []
    for _ in range(3):
        seeds = strategy.ask(state)
        fitness = evaluate(state.center, seeds, state.mutation)
        state, _ = strategy.tell(state, seeds, fitness)
        steps.append(
            {
                "seeds": seeds.tolist(),
                "fitness": fitness.tolist(),
                "center": state.center.tolist(),
                "sigma": state.mutation.sigma,
            }
        )
    return steps


@pytest.mark.parametrize("name", STRATEGIES)
def test_golden_trajectory(name):
    """Catches accidental changes of the RNG, the seed derivation or the update order."""
    golden = json.loads((ROOT / "tests" / "golden" / "trajectory.json").read_text())[name]
    for got, want in zip(golden_run(name), golden):
        assert got["seeds"] == want["seeds"]
        torch.testing.assert_close(torch.tensor(got["fitness"]), torch.tensor(want["fitness"]), rtol=1e-9, atol=0)
        torch.testing.assert_close(torch.tensor(got["center"]), torch.tensor(want["center"]), rtol=1e-9, atol=1e-12)
        assert got["sigma"] == pytest.approx(want["sigma"], rel=1e-12)


@pytest.mark.parametrize("name", STRATEGIES)
def test_tell_is_deterministic_and_pure(name):
    strategy = STRATEGIES[name]()
    value, _ = quadratic(5)
    state, _ = run(strategy, FunctionEvaluator(value), torch.ones(5, dtype=torch.float64), 3)
    seeds = strategy.ask(state)
    fitness = FunctionEvaluator(value)(state.center, seeds, state.mutation)
    snapshot = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    snapshot = {k: v.clone() if torch.is_tensor(v) else v for k, v in snapshot.items()}
    a, ma = strategy.tell(state, seeds, fitness)
    b, mb = strategy.tell(state, seeds, fitness)
    assert torch.equal(a.center, b.center) and ma == mb
    for key, before in snapshot.items():
        after = getattr(state, key)
        assert torch.equal(after, before) if torch.is_tensor(before) else after == before, key
    # a fresh strategy object with the same config continues identically (nothing hidden in self)
    c, _ = STRATEGIES[name]().tell(state, seeds, fitness)
    assert torch.equal(a.center, c.center)


@pytest.mark.parametrize("name", STRATEGIES)
def test_non_finite_fitness_never_reaches_the_state(name):
    strategy = STRATEGIES[name]()
    value, _ = quadratic(5)
    state = strategy.init(torch.ones(5, dtype=torch.float64), seed=0)
    for _ in range(10):
        seeds = strategy.ask(state)
        fitness = FunctionEvaluator(value)(state.center, seeds, state.mutation)
        fitness[1::3] = float("nan")
        fitness[2] = float("-inf")  # a -inf loss must not look like the best member
        state, metrics = strategy.tell(state, seeds, fitness)
        assert metrics["nonfinite"] == len(fitness[1::3]) + (0 if 2 % 3 == 1 else 1)
        assert torch.isfinite(state.center).all()
    assert float(value(state.center)) < float(value(torch.ones(5, dtype=torch.float64)))


def test_scale_free_evolution_solves_sphere_20():
    strategy = ScaleFreeEvolution(size=16, mutation=Mutation(kind="cauchy", sigma=1.0))
    start = torch.full((20,), 3.0, dtype=torch.float64)
    state, history = run(strategy, FunctionEvaluator(sphere), start, 300)
    assert history[-1]["fitness"] < 1e-8  # from 180 at the start: solved to numerical precision


@pytest.mark.slow
def test_cauchy_beats_gaussian_on_rastrigin_10():
    """Fast EP's claim (Yao & Liu 1999): on a multimodal landscape, the heavy tail escapes local minima.

    Same (1+16) strategy, same 300 generations (5,100 evaluations) and same starts; mean final fitness
    over 5 seeds. Measured when written: Cauchy ~28, Gaussian ~67.
    """

    def final(kind, seed):
        start = (
            torch.rand(10, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64) * 2 - 1
        ) * 5.12
        strategy = ScaleFreeEvolution(size=16, mutation=Mutation(kind=kind, sigma=1.0))
        state, _ = run(strategy, FunctionEvaluator(rastrigin), start, 300, seed=seed)
        return state.fitness

    cauchy = sum(final("cauchy", s) for s in range(5)) / 5
    gauss = sum(final("gaussian", s) for s in range(5)) / 5
    assert cauchy < 0.7 * gauss, (cauchy, gauss)


def test_comma_selection_recombines_the_mu_best():
    strategy = ScaleFreeEvolution(
        size=10, mu=3, selection="comma", adapt_sigma=False, mutation=Mutation(kind="gaussian", sigma=0.5)
    )
    state = strategy.init(torch.zeros(4, dtype=torch.float64), seed=3)
    seeds = strategy.ask(state)
    fitness = torch.arange(11, dtype=torch.float64).flip(0)  # the last members are the best
    new, _ = strategy.tell(state, seeds, fitness)
    rows = noise.sample(state.mutation, seeds[-3:], 4, dtype=torch.float64)
    torch.testing.assert_close(new.center, rows.mean(0))


def test_one_fifth_rule_moves_sigma_both_ways():
    strategy = ScaleFreeEvolution(size=10, mutation=Mutation(sigma=1.0))
    state = strategy.init(torch.zeros(3), seed=0)
    seeds = strategy.ask(state)
    all_better = torch.cat([torch.tensor([1.0]), torch.zeros(10)])
    none_better = torch.cat([torch.tensor([0.0]), torch.ones(10)])
    assert strategy.tell(state, seeds, all_better)[0].mutation.sigma > 1.0
    assert strategy.tell(state, seeds, none_better)[0].mutation.sigma < 1.0
    assert torch.equal(strategy.tell(state, seeds, none_better)[0].center, state.center), "elitist"


@pytest.mark.parametrize(
    "mutation",
    [
        Mutation(kind="gaussian", sigma=0.01, antithetic=True),
        Mutation(kind="loguniform", sigma=0.1, antithetic=True),
        Mutation(kind="cauchy", sigma=0.01, clip=3.0, antithetic=True),
    ],
)
def test_rolling_estimate_points_along_the_negative_gradient(mutation):
    """With the center held still (lr=0), the rolling estimate must align with -grad."""
    value, grad = quadratic(30)
    center = torch.linspace(-1, 1, 30, dtype=torch.float64)
    strategy = RollingImprovement(size=32, mutation=mutation, lr=0.0, beta=0.9)
    state, _ = run(strategy, FunctionEvaluator(value), center, 40)
    cosine = torch.nn.functional.cosine_similarity(state.estimate, -grad(center), dim=0)
    assert float(cosine) >= 0.5, float(cosine)


def test_rolling_improvement_descends_a_quadratic():
    value, _ = quadratic(30)
    center = torch.linspace(-1, 1, 30, dtype=torch.float64)
    strategy = RollingImprovement(
        size=16, mutation=Mutation(kind="loguniform", sigma=0.05, antithetic=True), lr=0.05, lr_decay=0.99
    )
    state, _ = run(strategy, FunctionEvaluator(value), center, 300)
    assert float(value(state.center)) < 0.01 * float(value(center))


def test_rolling_elitist_jumps_to_the_best_improving_mutation():
    strategy = RollingImprovement(size=4, mutation=Mutation(sigma=0.1), elitist=True)
    state = strategy.init(torch.zeros(3, dtype=torch.float64), seed=0)
    seeds = strategy.ask(state)
    fitness = torch.tensor([1.0, 0.9, 0.5, 2.0, 0.7], dtype=torch.float64)
    new, _ = strategy.tell(state, seeds, fitness)
    torch.testing.assert_close(new.center, noise.sample(state.mutation, seeds[2:3], 3, dtype=torch.float64)[0])


def test_openes_solves_a_quadratic():
    value, _ = quadratic(20)
    strategy = OpenES(size=32, mutation=Mutation(sigma=0.05, antithetic=True), lr=0.05)
    start = torch.ones(20, dtype=torch.float64)
    state, _ = run(strategy, FunctionEvaluator(value), start, 300)
    assert float(value(state.center)) < 1e-3 * float(value(start))


@pytest.mark.slow
def test_rolling_improvement_learns_digits():
    """The quickstart (RollingImprovement, Cauchy mutations, no backprop) reaches >= 90% test accuracy."""
    pytest.importorskip("sklearn")
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--generations", "600"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    final = float(out.stdout.strip().splitlines()[-1].split(":")[-1])
    assert final >= 0.90, out.stdout


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: ScaleFreeEvolution(size=0), "size"),
        (lambda: ScaleFreeEvolution(selection="best"), "selection"),
        (lambda: ScaleFreeEvolution(size=4, mu=5, selection="comma"), "mu"),
        (lambda: ScaleFreeEvolution(mu=2), "mu"),
        (lambda: ScaleFreeEvolution(success_target=1.0), "success_target"),
        (lambda: ScaleFreeEvolution(damping=0.0), "damping"),
        (lambda: RollingImprovement(beta=1.0), "beta"),
        (lambda: RollingImprovement(lr=-1.0), "lr"),
        (lambda: RollingImprovement(lr_decay=0.0), "lr_decay"),
        (lambda: RollingImprovement(weighting="rank"), "weighting"),
        (lambda: RollingImprovement(size=5, mutation=Mutation(antithetic=True)), "size"),
        (lambda: OpenES(lr=float("inf")), "lr"),
        (lambda: OpenES(optimizer="adam"), "optimizer"),
        (lambda: OpenES(mutation="gaussian"), "mutation"),
    ],
)
def test_bad_strategy_config_names_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_bad_init_and_tell_are_refused():
    strategy = OpenES(size=4)
    with pytest.raises(ValueError, match="center"):
        strategy.init(torch.zeros(2, 2), seed=0)
    with pytest.raises(ValueError, match="seed"):
        strategy.init(torch.zeros(2), seed=1.5)
    state = strategy.init(torch.zeros(2), seed=0)
    with pytest.raises(ValueError, match="4 seeds"):
        strategy.tell(state, strategy.ask(state), torch.zeros(3))
    assert not math.isnan(state.center.sum())
