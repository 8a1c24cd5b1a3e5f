"""Tests of low-rank mutations: the rows, the GEMM update, LowRankEvaluator, the strategies and checkpoints."""

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from evograd import (
    LowRankEvaluator,
    Mutation,
    OpenES,
    RollingImprovement,
    ScaleFreeEvolution,
    SerialEvaluator,
    VmapEvaluator,
    checkpoint,
    flat,
    lowrank,
    noise,
)
from evograd.protocols import ModelEvaluator

DT = torch.float64


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 4)).to(DT)


class Attention(nn.Module):
    """Causal self-attention written by hand, unpacking ``B, T, C = x.shape`` as such code does."""

    def __init__(self, width, heads):
        super().__init__()
        self.qkv, self.proj, self.heads = nn.Linear(width, 3 * width), nn.Linear(width, width), heads

    def forward(self, x):
        batch, steps, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)
        q, k, v = (t.view(batch, steps, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, h, T, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(width // self.heads)
        causal = torch.ones(steps, steps, dtype=torch.bool).tril()
        weights = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, steps, width))


class TinyTransformer(nn.Module):
    """Embedding, positional matrix, pre-LayerNorm attention and MLP blocks, a head (``tied``: the embedding)."""

    def __init__(self, vocab=7, width=8, steps=5, tied=False):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(0.1 * torch.randn(steps, width))
        self.ln1, self.attention = nn.LayerNorm(width), Attention(width, heads=2)
        self.ln2, self.fc1, self.fc2 = nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.Linear(2 * width, width)
        self.ln3, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, tokens):
        x = self.embed(tokens) + self.position
        x = x + self.attention(self.ln1(x))
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.head(self.ln3(x)).flatten(0, 1)  # (B·T, vocab)


def next_token_loss(logits, targets):
    return F.cross_entropy(logits, targets.reshape(-1))


def transformer_setup(**kw):
    torch.manual_seed(0)
    model = TinyTransformer(**kw).to(DT)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 7, (3, 5), generator=gen)
    return model, next_token_loss, (tokens, torch.randint(0, 7, (3, 5), generator=gen))


def mlp_setup():
    model = mlp()
    gen = torch.Generator().manual_seed(1)
    return (
        model,
        F.cross_entropy,
        (torch.randn(11, 6, generator=gen, dtype=DT), torch.randint(0, 4, (11,), generator=gen)),
    )


def population(n=8):
    """The parent first, then antithetic pairs: every seed convention in one call."""
    return torch.cat([torch.tensor([noise.PARENT_SEED]), noise.member_seeds(3, 1, n, antithetic=True)])


# ----------------------------------------------------------------------------------------------
# rows


@pytest.mark.parametrize("rank", [1, 3])
def test_matrix_rows_are_sigma_over_sqrt_r_times_a_b_transposed_read_from_the_draws(rank):
    model = mlp()
    layout = flat.layout_of(model)
    mutation = Mutation(sigma=0.2, rank=rank).resolve(model)
    seeds = noise.member_seeds(0, 0, 5)
    rows = noise.sample(mutation, seeds, layout.dim, dtype=DT)
    (_, members), *_ = noise.iter_members(mutation, seeds, layout.dim, chunk_size=5, dtype=DT)
    draws, start = members.draws, 0  # the documented order: per parameter, A (out, r) then B (in, r), or its numel
    for name, shape in zip(layout.names, layout.shapes):
        block = rows[:, layout.slices[name]]
        if len(shape) == 2:
            out, fan_in = shape
            a = draws[:, start : start + out * rank].reshape(5, out, rank)
            b = draws[:, start + out * rank : start + rank * (out + fan_in)].reshape(5, fan_in, rank)
            expected = 0.2 / math.sqrt(rank) * torch.einsum("cor,cir->coi", a, b)
            torch.testing.assert_close(block.view(5, out, fan_in), expected, rtol=1e-12, atol=1e-14)
            assert [int(torch.linalg.matrix_rank(w)) for w in block.view(5, out, fan_in)] == [rank] * 5
            start += rank * (out + fan_in)
        else:
            torch.testing.assert_close(block, 0.2 * draws[:, start : start + shape[0]], rtol=0, atol=0)
            start += shape[0]
    assert start == members.factors.length == draws.shape[1]


@pytest.mark.parametrize("kind", lowrank.KINDS)
def test_mirrors_negate_exactly_the_parent_is_zero_and_rows_depend_on_their_seed_alone(kind):
    model = mlp()
    dim = flat.layout_of(model).dim
    mutation = Mutation(kind=kind, sigma=0.3, rank=2, antithetic=True).resolve(model)
    seeds = population(8)
    rows = noise.sample(mutation, seeds, dim)
    assert torch.equal(rows[0], torch.zeros(dim))
    assert torch.equal(rows[1:5] + rows[5:], torch.zeros(4, dim)) and rows[1:5].abs().sum() > 0
    torch.testing.assert_close(rows[[6, 2]], noise.sample(mutation, seeds[[6, 2]], dim), rtol=1e-6, atol=1e-7)
    chunked = torch.cat([r for _, r in noise.iter_rows(mutation, seeds, dim, chunk_size=3)])
    assert torch.equal(chunked, rows)
    members = torch.cat([m.rows() for _, m in noise.iter_members(mutation, seeds, dim, chunk_size=3)])
    assert torch.equal(members, rows)


def _product_normal_cdf(t):
    """P(XY <= t) for independent standard normals X, Y, by quadrature: 1/2 + 2∫_0^∞ φ(x)(Φ(t/x) - 1/2) dx."""
    from scipy import integrate, stats

    tail, _ = integrate.quad(lambda x: stats.norm.pdf(x) * (stats.norm.cdf(abs(t) / x) - 0.5), 0, math.inf)
    return 0.5 + math.copysign(2 * tail, t)


def _ecdf_matches(values, cdf, points):
    """Empirical CDF within 5 standard errors of ``cdf`` at each point."""
    x = values.double().numpy()
    for point in points:
        expected, empirical = cdf(point), float((x <= point).mean())
        assert abs(empirical - expected) < 5 * math.sqrt(max(expected * (1 - expected), 1e-4) / x.size), point


def test_rank_one_entries_are_sigma_times_a_product_of_normals_and_biases_stay_gaussian():
    stats = pytest.importorskip("scipy.stats")
    model = nn.Linear(3, 4).to(DT)
    layout = flat.layout_of(model)
    rows = noise.sample(Mutation(sigma=0.5, rank=1).resolve(model), noise.member_seeds(9, 0, 40_000), layout.dim)
    entry = rows[:, layout.slices["weight"].start] / 0.5  # one entry per member: i.i.d. across members
    _ecdf_matches(entry, _product_normal_cdf, [-3.0, -1.0, -0.3, -0.05, 0.05, 0.3, 1.0, 3.0])
    _ecdf_matches(rows[:, layout.slices["bias"].start] / 0.5, stats.norm.cdf, [-2.0, -0.5, 0.0, 0.5, 2.0])


def test_higher_rank_entries_keep_the_per_coordinate_variance():
    model = nn.Linear(8, 8, bias=False).to(DT)
    rows = noise.sample(Mutation(sigma=0.1, rank=4).resolve(model), noise.member_seeds(2, 0, 20_000), 64, dtype=DT)
    entry = rows[:, 0] / 0.1  # (Σ_k A_0k B_0k)/2: variance 1, fourth moment 3 + 6/r = 4.5
    standard_error = math.sqrt((4.5 - 1.0) / len(entry))
    assert abs(float(entry.var()) - 1.0) < 5 * standard_error


def test_loguniform_rank_rows_have_log_uniform_norms():
    stats = pytest.importorskip("scipy.stats")
    model = mlp()
    mutation = Mutation(kind="loguniform", sigma=2.0, log_range=4.0, rank=2).resolve(model)
    rows = noise.sample(mutation, noise.member_seeds(4, 0, 4_000), flat.layout_of(model).dim, dtype=DT)
    u = -torch.log(rows.norm(dim=1) / 2.0) / 4.0  # U(0, 1) if the magnitude law is kept
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3


# ----------------------------------------------------------------------------------------------
# the update as GEMMs


@pytest.mark.parametrize("kind", lowrank.KINDS)
@pytest.mark.parametrize("norm_power", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("chunk_size", [1, 3, None])
def test_weighted_sum_as_gemms_equals_the_materialized_sum(kind, norm_power, chunk_size):
    model, _, _ = transformer_setup()
    layout = flat.layout_of(model)
    scale = {"embed": 0.5, "attention": 2.0, "fc2.bias": 0.0}
    mutation = Mutation(kind=kind, sigma=0.3, rank=2, antithetic=True, scale=scale).resolve(model)
    seeds = population(10)
    weights = torch.linspace(-1, 1, len(seeds), dtype=DT)
    weights[[0, 4]] = 0.0
    total, norms = noise.weighted_sum(
        mutation, seeds, weights, layout.dim, norm_power=norm_power, chunk_size=chunk_size, dtype=DT
    )
    rows = noise.sample(mutation, seeds, layout.dim, dtype=DT)  # (n, dim), materialized
    active = weights != 0
    expected = (weights[active, None] * rows[active] / rows[active].norm(dim=1, keepdim=True) ** norm_power).sum(0)
    torch.testing.assert_close(total, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(norms[active], rows[active].norm(dim=1), rtol=1e-10, atol=1e-12)
    assert torch.equal(norms[~active], torch.zeros(2, dtype=DT))
    assert torch.equal(total[layout.slices["fc2.bias"]], torch.zeros(8, dtype=DT))


def test_a_sum_of_rank_one_members_has_full_rank():
    model = nn.Linear(6, 5, bias=False).to(DT)
    mutation = Mutation(sigma=1.0, rank=1).resolve(model)
    total, _ = noise.weighted_sum(mutation, noise.member_seeds(0, 0, 12), torch.ones(12, dtype=DT), 30, dtype=DT)
    assert int(torch.linalg.matrix_rank(total.view(5, 6))) == 5


# ----------------------------------------------------------------------------------------------
# bad settings


@pytest.mark.parametrize(
    "settings, error, field",
    [
        ({"rank": 0}, ValueError, "rank"),
        ({"rank": -2}, ValueError, "rank"),
        ({"rank": 1.5}, TypeError, "rank"),
        ({"rank": True}, TypeError, "rank"),
        ({"rank": 1, "kind": "cauchy"}, ValueError, "kind"),
        ({"rank": 1, "kind": "levy"}, ValueError, "kind"),
        ({"rank": 1, "sparsity": 0.5}, ValueError, "sparsity"),
        ({"rank": 1, "clip": 3.0}, ValueError, "clip"),
        ({"rank": 1, "layout": "0.weight"}, TypeError, "layout"),
    ],
)
def test_bad_rank_settings_name_the_field(settings, error, field):
    with pytest.raises(error, match=field):
        Mutation(**settings)


def test_a_rank_beyond_a_matrix_or_a_scale_varying_inside_one_is_refused_naming_the_parameter():
    model = mlp()
    with pytest.raises(ValueError, match=r"rank=5 is larger than the smaller side of parameter '2.weight' \(4 x 9\)"):
        Mutation(rank=5).resolve(model)
    layout = flat.layout_of(model)
    varying = torch.ones(layout.dim)
    varying[layout.slices["2.weight"].start] = 2.0
    with pytest.raises(ValueError, match="scale varies inside the matrix '2.weight'"):
        Mutation(rank=1, scale=varying).resolve(model)
    with pytest.raises(ValueError, match="scale varies inside the matrix '2.weight'"):  # unresolved, layout passed
        noise.sample(Mutation(rank=1, scale=varying), noise.member_seeds(0, 0, 2), layout.dim, layout=layout)
    per_parameter = torch.ones(layout.dim)
    per_parameter[layout.slices["2.weight"]] = 3.0  # constant over the matrix: allowed
    assert Mutation(rank=1, scale=per_parameter).resolve(model).layout == layout


def test_a_missing_layout_is_refused_clearly():
    with pytest.raises(ValueError, match=r"mutation.rank=2 needs the model's layout.*resolve"):
        noise.sample(Mutation(rank=2), noise.member_seeds(0, 0, 2), 30)
    with pytest.raises(ValueError, match=r"mutation.rank=1 needs the model's layout.*resolve"):
        OpenES(size=4, mutation=Mutation(rank=1, antithetic=True))
    mutation = Mutation(rank=1, antithetic=True).resolve(mlp())
    with pytest.raises(ValueError, match="mutation.layout has 103 parameters but center has 5"):
        OpenES(size=4, mutation=mutation).init(torch.zeros(5), seed=0)
    with pytest.raises(ValueError, match="dim=5"):
        noise.sample(mutation, noise.member_seeds(0, 0, 2), 5)


def test_a_slice_of_low_rank_rows_is_refused_and_whole_rows_still_sum():
    """A sharded update sums slices of full-rank rows; a low-rank sum is one GEMM of whole factors instead."""
    model = mlp()
    mutation = Mutation(rank=1, antithetic=True).resolve(model)
    dim, seeds = flat.layout_of(model).dim, noise.member_seeds(0, 0, 4, antithetic=True)
    weights = torch.tensor([1.0, -1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match=r"columns=slice\(0, 10, None\) with mutation.rank=1.*full-rank"):
        noise.weighted_sum(mutation, seeds, weights, dim, columns=slice(0, 10))
    with pytest.raises(ValueError, match="mutation.rank=1: row_norms is for full-rank rows"):
        noise.row_norms(mutation, seeds, dim)
    whole, _ = noise.weighted_sum(mutation, seeds, weights, dim, columns=slice(0, dim))  # the whole row is no slice
    torch.testing.assert_close(whole, weights @ noise.sample(mutation, seeds, dim))


def test_the_low_rank_evaluator_refuses_full_rank_and_another_models_mutation():
    model, loss, batch = mlp_setup()
    evaluate = LowRankEvaluator(model, loss, batch)
    center, seeds = flat.flatten(model), noise.member_seeds(0, 0, 2)
    with pytest.raises(ValueError, match="mutation.rank=None"):
        evaluate(center, seeds, Mutation())
    other = Mutation(rank=1).resolve(nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 4), nn.Linear(4, 1)))
    with pytest.raises(ValueError, match="another model"):
        evaluate(center, seeds, other)


# ----------------------------------------------------------------------------------------------
# the evaluator


def materialized(model, loss, batch, center, rows):
    """The reference: each candidate loaded into a copy of the module, called as usual."""
    losses = []
    for row in rows:
        clone = copy.deepcopy(model)
        flat.assign(clone, center + row)
        losses.append(loss(clone(batch[0]), batch[1]))
    return torch.stack(losses)


@pytest.mark.parametrize("setup", [mlp_setup, transformer_setup, lambda: transformer_setup(tied=True)])
@pytest.mark.parametrize("kind", lowrank.KINDS)
def test_low_rank_evaluator_equals_a_materialized_forward(setup, kind):
    model, loss, batch = setup()
    center = flat.flatten(model)
    sigma = 0.3 if kind == "gaussian" else 3.0
    mutation = Mutation(kind=kind, sigma=sigma, rank=2, antithetic=True).resolve(model)
    seeds = population(8)
    fitness = LowRankEvaluator(model, loss, batch, chunk_size=3)(center, seeds, mutation)
    rows = noise.sample(mutation, seeds, center.numel(), dtype=DT)
    torch.testing.assert_close(fitness, materialized(model, loss, batch, center, rows), rtol=1e-10, atol=1e-12)
    vmapped = VmapEvaluator(model, loss, batch, chunk_size=4)(center, seeds, mutation)
    torch.testing.assert_close(fitness, vmapped, rtol=1e-10, atol=1e-12)
    assert len(set(fitness[1:].tolist())) == len(seeds) - 1  # the members differ


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # torch's attention kernel has no vmap rule
def test_torch_attention_modules_fall_back_to_materialized_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.TransformerEncoderLayer(6, 2, dim_feedforward=10, dropout=0.0)).to(DT)
    model.eval()
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(3, 5, 4, generator=gen, dtype=DT), torch.randn(3, 5, 6, generator=gen, dtype=DT))
    center = flat.flatten(model)
    mutation = Mutation(sigma=0.2, rank=1, antithetic=True).resolve(model)
    seeds = population(6)
    fitness = LowRankEvaluator(model, F.mse_loss, batch)(center, seeds, mutation)
    rows = noise.sample(mutation, seeds, center.numel(), dtype=DT)
    torch.testing.assert_close(fitness, materialized(model, F.mse_loss, batch, center, rows), rtol=1e-10, atol=1e-12)


def test_linear_weights_are_never_materialized(monkeypatch):
    """Every parameter but a plain nn.Linear's weight is formed per member; no row ever is."""
    model, loss, batch = transformer_setup()
    formed = set()
    perturbation = lowrank.Members.perturbation

    def recording(self, block):
        formed.add(block.name)
        return perturbation(self, block)

    monkeypatch.setattr(lowrank.Members, "perturbation", recording)
    monkeypatch.setattr(lowrank.Members, "rows", lambda *args: pytest.fail("rows were materialized"))
    mutation = Mutation(sigma=0.1, rank=1).resolve(model)
    LowRankEvaluator(model, loss, batch)(flat.flatten(model), noise.member_seeds(0, 0, 4), mutation)
    linear_weights = {f"{layer}.weight" for layer in ("attention.qkv", "attention.proj", "fc1", "fc2", "head")}
    assert formed == set(flat.layout_of(model).names) - linear_weights  # embedding, LayerNorms, biases


def test_the_model_is_untouched_and_left_without_hooks_even_after_an_error():
    model, loss, batch = mlp_setup()
    before = (flat.flatten(model), model(batch[0]))
    mutation = Mutation(sigma=0.1, rank=1).resolve(model)
    LowRankEvaluator(model, loss, batch)(before[0], noise.member_seeds(0, 0, 3), mutation)

    def failing(output, targets):
        raise RuntimeError("loss failed")

    with pytest.raises(RuntimeError, match="loss failed"):
        LowRankEvaluator(model, failing, batch)(before[0], noise.member_seeds(0, 0, 3), mutation)
    assert all(not module._forward_hooks for module in model.modules())
    assert torch.equal(flat.flatten(model), before[0]) and torch.equal(model(batch[0]), before[1])


def test_counters_non_finite_losses_chunking_and_the_protocol():
    model, loss, batch = mlp_setup()
    center = flat.flatten(model)
    mutation = Mutation(sigma=0.1, rank=1).resolve(model)
    seeds = noise.member_seeds(5, 0, 7)
    evaluate = LowRankEvaluator(model, loss, batch, chunk_size=2)
    assert isinstance(evaluate, ModelEvaluator)
    fitness = evaluate(center, seeds, mutation)
    assert (evaluate.evaluations, evaluate.fe) == (7, 7 * 11)
    one_chunk = LowRankEvaluator(model, loss, batch, chunk_size=64)(center, seeds, mutation)
    torch.testing.assert_close(fitness, one_chunk, rtol=1e-12, atol=1e-12)
    params_loss, samples = evaluate.objective()
    assert samples == 11 and torch.allclose(
        params_loss(flat.unflatten(center, evaluate.layout)), loss(model(batch[0]), batch[1])
    )
    huge = center.clone()
    huge[evaluate.layout.slices["2.bias"]] = 1e200  # the squared outputs overflow
    squares = LowRankEvaluator(model, lambda output, targets: (output**2).mean(), batch)
    assert torch.equal(squares(huge, seeds, mutation), torch.full((7,), math.inf, dtype=DT))


def test_default_chunk_size_follows_the_samples_per_member():
    model, loss, _ = mlp_setup()
    assert lowrank_chunk(model, loss, torch.zeros(1, 6)) == 1024
    assert lowrank_chunk(model, loss, torch.zeros(256, 6)) == 64
    assert lowrank_chunk(model, loss, torch.zeros(100_000, 6)) == 16
    assert LowRankEvaluator(model, loss).chunk_size == 64


def lowrank_chunk(model, loss, inputs):
    return LowRankEvaluator(model, loss, (inputs, torch.zeros(len(inputs), dtype=torch.long))).chunk_size


# ----------------------------------------------------------------------------------------------
# strategies and checkpoints


def regression():
    """A 4-16-2 student MLP and a batch labelled by a fixed random teacher of the same shape."""
    torch.manual_seed(0)
    teacher, student = (nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)).to(DT) for _ in range(2))
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1), dtype=DT)
    with torch.no_grad():
        y = teacher(x)
    return student, (x, y)


STRATEGIES = {
    "openes": lambda m: OpenES(size=16, mutation=Mutation(sigma=0.05, rank=2, antithetic=True).resolve(m), lr=0.05),
    "rolling": lambda m: RollingImprovement(
        size=16, mutation=Mutation(kind="loguniform", sigma=0.5, rank=1, antithetic=True).resolve(m), lr=0.05
    ),
    "rolling-elitist": lambda m: RollingImprovement(
        size=8, mutation=Mutation(sigma=0.05, rank=1).resolve(m), elitist=True, weighting="improvement"
    ),
    "plus": lambda m: ScaleFreeEvolution(size=8, mutation=Mutation(sigma=0.05, rank=2).resolve(m)),
    "comma": lambda m: ScaleFreeEvolution(
        size=8, mu=3, selection="comma", mutation=Mutation(sigma=0.05, rank=1).resolve(m)
    ),
}


def run(strategy, evaluate, state, generations):
    for _ in range(generations):
        seeds = strategy.ask(state)
        state, _ = strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
    return state


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_seed_strategy_runs_low_rank_and_matches_the_materialized_run(name):
    model, batch = regression()
    strategy = STRATEGIES[name](model)
    start = strategy.init(flat.flatten(model), seed=0)
    seeds = strategy.ask(start)
    assert seeds.dtype == torch.int64 and seeds.shape == (strategy.population,)  # seeds, never vectors
    low = run(strategy, LowRankEvaluator(model, F.mse_loss, batch), start, 6)
    reference = run(strategy, SerialEvaluator(model, F.mse_loss, batch), start, 6)  # materialized rows
    torch.testing.assert_close(low.center, reference.center, rtol=1e-9, atol=1e-11)
    assert not torch.equal(low.center, start.center)


@pytest.mark.parametrize("name", STRATEGIES)
def test_tell_stays_pure_and_deterministic_with_low_rank_mutations(name):
    model, batch = regression()
    strategy = STRATEGIES[name](model)
    state = run(strategy, LowRankEvaluator(model, F.mse_loss, batch), strategy.init(flat.flatten(model), seed=1), 2)
    seeds = strategy.ask(state)
    fitness = LowRankEvaluator(model, F.mse_loss, batch)(state.center, seeds, state.mutation)
    before = copy.deepcopy((state, seeds, fitness))
    a, metrics_a = strategy.tell(state, seeds, fitness)
    b, metrics_b = STRATEGIES[name](model).tell(state, seeds, fitness)
    assert torch.equal(a.center, b.center) and metrics_a == metrics_b
    assert torch.equal(state.center, before[0].center) and state.mutation == before[0].mutation
    assert torch.equal(seeds, before[1]) and torch.equal(fitness, before[2])


def test_low_rank_openes_learns_a_teacher():
    model, batch = regression()
    strategy = OpenES(size=32, mutation=Mutation(sigma=0.05, rank=1, antithetic=True).resolve(model), lr=0.03)
    evaluate = LowRankEvaluator(model, F.mse_loss, batch)
    state = strategy.init(flat.flatten(model), seed=0)
    with torch.no_grad():
        first = float(F.mse_loss(model(batch[0]), batch[1]))
    state = run(strategy, evaluate, state, 100)
    flat.assign(model, state.center)
    with torch.no_grad():
        assert float(F.mse_loss(model(batch[0]), batch[1])) < 0.05 * first  # full rank reaches ~0.011 too


def test_a_low_rank_state_round_trips_through_a_checkpoint_and_continues_identically(tmp_path):
    model, batch = regression()
    strategy = STRATEGIES["openes"](model)
    evaluate = LowRankEvaluator(model, F.mse_loss, batch)
    state = run(strategy, evaluate, strategy.init(flat.flatten(model), seed=0), 3)
    checkpoint.save(tmp_path / "c.pt", generation=3, state=state, strategy=strategy)
    back = checkpoint.load(tmp_path / "c.pt", strategy=strategy, like=strategy.init(flat.flatten(model), seed=0)).state
    assert back.mutation == state.mutation and back.mutation.layout == flat.layout_of(model)
    assert dataclasses.fields(back) == dataclasses.fields(state) and torch.equal(back.center, state.center)
    assert torch.equal(run(strategy, evaluate, back, 3).center, run(strategy, evaluate, state, 3).center)
