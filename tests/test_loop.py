"""Tests of evograd.optimize: the ask/evaluate/tell loop in one call."""

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from evograd import (
    FunctionEvaluator,
    Mutation,
    OpenES,
    ScaleFreeEvolution,
    VmapEvaluator,
    flat,
    loggers,
    noise,
    optimize,
)


def sphere(x):
    return (x**2).sum(1)  # (n,)


def test_optimize_is_the_hand_written_loop_bit_for_bit():
    es = OpenES(size=16, mutation=Mutation(sigma=0.1, antithetic=True), lr=0.05)
    center = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64)
    result = optimize(sphere, es, center=center, seed=3, generations=25)
    evaluate, state, history = FunctionEvaluator(sphere), es.init(center, seed=3), []
    for _ in range(25):
        seeds = es.ask(state)
        state, metrics = es.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        history.append(metrics)
    assert torch.equal(result.state.center, state.center) and result.state.generation == 25
    assert [{k: v for k, v in m.items() if k != "fe"} for m in result.history] == history
    assert result.fe == evaluate.fe == 25 * 16 and [m["fe"] for m in result.history] == list(range(16, 401, 16))
    assert result.best == min(m["best"] for m in history) and result.stopped == "generations"


@pytest.mark.parametrize(
    "strategy",
    [
        OpenES(size=20, mutation=Mutation(sigma=0.05, antithetic=True), lr=0.03),
        ScaleFreeEvolution(size=16, mutation=Mutation(sigma=0.1)),
    ],
    ids=["openes", "evolution"],
)
def test_optimize_converges_on_the_sphere(strategy):
    center = torch.full((10,), 2.0, dtype=torch.float64)  # loss 40
    result = optimize(sphere, strategy, center=center, seed=0, generations=200)
    assert float(sphere(result.state.center[None])[0]) < 1e-3, "the center approaches the minimum (from 40)"
    assert result.history[-1]["best"] < result.history[0]["best"] / 100


def test_a_model_is_fitted_and_left_at_the_final_center():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(128, 4, generator=gen)
    truth = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    y = x @ truth.T + 0.7  # (128, 1)
    model = nn.Linear(4, 1)
    evo = ScaleFreeEvolution(size=16, mutation=Mutation(sigma=0.05))
    budget = 128 * evo.population * 400
    result = optimize(model, evo, loss_fn=F.mse_loss, batch=(x, y), fe=budget, seed=1)
    assert result.stopped == "fe" and budget <= result.fe < budget + 128 * evo.population
    assert torch.equal(flat.flatten(model), result.state.center)
    torch.testing.assert_close(model.weight.detach(), truth, atol=0.05, rtol=0)  # the generating weights
    assert abs(float(model.bias.detach()) - 0.7) < 0.05


def test_an_evaluator_objective_keeps_its_counters_and_the_run_reports_its_own_share():
    model = nn.Linear(3, 2).double()
    batch = (torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,)))
    evaluate = VmapEvaluator(model, F.cross_entropy, batch)
    evaluate(flat.flatten(model), noise.member_seeds(0, 0, 4), Mutation())  # spent before the run
    before = flat.flatten(model)
    es = OpenES(size=6, mutation=Mutation(sigma=0.1, antithetic=True))
    result = optimize(evaluate, es, generations=3)
    assert result.fe == 3 * 6 * 10 and evaluate.fe == 4 * 10 + result.fe
    assert torch.equal(flat.flatten(model), before), "a model inside an evaluator is the caller's to update"


def test_callback_target_and_logger(tmp_path):
    es = OpenES(size=10, mutation=Mutation(sigma=0.1, antithetic=True), lr=0.05)
    seen = []
    result = optimize(
        sphere, es, center=torch.ones(4), generations=50, callback=lambda s, m: seen.append(m) or len(seen) == 7
    )
    assert result.stopped == "callback" and result.generations == 7 == len(seen) and seen == list(result.history)
    result = optimize(sphere, es, center=torch.ones(4), generations=10_000, target=0.5)
    assert result.stopped == "target" and result.metrics["best"] <= 0.5 < result.history[-2]["best"]
    with loggers.JSONLinesLogger(tmp_path / "log.jsonl") as log:
        result = optimize(sphere, es, center=torch.ones(4), generations=5, logger=log)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in records] == [0, 1, 2, 3, 4] and [r["fe"] for r in records] == [10, 20, 30, 40, 50]
    assert records[-1]["best"] == pytest.approx(result.metrics["best"])


def test_bad_arguments_are_refused_naming_them():
    es, center = OpenES(size=4, mutation=Mutation(antithetic=True)), torch.ones(3)
    with pytest.raises(ValueError, match="exactly one budget"):
        optimize(sphere, es, center=center)
    with pytest.raises(ValueError, match="exactly one budget"):
        optimize(sphere, es, center=center, generations=2, fe=10)
    with pytest.raises(ValueError, match="generations=0"):
        optimize(sphere, es, center=center, generations=0)
    with pytest.raises(TypeError, match="fe="):
        optimize(sphere, es, center=center, fe=1.5)
    with pytest.raises(ValueError, match="target="):
        optimize(sphere, es, center=center, generations=1, target=float("nan"))
    with pytest.raises(ValueError, match="center is required"):
        optimize(sphere, es, generations=1)
    with pytest.raises(ValueError, match="loss_fn and batch"):
        optimize(nn.Linear(3, 1), es, generations=1)
    with pytest.raises(ValueError, match="model objective only"):
        optimize(sphere, es, center=center, generations=1, loss_fn=F.mse_loss)
    with pytest.raises(TypeError, match="strategy must be"):
        optimize(sphere, "openes", center=center, generations=1)
    with pytest.raises(TypeError, match="objective must be"):
        optimize(3, es, center=center, generations=1)
    with pytest.raises(TypeError, match="callback must be callable"):
        optimize(sphere, es, center=center, generations=1, callback=1)
