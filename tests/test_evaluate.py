"""Tests of evograd.evaluate: vectorized evaluation equals the serial reference."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from evograd import FunctionEvaluator, Mutation, SerialEvaluator, VmapEvaluator, flat, noise


class Scaled(nn.Module):
    """An MLP with a buffer, so evaluators must carry buffers unperturbed."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        self.register_buffer("gain", torch.tensor(1.5))

    def forward(self, x):
        return self.net(x) * self.gain


def _setup(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    model = Scaled().to(dtype)
    x = torch.randn(40, 6, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (40,), generator=gen)
    return model, (x, y)


@pytest.mark.parametrize("kind", ["gaussian", "cauchy", "loguniform"])
def test_vmap_equals_serial_and_a_plain_loop(kind):
    model, batch = _setup()
    center = flat.flatten(model)
    mutation = Mutation(kind=kind, sigma=0.3, antithetic=True)
    seeds = noise.member_seeds(0, 0, 10, antithetic=True)
    serial = SerialEvaluator(model, F.cross_entropy, batch)(center, seeds, mutation)
    vmapped = VmapEvaluator(model, F.cross_entropy, batch, chunk_size=3)(center, seeds, mutation)
    torch.testing.assert_close(vmapped, serial, rtol=1e-12, atol=1e-12)
    # independent reference: load each candidate into a copy of the module and call it
    rows = noise.sample(mutation, seeds, center.numel(), dtype=torch.float64)
    reference = []
    for row in rows:
        clone = Scaled().to(torch.float64)
        clone.load_state_dict(model.state_dict())
        flat.assign(clone, center + row)
        reference.append(F.cross_entropy(clone(batch[0]), batch[1]))
    torch.testing.assert_close(serial, torch.stack(reference), rtol=1e-12, atol=1e-12)


def test_chunk_size_does_not_change_results_and_model_is_untouched():
    model, batch = _setup()
    before = flat.flatten(model)
    seeds = noise.member_seeds(1, 2, 17)
    a = VmapEvaluator(model, F.cross_entropy, batch, chunk_size=1)(before, seeds, Mutation())
    b = VmapEvaluator(model, F.cross_entropy, batch, chunk_size=64)(before, seeds, Mutation())
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.equal(flat.flatten(model), before)


def test_non_finite_losses_are_reported_as_inf():
    evaluate = FunctionEvaluator(lambda x: torch.where(x[:, 0] > 0, torch.full_like(x[:, 0], float("nan")), x[:, 0]))
    fitness = evaluate(torch.zeros(3), noise.member_seeds(0, 0, 20), Mutation(sigma=1.0))
    rows = noise.sample(Mutation(sigma=1.0), noise.member_seeds(0, 0, 20), 3)
    positive = rows[:, 0] > 0
    assert bool(positive.any()) and bool((~positive).any())
    assert bool(torch.isinf(fitness[positive]).all()) and bool((fitness[positive] > 0).all())
    assert torch.equal(fitness[~positive], rows[~positive, 0])


def test_fitness_callable_sees_the_candidate_and_spares_the_model():
    model = nn.Linear(3, 1)
    before = flat.flatten(model)
    evaluate = SerialEvaluator(model, fitness=lambda m: float(m.weight.sum() + m.bias.sum()))
    seeds = noise.member_seeds(0, 0, 5)
    fitness = evaluate(before, seeds, Mutation(sigma=0.5))
    expected = (before + noise.sample(Mutation(sigma=0.5), seeds, 4)).sum(1)
    assert fitness.dtype == torch.float64  # fitness travels as float64 from evaluator to tell
    torch.testing.assert_close(fitness, expected.double(), rtol=1e-6, atol=1e-6)
    assert torch.equal(flat.flatten(model), before)


def test_cost_counters_and_minibatch_callable():
    model, (x, y) = _setup()
    calls = []

    def minibatch():
        calls.append(1)
        return x[:16], y[:16]

    evaluate = VmapEvaluator(model, F.cross_entropy, minibatch, chunk_size=4)
    evaluate(flat.flatten(model), noise.member_seeds(0, 0, 9), Mutation())
    assert len(calls) == 1, "one minibatch per call, shared by every chunk"
    assert evaluate.evaluations == 9 and evaluate.forward_passes == 9 * 16


def test_bad_input_is_refused():
    model, batch = _setup()
    with pytest.raises(ValueError, match="chunk_size"):
        VmapEvaluator(model, F.cross_entropy, batch, chunk_size=0)
    with pytest.raises(ValueError, match="parameters"):
        VmapEvaluator(model, F.cross_entropy, batch)(
            torch.zeros(5, dtype=torch.float64), noise.member_seeds(0, 0, 2), Mutation()
        )
    with pytest.raises(ValueError, match="no batch"):
        VmapEvaluator(model, F.cross_entropy)(flat.flatten(model), noise.member_seeds(0, 0, 2), Mutation())
    with pytest.raises(ValueError, match="exactly one"):
        SerialEvaluator(model)
    with pytest.raises(ValueError, match="one fitness per candidate"):
        FunctionEvaluator(lambda x: x.sum())(torch.zeros(2), noise.member_seeds(0, 0, 2), Mutation())
