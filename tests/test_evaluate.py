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


@pytest.mark.parametrize(
    "targets",
    [
        lambda gen: torch.randint(0, 3, (40,), generator=gen),  # class indices: the fused (member, class, sample) path
        lambda gen: torch.where(torch.arange(40) % 3 == 0, -100, torch.randint(0, 3, (40,), generator=gen)),  # ignored
        lambda gen: torch.rand(40, 3, generator=gen, dtype=torch.float64).softmax(1),  # probabilities: under vmap
    ],
    ids=["indices", "ignore_index", "probabilities"],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_cross_entropy_fast_path_equals_the_per_member_loss(targets, dtype):
    model, (x, _) = _setup(dtype)
    y = targets(torch.Generator().manual_seed(5))
    y = y.to(dtype) if y.is_floating_point() else y
    center = flat.flatten(model)
    mutation = Mutation(sigma=0.3, antithetic=True)
    seeds = noise.member_seeds(0, 0, 10, antithetic=True)
    fitness = VmapEvaluator(model, F.cross_entropy, (x, y), chunk_size=4)(center, seeds, mutation)
    rows = noise.sample(mutation, seeds, center.numel(), dtype=dtype)
    reference = []
    for row in rows:
        flat.assign(clone := Scaled().to(dtype), center + row)
        reference.append(F.cross_entropy(clone(x), y))
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert fitness.dtype == torch.float64, "fitness travels as float64 whatever the model's dtype"
    torch.testing.assert_close(fitness, torch.stack(reference).double(), rtol=tolerance, atol=tolerance)
    assert len(set(fitness.tolist())) == len(seeds)


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
    assert evaluate.evaluations == 9 and evaluate.fe == 9 * 16


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


# ----------------------------------------------------------------------------------------------
# one minibatch per antithetic pair


def _pair_setup(batch_size=8):
    from evograd.harness import Minibatches

    model, (x, y) = _setup()
    return model, Minibatches(x, y, batch_size, seed=5)


def test_per_pair_scores_each_member_on_its_pairs_own_batch():
    """A pair's ends share one batch, pairs differ, and each member's loss is that of its batch alone."""
    model, batches = _pair_setup()
    center, mutation = flat.flatten(model), Mutation(sigma=0.3, antithetic=True)
    seeds = noise.member_seeds(1, 0, 12, antithetic=True)
    evaluate = VmapEvaluator(model, F.cross_entropy, batches, chunk_size=5, per_pair=True)
    fitness = evaluate(center, seeds, mutation)
    x, y = batches.for_members(0, seeds)  # (12, 8, 6), (12, 8)
    assert torch.equal(x[:6], x[6:]) and torch.equal(y[:6], y[6:])  # + and - ends alike
    assert len({tuple(row.tolist()) for row in y[:6]}) == 6  # six pairs, six different batches
    for i in range(12):  # independent reference: the serial evaluator on member i's batch only
        want = SerialEvaluator(model, F.cross_entropy, (x[i], y[i]))(center, seeds[i : i + 1], mutation)
        torch.testing.assert_close(fitness[i : i + 1], want, rtol=1e-12, atol=1e-12)
    assert (evaluate.evaluations, evaluate.fe, evaluate.generation) == (12, 12 * 8, 1)
    assert batches.drawn == 0  # the shared stream is untouched


def test_per_pair_batches_follow_the_documented_stream_and_not_the_members_position():
    """Batch of pair p in generation g: indices drawn by a generator seeded with stream_seed(seed, stream, g, p)."""
    model, batches = _pair_setup()
    seeds = noise.member_seeds(2, 3, 8, antithetic=True)
    _, y = batches.for_members(3, seeds)
    for i, key in enumerate(noise.pair_keys(seeds).tolist()):
        gen = torch.Generator().manual_seed(noise.stream_seed(5, "minibatches", 3, key))
        assert torch.equal(y[i], batches.y[torch.randint(0, len(batches.y), (8,), generator=gen)])
    # any subset or order of the members gets the same batches (what MPI ranks rely on)
    order = torch.tensor([5, 0, 7, 2])
    assert torch.equal(batches.for_members(3, seeds[order])[1], y[order])
    # the next generation draws fresh batches
    assert not torch.equal(batches.for_members(4, seeds)[1], y)


def test_per_pair_on_the_whole_set_equals_the_shared_batch_and_split_calls_agree():
    model, batches = _pair_setup(batch_size=100)  # >= the 40 samples: every pair gets the whole set
    center, mutation = flat.flatten(model), Mutation(sigma=0.3, antithetic=True)
    seeds = noise.member_seeds(0, 0, 10, antithetic=True)
    shared = VmapEvaluator(model, F.cross_entropy, (batches.x, batches.y))(center, seeds, mutation)
    torch.testing.assert_close(
        VmapEvaluator(model, F.cross_entropy, batches, per_pair=True)(center, seeds, mutation), shared
    )
    _, small = _pair_setup()
    whole = VmapEvaluator(model, F.cross_entropy, small, chunk_size=3, per_pair=True)(center, seeds, mutation)
    part = VmapEvaluator(model, F.cross_entropy, small, chunk_size=4, per_pair=True)
    torch.testing.assert_close(part(center, seeds[:4], mutation), whole[:4], rtol=1e-12, atol=1e-12)


def test_per_pair_refuses_a_plain_batch_and_objective():
    model, batches = _pair_setup()
    with pytest.raises(TypeError, match="MemberBatches"):
        VmapEvaluator(model, F.cross_entropy, (batches.x, batches.y), per_pair=True)
    with pytest.raises(TypeError, match="per_pair"):
        VmapEvaluator(model, F.cross_entropy, batches, per_pair=1)
    evaluate = VmapEvaluator(model, F.cross_entropy, batches, per_pair=True)
    with pytest.raises(TypeError, match="MemberBatches"):
        evaluate.set_batch((batches.x, batches.y))
    with pytest.raises(ValueError, match="objective"):
        evaluate.objective()


def test_per_pair_serial_equals_vmap():
    model, batches = _pair_setup()
    center, mutation = flat.flatten(model), Mutation(kind="cauchy", sigma=0.1, antithetic=True)
    seeds = noise.member_seeds(3, 0, 10, antithetic=True)
    serial = SerialEvaluator(model, F.cross_entropy, batches, per_pair=True, chunk_size=3)(center, seeds, mutation)
    vmapped = VmapEvaluator(model, F.cross_entropy, batches, per_pair=True, chunk_size=4)(center, seeds, mutation)
    torch.testing.assert_close(vmapped, serial, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="per_pair"):
        SerialEvaluator(model, fitness=lambda m: 0.0, per_pair=True)


class Normed(nn.Module):
    """An MLP with BatchNorm and (optionally) dropout, for train-mode scoring."""

    def __init__(self, p=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(p), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)


def _normed(p=0.0):
    model, (x, y) = Normed(p).to(torch.float64), _setup()[1]
    with torch.no_grad():  # running statistics away from their defaults, so using them would show
        model.net[1].running_mean.uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(3))
        model.net[1].running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(4))
    return model, (x, y)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_members_use_their_own_statistics_and_leave_running_stats_alone(train):
    model, batch = _normed()
    model.train(train)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    center = flat.flatten(model)
    mutation, seeds = Mutation(sigma=0.2), noise.member_seeds(5, 1, 6)
    serial = SerialEvaluator(model, F.cross_entropy, batch)(center, seeds, mutation)
    vmapped = VmapEvaluator(model, F.cross_entropy, batch, chunk_size=4)(center, seeds, mutation)
    serial_fn = SerialEvaluator(model, fitness=lambda m: float(F.cross_entropy(m(batch[0]), batch[1])))
    by_fitness = serial_fn(center, seeds, mutation)
    # independent reference: a fresh copy per member, in the same mode, running its own forward
    reference = []
    for row in noise.sample(mutation, seeds, center.numel(), dtype=torch.float64):
        clone = Normed().to(torch.float64).train(train)
        clone.load_state_dict(state)
        flat.assign(clone, center + row)
        reference.append(F.cross_entropy(clone(batch[0]), batch[1]))
    reference = torch.stack(reference).detach()
    for fitness in (serial, vmapped, by_fitness):
        torch.testing.assert_close(fitness, reference, rtol=1e-10, atol=1e-12)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), f"{key} changed"
    assert model.training is train


def test_dropout_in_train_mode_is_refused_or_switched_off():
    model, batch = _normed(p=0.5)
    center, seeds = flat.flatten(model), noise.member_seeds(0, 0, 4)
    for make in (VmapEvaluator, SerialEvaluator):
        with pytest.raises(ValueError, match=r"dropout.*model\.eval\(\).*dropout='off'"):
            make(model, F.cross_entropy, batch)
    # dropout="off" scores as the model would without dropout (p=0), batch statistics kept
    plain = _normed(p=0.0)[0]
    plain.load_state_dict(model.state_dict())
    expected = VmapEvaluator(plain, F.cross_entropy, batch)(center, seeds, Mutation())
    for make in (VmapEvaluator, SerialEvaluator):
        fitness = make(model, F.cross_entropy, batch, dropout="off")(center, seeds, Mutation())
        torch.testing.assert_close(fitness, expected, rtol=1e-10, atol=1e-12)
        assert model.net[3].training, "the model keeps training with dropout after the call"
    # a model switched to dropout after construction is refused at the call
    model.eval()
    evaluate = VmapEvaluator(model, F.cross_entropy, batch)
    model.train()
    with pytest.raises(ValueError, match="dropout"):
        evaluate(center, seeds, Mutation())
    with pytest.raises(ValueError, match=r"dropout=.on. is not allowed"):
        VmapEvaluator(plain, F.cross_entropy, batch, dropout="on")


def test_empty_batch_is_refused():
    model, (x, y) = _setup()
    for make in (VmapEvaluator, SerialEvaluator):
        evaluate = make(model, F.cross_entropy, (x[:0], y[:0]))
        with pytest.raises(ValueError, match="batch is empty"):
            evaluate(flat.flatten(model), noise.member_seeds(0, 0, 2), Mutation())
        assert evaluate.fe == 0 and evaluate.evaluations == 0


def test_threads_sharing_a_model_get_the_single_threaded_fitness():
    import threading

    model, batch = _setup()
    center = flat.flatten(model)
    mutation = Mutation(sigma=0.5)
    makers = [
        lambda: VmapEvaluator(model, F.cross_entropy, batch, chunk_size=2),
        lambda: SerialEvaluator(model, F.cross_entropy, batch, chunk_size=3),
    ]
    jobs = [(makers[i % 2], noise.member_seeds(i, 0, 8)) for i in range(8)]
    expected = [make()(center, seeds, mutation) for make, seeds in jobs]
    shared = VmapEvaluator(model, F.cross_entropy, batch, chunk_size=2)  # one evaluator, several threads
    expected_shared = [makers[0]()(center, seeds, mutation) for _, seeds in jobs]
    results, errors = [None] * len(jobs), []
    start = threading.Barrier(len(jobs))

    def work(i, make, seeds):
        try:
            start.wait()
            for _ in range(5):
                results[i] = make()(center, seeds, mutation)
                assert torch.equal(shared(center, seeds, mutation), expected_shared[i])
        except Exception as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for got, want in zip(results, expected):
        assert torch.equal(got, want)
    assert shared.evaluations == 8 * 5 * 8 and shared.fe == 8 * 5 * 8 * 40
    assert torch.equal(flat.flatten(model), center)


def test_any_other_random_forward_is_refused_by_the_vmap_evaluator_with_what_to_do():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(6, 3).double()

        def forward(self, x):
            return self.linear(x) + torch.rand_like(x[:, :3])  # global generator: no seed reproduces it

    model, batch = Noisy(), _setup()[1]
    with pytest.raises(ValueError, match=r"draws random numbers in its forward pass.*model\.eval\(\)"):
        VmapEvaluator(model, F.cross_entropy, batch)(flat.flatten(model), noise.member_seeds(0, 0, 2), Mutation())


@pytest.mark.slow  # torch.compile builds C++ kernels: about a minute on a quiet 2-core machine
def test_a_compiled_evaluator_equals_the_eager_one_over_chunk_and_batch_shapes():
    model, (x, y) = _setup(torch.float32)
    center = flat.flatten(model)
    mutation = Mutation(sigma=0.3, antithetic=True)
    seeds = noise.member_seeds(0, 0, 10, antithetic=True)
    eager = VmapEvaluator(model, F.cross_entropy, (x, y), chunk_size=4)
    compiled = VmapEvaluator(model, F.cross_entropy, (x, y), chunk_size=4, compile=True)
    for batch in [(x, y), (x[:16], y[:16])]:  # chunks of 4 and 2 members, two batch sizes
        eager.set_batch(batch)
        compiled.set_batch(batch)
        # float32 arithmetic reordered by the compiler (fitness is returned as float64): float32's tolerance
        got, want = compiled(center, seeds, mutation), eager(center, seeds, mutation)
        torch.testing.assert_close(got, want, rtol=1.3e-6, atol=1e-5)
    assert compiled.evaluations == eager.evaluations == 20


def test_compile_must_be_a_flag():
    model, batch = _setup()
    with pytest.raises(TypeError, match="compile"):
        VmapEvaluator(model, F.cross_entropy, batch, compile="yes")
