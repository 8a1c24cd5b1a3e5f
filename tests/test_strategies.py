"""Tests of evograd.strategies: the ask/tell strategies, their configs, metrics and updates."""

import copy
import dataclasses
import json
import math
import pathlib
import re
import subprocess
import sys

import pytest
import torch
from problems import quadratic, rastrigin, sphere

from evograd import FunctionEvaluator, Mutation, OpenES, RollingImprovement, ScaleFreeEvolution, noise, shaping
from evograd.strategies import COMMON_METRICS, ESState, RollingState

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


def assert_same(a, b, where="state"):
    """``a`` and ``b`` equal all the way down: tensors bit for bit, containers and dataclasses field by field."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("name", STRATEGIES)
def test_tell_is_deterministic_and_pure(name):
    strategy = STRATEGIES[name]()
    value, _ = quadratic(5)
    state, _ = run(strategy, FunctionEvaluator(value), torch.ones(5, dtype=torch.float64), 3)
    seeds = strategy.ask(state)
    fitness = FunctionEvaluator(value)(state.center, seeds, state.mutation)
    fitness[1] = float("nan")  # the non-finite path too: ranked worst inside tell, never written back
    before = copy.deepcopy((state, seeds, fitness))
    a, ma = strategy.tell(state, seeds, fitness)
    b, mb = strategy.tell(state, seeds, fitness)
    assert_same(a, b)
    assert ma == mb
    # nothing told was modified: the state (optimizer moments included), the seeds, the fitness
    assert_same(state, before[0])
    assert torch.equal(seeds, before[1])
    assert torch.equal(fitness.isnan(), before[2].isnan())
    assert torch.equal(fitness.nan_to_num(), before[2].nan_to_num())
    # a fresh strategy object with the same config continues identically (nothing hidden in self)
    c, mc = STRATEGIES[name]().tell(state, seeds, fitness)
    assert_same(a, c)
    assert ma == mc


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
    assert history[-1]["best"] < 1e-8  # from 180 at the start: solved to numerical precision
    assert state.fitness == history[-1]["best"]  # under "plus" the best told is the new parent


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


# ----------------------------------------------------------------------------------------------
# configs: frozen, validated

CLASSES = (ScaleFreeEvolution, RollingImprovement, OpenES)
BAD_SETTINGS = [
    # every strategy: the shared settings
    *[(cls, {"size": 0}, ValueError, "size") for cls in CLASSES],
    *[(cls, {"size": 2.5}, TypeError, "size") for cls in CLASSES],
    *[(cls, {"size": "8"}, TypeError, "size") for cls in CLASSES],
    *[(cls, {"size": 5, "mutation": Mutation(antithetic=True)}, ValueError, "size") for cls in CLASSES],
    *[(cls, {"mutation": "gaussian"}, TypeError, "mutation") for cls in CLASSES],
    *[(cls, {"mutation": Mutation(scale={"0": 2.0})}, ValueError, "mutation.scale") for cls in CLASSES],
    *[(cls, {"chunk_size": 0}, ValueError, "chunk_size") for cls in CLASSES],
    *[(cls, {"chunk_size": 1.5}, TypeError, "chunk_size") for cls in CLASSES],
    *[(cls, {"update": "sharded"}, TypeError, "update") for cls in CLASSES],
    # ScaleFreeEvolution
    (ScaleFreeEvolution, {"selection": "best"}, ValueError, "selection"),
    (ScaleFreeEvolution, {"size": 4, "mu": 5, "selection": "comma"}, ValueError, "mu"),
    (ScaleFreeEvolution, {"mu": 2}, ValueError, "mu"),
    (ScaleFreeEvolution, {"mu": 1.0}, TypeError, "mu"),
    (ScaleFreeEvolution, {"adapt_sigma": 1}, TypeError, "adapt_sigma"),
    (ScaleFreeEvolution, {"success_target": 1.0}, ValueError, "success_target"),
    (ScaleFreeEvolution, {"success_target": "0.2"}, TypeError, "success_target"),
    (ScaleFreeEvolution, {"damping": 0.0}, ValueError, "damping"),
    (ScaleFreeEvolution, {"damping": None}, TypeError, "damping"),
    (ScaleFreeEvolution, {"sigma_bounds": (1.0, 0.5)}, ValueError, "sigma_bounds"),
    (ScaleFreeEvolution, {"sigma_bounds": (0.0, 1.0)}, ValueError, "sigma_bounds[0]"),
    (ScaleFreeEvolution, {"sigma_bounds": (1e-3, math.inf)}, ValueError, "sigma_bounds[1]"),
    (ScaleFreeEvolution, {"sigma_bounds": 1.0}, TypeError, "sigma_bounds"),
    # RollingImprovement
    (RollingImprovement, {"beta": 1.0}, ValueError, "beta"),
    (RollingImprovement, {"beta": math.nan}, ValueError, "beta"),
    (RollingImprovement, {"lr": -1.0}, ValueError, "lr"),
    (RollingImprovement, {"lr": "0.1"}, TypeError, "lr"),
    (RollingImprovement, {"lr_decay": 0.0}, ValueError, "lr_decay"),
    (RollingImprovement, {"weighting": "rank"}, ValueError, "weighting"),
    (RollingImprovement, {"use_worse": "yes"}, TypeError, "use_worse"),
    (RollingImprovement, {"normalize_step": 0}, TypeError, "normalize_step"),
    (RollingImprovement, {"elitist": None}, TypeError, "elitist"),
    # OpenES
    (OpenES, {"lr": math.inf}, ValueError, "lr"),
    (OpenES, {"lr": None}, TypeError, "lr"),
    (OpenES, {"optimizer": "adam"}, TypeError, "optimizer"),
    (OpenES, {"optimizer": torch.nn.Linear}, TypeError, "optimizer"),
    (OpenES, {"optimizer_kw": [("momentum", 0.9)]}, TypeError, "optimizer_kw"),
    (OpenES, {"optimizer_kw": {"lr": 0.1}}, ValueError, "optimizer_kw"),
    (OpenES, {"optimizer_kw": {"betas": (1.5, 0.9)}}, ValueError, "optimizer_kw"),
    (OpenES, {"optimizer_kw": {"momentum": 0.9}}, TypeError, "optimizer_kw"),  # Adam has no momentum
]


@pytest.mark.parametrize(
    "cls, settings, error, field",
    BAD_SETTINGS,
    ids=[f"{cls.__name__}-{field}-{error.__name__}-{i}" for i, (cls, _, error, field) in enumerate(BAD_SETTINGS)],
)
def test_every_bad_setting_raises_its_type_naming_the_field(cls, settings, error, field):
    with pytest.raises(error, match=re.escape(field)) as caught:
        cls(**settings)
    assert type(caught.value) is error  # not a subclass standing in for it
    assert "\n" not in str(caught.value)  # one line


@pytest.mark.parametrize("cls", CLASSES)
def test_configs_are_frozen_and_replace_validates(cls):
    strategy = cls(size=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        strategy.size = 16
    changed = strategy.replace(size=10, chunk_size=3)
    assert (changed.size, changed.chunk_size, strategy.size, strategy.chunk_size) == (10, 3, 8, None)
    assert changed == cls(size=10, chunk_size=3) and strategy == cls(size=8)
    with pytest.raises(ValueError, match="size=0"):
        strategy.replace(size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        strategy.replace(chunk_size="4")
    with pytest.raises(TypeError, match=r"no setting\(s\) \['sigma'\]"):
        strategy.replace(sigma=0.1)  # sigma belongs to the mutation
    # validated values are stored converted: a numpy integer becomes an int
    assert type(cls(size=torch.tensor(8).numpy()[()]).size) is int


def test_openes_keeps_its_own_copy_of_optimizer_kw():
    kw = {"weight_decay": 1e-4}
    strategy = OpenES(optimizer=torch.optim.SGD, optimizer_kw=kw)
    kw["weight_decay"] = 1.0
    assert strategy.optimizer_kw == {"weight_decay": 1e-4}
    assert OpenES().optimizer_kw == {} and OpenES() == OpenES(optimizer_kw={})


# ----------------------------------------------------------------------------------------------
# metrics: one meaning per key


def told(strategy, fitness, dim=4):
    """The state and metrics of telling ``fitness`` to a fresh state of ``strategy`` (float64 center)."""
    state = strategy.init(torch.linspace(-1, 1, dim, dtype=torch.float64), seed=0)
    return state, *strategy.tell(state, strategy.ask(state), fitness)


@pytest.mark.parametrize("name", STRATEGIES)
def test_metrics_have_one_meaning_across_strategies(name):
    strategy = STRATEGIES[name]()
    n = strategy.population
    fitness = torch.linspace(3.0, 1.0, n, dtype=torch.float64)  # decreasing: the last member is the best
    fitness[2], fitness[3] = math.nan, -math.inf  # non-finite: not the best, not in the mean, counted
    fitness[4] = 0.25  # the best finite value, in the middle
    state, new, metrics = told(strategy, fitness)

    assert tuple(metrics) == strategy.metric_names
    assert metrics.keys() >= set(COMMON_METRICS)
    assert ("parent" in metrics) == strategy.evaluates_parent
    finite = fitness[torch.isfinite(fitness)]
    assert metrics["generation"] == state.generation == 0 and new.generation == 1
    assert metrics["best"] == 0.25 == float(finite.min())
    assert metrics["mean"] == pytest.approx(sum(finite.tolist()) / len(finite), rel=1e-15)
    assert metrics["nonfinite"] == 2
    assert metrics["sigma"] == new.mutation.sigma
    if strategy.evaluates_parent:
        assert metrics["parent"] == 3.0  # the parent's re-score, fitness[0]
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())


@pytest.mark.parametrize("name", STRATEGIES)
def test_metrics_of_an_all_non_finite_generation(name):
    strategy = STRATEGIES[name]()
    fitness = torch.full((strategy.population,), math.nan, dtype=torch.float64)
    _, _, metrics = told(strategy, fitness)
    assert metrics["best"] == metrics["mean"] == math.inf
    assert metrics["nonfinite"] == strategy.population


def test_strategy_specific_metrics():
    parent_then = torch.tensor([1.0, 0.5, 2.0, 0.9, 1.0, 3.0, 0.1, 1.5, 1.2], dtype=torch.float64)  # 3 of 8 better
    _, _, metrics = told(ScaleFreeEvolution(size=8, mutation=Mutation(sigma=0.1)), parent_then)
    assert metrics["success"] == 3 / 8

    rolling = RollingImprovement(size=8, lr=0.2, lr_decay=0.5, mutation=Mutation(sigma=0.1, antithetic=True))
    state, new, metrics = told(rolling, parent_then)
    assert metrics["improving"] == 3 / 8 and metrics["lr"] == 0.2  # lr · decay^0
    _, metrics = rolling.tell(new, rolling.ask(new), parent_then)
    assert metrics["lr"] == 0.2 * 0.5 and metrics["generation"] == 1

    _, new, metrics = told(OpenES(size=8, mutation=Mutation(sigma=0.1, antithetic=True)), parent_then[1:])
    assert metrics["grad_norm"] == float(new.gradient.norm())


# ----------------------------------------------------------------------------------------------
# the updates against their equations, with the rows materialized


@pytest.mark.parametrize("weighting", ["slope", "improvement"])
@pytest.mark.parametrize("use_worse", [False, True])
def test_rolling_direction_is_the_weighted_mean_of_unit_directions(weighting, use_worse):
    """d = Σ w_i ε̂_i / Σ |w_i|, w_i = Δ_i/‖ε_i‖ (slope) or Δ_i; with β=0, lr=1 and no normalization x moves by d."""
    mutation = Mutation(kind="loguniform", sigma=0.5, antithetic=True)
    strategy = RollingImprovement(
        size=8, mutation=mutation, beta=0.0, lr=1.0, normalize_step=False, weighting=weighting, use_worse=use_worse
    )
    fitness = torch.tensor([1.0, 0.5, 2.0, 0.9, 1.0, 3.0, 0.1, 1.5, 1.2], dtype=torch.float64)
    state, new, _ = told(strategy, fitness, dim=6)
    seeds = strategy.ask(state)[1:]
    eps = noise.sample(mutation, seeds, 6, dtype=torch.float64)  # (8, 6)
    delta = fitness[0] - fitness[1:]  # (8,)
    if not use_worse:
        delta = delta.clamp_min(0.0)
    norms = eps.norm(dim=1)  # (8,)
    w = delta / norms if weighting == "slope" else delta  # (8,)
    d = (w[:, None] * eps / norms[:, None]).sum(0) / w.abs().sum()  # (6,)
    torch.testing.assert_close(new.estimate, d, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(new.center - state.center, d, rtol=1e-12, atol=1e-15)
    assert float(new.estimate.norm()) <= 1.0 + 1e-12


def test_rolling_takes_no_step_when_nothing_improves():
    strategy = RollingImprovement(size=4, mutation=Mutation(sigma=0.1), beta=0.0)
    state, new, metrics = told(strategy, torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    assert metrics["improving"] == 0.0
    assert torch.equal(new.estimate, torch.zeros(4, dtype=torch.float64))
    assert torch.equal(new.center, state.center)


def test_openes_gradient_is_the_rank_weighted_sum_of_mutations():
    """g = Σ r_i ε_i / (n σ²) with centered ranks r; plain SGD at lr then moves x by -lr·g."""
    mutation = Mutation(sigma=0.3, antithetic=True)
    strategy = OpenES(size=6, mutation=mutation, lr=0.5, optimizer=torch.optim.SGD)
    fitness = torch.tensor([0.3, 2.0, -1.0, 0.7, 5.0, 0.0], dtype=torch.float64)
    state, new, _ = told(strategy, fitness, dim=5)
    eps = noise.sample(mutation, strategy.ask(state), 5, dtype=torch.float64)  # (6, 5)
    g = (shaping.centered_ranks(fitness)[:, None] * eps).sum(0) / (6 * 0.3**2)  # (5,)
    torch.testing.assert_close(new.gradient, g, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(new.center, state.center - 0.5 * g, rtol=1e-12, atol=1e-15)


def test_gradient_estimates_point_uphill_and_belong_to_the_caller():
    rolling = RollingImprovement(size=8, mutation=Mutation(sigma=0.1, antithetic=True))
    state = rolling.init(torch.ones(3, dtype=torch.float64), seed=0)
    assert torch.equal(rolling.gradient_estimate(state), torch.zeros(3, dtype=torch.float64))
    state, _ = run(rolling, FunctionEvaluator(sphere), torch.ones(3, dtype=torch.float64), 5)
    estimate = rolling.gradient_estimate(state)
    assert torch.equal(estimate, -state.estimate)
    estimate.zero_()  # the caller may write into it: the state keeps its own
    assert state.estimate.abs().sum() > 0

    es = OpenES(size=8, mutation=Mutation(sigma=0.1, antithetic=True))
    state = es.init(torch.ones(3, dtype=torch.float64), seed=0)
    assert es.gradient_estimate(state) is None  # no estimate before the first generation
    state, _ = run(es, FunctionEvaluator(sphere), torch.ones(3, dtype=torch.float64), 5)
    estimate = es.gradient_estimate(state)
    assert torch.equal(estimate, state.gradient)
    assert float(torch.dot(estimate, 2 * state.center)) > 0  # uphill on the sphere
    estimate.zero_()
    assert state.gradient.abs().sum() > 0
    assert not hasattr(ScaleFreeEvolution(), "gradient_estimate")  # it estimates no gradient


# ----------------------------------------------------------------------------------------------
# init and tell refuse bad input


def test_bad_init_and_tell_are_refused():
    strategy = OpenES(size=4)
    with pytest.raises(ValueError, match="center"):
        strategy.init(torch.zeros(2, 2), seed=0)
    with pytest.raises(ValueError, match="center"):
        strategy.init(torch.zeros(2, dtype=torch.int64), seed=0)
    with pytest.raises(ValueError, match="center"):
        strategy.init(torch.tensor([0.0, math.nan]), seed=0)
    with pytest.raises(TypeError, match="center"):
        strategy.init([0.0, 1.0], seed=0)
    with pytest.raises(TypeError, match="seed"):
        strategy.init(torch.zeros(2), seed=1.5)
    with pytest.raises(ValueError, match=r"seed=-1 is out of range; allowed integers in \[0, 9223372036854775807\]"):
        strategy.init(torch.zeros(2), seed=-1)
    assert strategy.init(torch.zeros(2), seed=2**63 - 1).seed == 2**63 - 1
    state = strategy.init(torch.zeros(2), seed=0)
    with pytest.raises(ValueError, match="4 seeds"):
        strategy.tell(state, strategy.ask(state), torch.zeros(3))
    with pytest.raises(ValueError, match="4 seeds"):
        strategy.tell(state, strategy.ask(state)[:3], torch.zeros(4))
    with pytest.raises(TypeError, match="seeds must be int64"):
        strategy.tell(state, strategy.ask(state).double(), torch.zeros(4))
    other = RollingImprovement(size=4, mutation=Mutation(antithetic=True))
    with pytest.raises(TypeError, match="state must be a RollingState, got ESState"):
        other.tell(state, other.ask(other.init(torch.zeros(2), seed=0)), torch.zeros(5))
    assert isinstance(state, ESState) and not isinstance(state, RollingState)
    assert not math.isnan(state.center.sum())
