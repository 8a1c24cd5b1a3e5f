"""Tests of evograd.harness: the loop's FE accounting and measurement, the minibatch stream, the step."""

import math
import time

import pytest
import torch
from torch.nn import functional as F

from evograd import HybridOptimizer, harness
from evograd import directions as D
from evograd.harness import Budget, Minibatches, Recorder
from evograd.tasks import mlp


def test_budget_schedule_is_even_and_geometric_and_ends_at_the_budget():
    schedule = Budget(fe=1000, points=10).schedule()
    assert schedule == sorted(set(schedule)) and schedule[-1] == 1.0
    assert {round(k / 10, 9) for k in range(1, 11)} <= set(schedule)
    assert schedule[0] == pytest.approx(1e-3) and len(schedule) == 20  # 1e-3 ** (1 - k/10) never hits k/10


@pytest.mark.parametrize(
    "kw, error, message",
    [
        ({}, ValueError, "exactly one"),
        ({"fe": 10, "seconds": 1.0}, ValueError, "exactly one"),
        ({"fe": 0}, ValueError, "budget fe=0"),
        ({"fe": 1.5}, TypeError, "budget fe=1.5"),
        ({"seconds": float("nan")}, ValueError, "budget seconds=nan"),
        ({"fe": 10, "points": 0}, ValueError, "points=0"),
    ],
)
def test_budget_validation(kw, error, message):
    with pytest.raises(error, match=message):
        Budget(**kw)


def test_train_charges_what_steps_spend_and_measures_at_the_schedule():
    spent = []

    def step():
        spent.append(7)
        return 7

    budget = Budget(fe=700, points=4)
    run = harness.train(step, Recorder(lambda: float(sum(spent)), budget))
    assert run.fe == sum(spent) == 700 and not run.stopped
    fes = [fe for fe, _, _ in run.curve]
    assert fes[0] == 0 and fes[-1] == 700 and fes == sorted(fes)
    # the metric is the FE spent: each measurement reads the state after exactly the FE recorded with it
    assert all(value == fe for fe, _, value in run.curve)
    # one measurement at the first step at or past each point of the schedule
    expected = sorted({next(k * 7 for k in range(1, 101) if k * 7 >= p * 700) for p in budget.schedule()})
    assert fes[1:] == expected


def test_measuring_is_not_timed():
    """A metric that takes 20 ms per call, steps that take none: the run's seconds exclude the metric."""

    def slow_metric():
        time.sleep(0.02)
        return 0.0

    run = harness.train(lambda: 1, Recorder(slow_metric, Budget(fe=100, points=10)))
    assert len(run.curve) >= 15  # >= 0.3 s spent measuring
    assert run.seconds < 0.1
    # each point's time is the training time before it was measured, not counting that measurement either
    times = [seconds for _, seconds, _ in run.curve]
    assert times == sorted(times) and times[-1] <= run.seconds


def test_stop_measures_every_step_and_ends_at_the_first_success():
    state = {"fe": 0}

    def step():
        state["fe"] += 3
        return 3

    run = harness.train(step, Recorder(lambda: state["fe"], Budget(fe=1000), stop=lambda value: value >= 30))
    assert run.stopped and run.fe == 30 and run.final == 30
    assert [fe for fe, _, _ in run.curve] == list(range(0, 33, 3))


def test_seconds_budget_stops_after_the_time():
    run = harness.train(lambda: time.sleep(0.01) or 1, Recorder(lambda: 0.0, Budget(seconds=0.2, points=2)))
    assert 0.2 <= run.seconds < 1.0 and 10 <= run.fe <= 21


def test_progress_reports_fraction_and_metric():
    seen = []
    harness.train(
        lambda: 50, Recorder(lambda: 0.5, Budget(fe=100, points=1), progress=lambda f, s: seen.append((f, s)))
    )
    assert seen[0] == (0.0, "metric 0.5") and seen[-1] == (1.0, "metric 0.5")


# --- minibatches


def test_minibatch_k_is_a_function_of_seed_and_k():
    x, y = torch.arange(50.0).unsqueeze(1), torch.arange(50)  # (50, 1), (50,)
    a, b = Minibatches(x, y, 8, seed=3), Minibatches(x, y, 8, seed=3)
    first = [a()[1] for _ in range(5)]
    assert all(torch.equal(t, b()[1]) for t in first) and a.drawn == 5
    assert torch.equal(a.at(2)[1], first[2])
    assert torch.equal(a()[0].squeeze(1).long(), a.at(5)[1])  # inputs and targets stay paired
    assert not torch.equal(Minibatches(x, y, 8, seed=4).at(0)[1], first[0])
    assert not torch.equal(Minibatches(x, y, 8, seed=3, stream="other").at(0)[1], first[0])


def test_minibatches_sample_uniformly_with_replacement():
    x, y = torch.zeros(20, 1), torch.arange(20)
    batches = Minibatches(x, y, 8, seed=0)
    counts = torch.bincount(torch.cat([batches()[1] for _ in range(2000)]), minlength=20).double()  # (20,)
    n, p = 16_000, 0.05
    assert (counts - n * p).abs().max() < 5 * math.sqrt(n * p * (1 - p))  # each index within 5 sigma


def test_a_batch_at_least_the_data_set_is_the_whole_set():
    x, y = torch.randn(6, 2), torch.arange(6)
    got = Minibatches(x, y, 6, seed=0)()
    assert got[0] is x and got[1] is y


def test_minibatches_validate():
    with pytest.raises(ValueError, match="batch_size=0"):
        Minibatches(torch.zeros(3, 1), torch.zeros(3), 0, seed=0)
    with pytest.raises(ValueError, match="same number"):
        Minibatches(torch.zeros(3, 1), torch.zeros(2), 2, seed=0)
    with pytest.raises(TypeError, match="seed=0.5"):
        Minibatches(torch.zeros(3, 1), torch.zeros(3), 2, seed=0.5)


# --- steps


def _data(n=64):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def test_optimizer_step_equals_a_hand_written_loop_and_charges_3_fe_per_sample():
    x, y = _data()
    models = [mlp((6, 5, 3), seed=0, dtype=torch.float64) for _ in range(2)]
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in models]
    step = harness.optimizer_step(optimizers[0], models[0], F.cross_entropy, Minibatches(x, y, 16, seed=1))
    batches = Minibatches(x, y, 16, seed=1)
    for _ in range(20):
        assert step() == 3 * 16
        xb, yb = batches()
        optimizers[1].zero_grad()
        F.cross_entropy(models[1](xb), yb).backward()
        optimizers[1].step()
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_optimizer_step_of_a_hybrid_charges_its_own_count():
    x, y = _data()
    model = mlp((6, 5, 3), seed=0, dtype=torch.float64)
    optimizer = HybridOptimizer(model.parameters(), D.backprop(), lr=0.1)
    step = harness.optimizer_step(optimizer, model, F.cross_entropy, Minibatches(x, y, 16, seed=1))
    spent = [step() for _ in range(3)]
    assert spent == [3 * 16] * 3 and optimizer.fe == sum(spent)
    with pytest.raises(ValueError, match="gradient=False needs a HybridOptimizer"):
        harness.optimizer_step(
            torch.optim.SGD(model.parameters(), lr=0.1), model, F.cross_entropy, lambda: (x, y), gradient=False
        )


# --- reports and settings


def test_accuracy_against_a_count():
    x, y = _data(40)
    model = mlp((6, 5, 3), seed=2, dtype=torch.float64)
    with torch.no_grad():
        hits = sum(int(model(x[i : i + 1]).argmax()) == int(y[i]) for i in range(40))
    assert harness.accuracy(model, x, y) == hits / 40


def test_format_table_aligns_numbers_right_and_text_left():
    table = harness.format_table(
        [
            {"method": "sgd", "final": "0.97 ± 0.01", "note": "fine", "n": 3},
            {"method": "rolling", "final": "—", "note": "x", "n": 10},
        ]
    ).splitlines()
    assert table[0] == "method         final  note   n"
    assert table[2] == "sgd      0.97 ± 0.01  fine   3"
    assert table[3] == "rolling            —  x     10"


def test_torch_threads_validates():
    threads = torch.get_num_threads()
    try:
        harness.torch_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads=0"):
            harness.torch_threads(0)
    finally:
        harness.torch_threads(threads)  # the suite's settings (tests/conftest.py)
