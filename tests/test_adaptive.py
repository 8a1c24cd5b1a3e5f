"""Tests of the adaptive strategies (PGPE, SNES, SepCMAES), their per-coordinate sigma, ClipUp and the
optional sigma adaptation of OpenES: updates against their equations with the rows materialized,
the seed contract, and convergence on sphere, ellipsoid and Rastrigin against published behaviour."""

import math

import pytest
import torch
from problems import rastrigin, sphere

from evograd import (
    PGPE,
    SNES,
    ClipUp,
    FunctionEvaluator,
    HybridOptimizer,
    Mutation,
    OpenES,
    RollingImprovement,
    SepCMAES,
    VmapEvaluator,
    directions,
    noise,
    shaping,
)
from evograd.strategies import diagonal
from evograd.strategies.sepcma import SepCMAParameters

ADAPTIVE = {
    "PGPE": lambda: PGPE(size=10, mutation=Mutation(sigma=0.3, antithetic=True), lr=0.1),
    "SNES": lambda: SNES(size=10, mutation=Mutation(sigma=0.3)),
    "SepCMAES": lambda: SepCMAES(size=10, mutation=Mutation(sigma=0.3)),
    "OpenES-pgpe": lambda: OpenES(size=10, mutation=Mutation(sigma=0.3, antithetic=True), sigma_adapt="pgpe"),
    "Rolling-pgpe": lambda: RollingImprovement(
        size=10, mutation=Mutation(sigma=0.3, antithetic=True), lr=0.1, sigma_adapt="pgpe"
    ),
}


def ellipsoid(x: torch.Tensor) -> torch.Tensor:
    """sum 10^(6 (i-1)/(n-1)) x_i^2: the separable ellipsoid of condition 1e6 (pycma's ``elli``)."""
    n = x.shape[-1]
    weights = 1e6 ** (torch.arange(n, dtype=x.dtype) / (n - 1))
    return (weights * x**2).sum(-1)


def run(strategy, function, center, generations, *, seed=0, target=None):
    """Run ``generations`` (or until ``best < target``); the final state and every generation's metrics."""
    evaluate = FunctionEvaluator(function)
    state = strategy.init(center, seed=seed)
    history = []
    for _ in range(generations):
        seeds = strategy.ask(state)
        state, metrics = strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        history.append(metrics)
        if target is not None and metrics["best"] < target:
            break
    return state, history


def told(strategy, fitness, center):
    """The first state, the state after telling ``fitness``, the metrics, and the members' (n, dim) rows."""
    state = strategy.init(center, seed=0)
    seeds = strategy.ask(state)
    new, metrics = strategy.tell(state, seeds, fitness)
    rows = noise.sample(state.mutation, seeds, len(center), dtype=center.dtype)  # (n, dim) ε_k as evaluated
    return state, new, metrics, rows


# ----------------------------------------------------------------------------------------------
# the per-coordinate sigma: where it lives and what the evaluators see


@pytest.mark.parametrize("name", ADAPTIVE)
def test_members_are_center_plus_per_coordinate_sigma_times_unit_rows(name):
    """What every evaluator scores, ``noise.sample(state.mutation, seeds)``, is ``σ ⊙ z(seed)`` with σ the state's."""
    strategy = ADAPTIVE[name]()
    state, _ = run(strategy, sphere, torch.linspace(-1, 1, 7, dtype=torch.float64), 6)
    sigma = diagonal.per_coordinate(state.mutation, state.center)  # (7,)
    assert not torch.allclose(sigma, torch.full_like(sigma, sigma[0])), "sigma has adapted per coordinate"
    seeds = strategy.ask(state)
    unit = noise.sample(Mutation(sigma=1.0, antithetic=True), seeds, 7, dtype=torch.float64)  # (n, 7) z
    torch.testing.assert_close(noise.sample(state.mutation, seeds, 7, dtype=torch.float64), sigma * unit)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_ask_hands_out_seeds_only(name):
    """Seeds from (seed, generation, member) alone: the same for any center or sigma of that generation."""
    strategy = ADAPTIVE[name]()
    a, _ = run(strategy, sphere, torch.ones(5, dtype=torch.float64), 3)
    b, _ = run(strategy, lambda x: (x - 3).abs().sum(-1), torch.zeros(5, dtype=torch.float64), 3)
    seeds = strategy.ask(a)
    assert seeds.dtype == torch.int64 and seeds.shape == (strategy.population,)
    assert torch.equal(seeds, strategy.ask(b))
    members = noise.member_seeds(0, 3, strategy.size, antithetic=a.mutation.antithetic)
    assert torch.equal(seeds[-strategy.size :], members)  # after the parent's seed, where it is re-scored


@pytest.mark.parametrize("name", ADAPTIVE)
def test_the_evaluators_score_the_adapted_members_alike(name):
    """VmapEvaluator on a model and FunctionEvaluator on its flat vector agree on the adapted mutation."""
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    x, y = (
        torch.randn(16, 3, generator=gen, dtype=torch.float64),
        torch.randn(16, 2, generator=gen, dtype=torch.float64),
    )
    center = torch.randn(8, generator=gen, dtype=torch.float64)  # weight (2, 3) then bias (2,), as flat.flatten

    def loss(vectors):  # (n, 8) -> (n,)
        weight, bias = vectors[:, :6].reshape(-1, 2, 3), vectors[:, 6:]
        return ((torch.einsum("nij,bj->nbi", weight, x) + bias[:, None] - y) ** 2).mean((1, 2))

    strategy = ADAPTIVE[name]()
    state, _ = run(strategy, loss, center, 4)
    seeds = strategy.ask(state)
    vmap = VmapEvaluator(model, torch.nn.functional.mse_loss, (x, y))(state.center, seeds, state.mutation)
    torch.testing.assert_close(vmap, FunctionEvaluator(loss)(state.center, seeds, state.mutation))


def test_second_moments_match_the_rows():
    """``E[z_j²]`` of unit rows, closed form or fixed sample, against 2,048 rows of 512 coordinates."""
    seeds = noise.member_seeds(7, 0, 2048)
    cases = [
        Mutation(kind="gaussian"),
        Mutation(kind="gaussian", clip=1.0),
        Mutation(kind="cauchy", clip=3.0),
        Mutation(kind="levy", alpha=1.5, clip=3.0),
        Mutation(kind="levy", alpha=2.0),
        Mutation(kind="loguniform", log_range=3.0),
        Mutation(kind="gaussian", sparsity=0.5),
    ]
    for mutation in cases:
        rows = noise.sample(mutation.replace(sigma=1.0), seeds, 512, dtype=torch.float64)  # (2048, 512)
        empirical = float(rows.square().mean())
        assert diagonal.second_moment(mutation, 512) == pytest.approx(empirical, rel=0.03), mutation


def test_masked_coordinates_stay_frozen():
    """A zero factor (the hybrid's masks) is never perturbed and keeps sigma 0 under every update."""
    scale = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    for make in (PGPE, SNES, SepCMAES):
        strategy = make(size=10, mutation=Mutation(sigma=0.3, antithetic=True, scale=scale))
        start = torch.ones(5, dtype=torch.float64)
        state, _ = run(strategy, sphere, start, 20)
        assert torch.equal(state.mutation.scale[1::2], torch.zeros(2, dtype=torch.float64)), make.__name__
        assert torch.equal(state.center[1::2], start[1::2]), make.__name__
        assert float(sphere(state.center[::2])) < 3.0, make.__name__


# ----------------------------------------------------------------------------------------------
# the updates against their equations, rows materialized


def test_pgpe_step_is_sehnkes_symmetric_gradient_with_a_bounded_sigma_step():
    """∇_μ = (1/n) Σ (u⁺-u⁻)/2 ε_i; σ ← clip(σ + η_σ (1/n) Σ (u⁺+u⁻)/2 (ε²-σ²)/σ, σ(1 ± 0.2)); SGD: x + lr ∇_μ."""
    scale = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    strategy = PGPE(
        size=8,
        mutation=Mutation(sigma=0.3, antithetic=True, scale=scale),
        lr=0.5,
        optimizer=torch.optim.SGD,
        sigma_lr=0.3,
    )
    fitness = torch.tensor([0.3, 2.0, -1.0, 0.7, 5.0, 0.0, 0.2, 1.0], dtype=torch.float64)
    center = torch.linspace(-1, 1, 5, dtype=torch.float64)
    state, new, metrics, eps = told(strategy, fitness, center)
    sigma = 0.3 * scale  # (5,)
    u = -shaping.centered_ranks(fitness)  # (8,)
    plus, minus = u[:4], u[4:]
    torch.testing.assert_close(eps[4:], -eps[:4])  # symmetric pairs
    grad_mu = ((plus - minus) / 2) @ eps[:4] / 4  # (5,)
    grad_sigma = ((plus + minus) / 2) @ ((eps[:4] ** 2 - sigma**2) / sigma) / 4  # (5,)
    want_sigma = torch.minimum(torch.maximum(sigma + 0.3 * grad_sigma, 0.8 * sigma), 1.2 * sigma)
    torch.testing.assert_close(new.gradient, -grad_mu, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(new.center, center + 0.5 * grad_mu, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(diagonal.per_coordinate(new.mutation, center), want_sigma, rtol=1e-12, atol=1e-15)
    assert metrics["sigma"] == pytest.approx(float(want_sigma.mean()), rel=1e-12)
    assert metrics["grad_norm"] == pytest.approx(float(grad_mu.norm()), rel=1e-12) and metrics["lr"] == 0.5


def test_pgpe_pairs_ranking_compares_only_within_pairs():
    """ranking="pairs": the center weights are the centered ranks of (f⁻ - f⁺)/2, sigma's of -(f⁺ + f⁻)/2."""
    strategy = PGPE(
        size=8, mutation=Mutation(sigma=0.3, antithetic=True), lr=1.0, optimizer=torch.optim.SGD, ranking="pairs"
    )
    fitness = torch.tensor([0.3, 2.0, -1.0, 0.7, 5.0, 0.0, 0.2, 1.0], dtype=torch.float64)
    center = torch.zeros(5, dtype=torch.float64)
    _, new, _, eps = told(strategy, fitness, center)
    weights = shaping.centered_ranks((fitness[4:] - fitness[:4]) / 2)  # (4,)
    torch.testing.assert_close(new.center, weights @ eps[:4] / 4, rtol=1e-12, atol=1e-15)
    # adding a constant to one pair's two losses (another minibatch) changes nothing for the center
    shifted = fitness.clone()
    shifted[[1, 5]] += 100.0
    _, moved, _, _ = told(strategy, shifted, center)
    torch.testing.assert_close(moved.center, new.center, rtol=0, atol=0)


def test_snes_step_is_the_natural_gradient():
    """μ ← μ + η_μ σ ⊙ Σ u_k z_k; σ ← σ ⊙ exp(η_σ/2 Σ u_k (z_k² - 1)), η_σ = (3 + ln d)/(5 √d) by default."""
    scale = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    strategy = SNES(size=7, mutation=Mutation(sigma=0.2, scale=scale), lr=0.7)
    fitness = torch.tensor([0.3, 2.0, -1.0, 0.7, 5.0, 0.0, 0.2], dtype=torch.float64)
    center = torch.linspace(-1, 1, 6, dtype=torch.float64)
    _, new, _, eps = told(strategy, fitness, center)
    sigma = 0.2 * scale
    z = eps / sigma  # (7, 6)
    k = torch.arange(1, 8, dtype=torch.float64)
    raw = (math.log(7 / 2 + 1) - torch.log(k)).clamp_min(0)
    by_rank = raw / raw.sum() - 1 / 7  # (7,) utility of rank k
    u = by_rank[torch.argsort(torch.argsort(fitness))]  # (7,)
    eta_sigma = (3 + math.log(6)) / (5 * math.sqrt(6))
    torch.testing.assert_close(new.center, center + 0.7 * sigma * (u @ z), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(
        diagonal.per_coordinate(new.mutation, center),
        sigma * torch.exp(eta_sigma / 2 * (u @ (z**2 - 1))),
        rtol=1e-12,
        atol=1e-15,
    )
    torch.testing.assert_close(new.gradient, -sigma * (u @ z), rtol=1e-12, atol=1e-15)


def test_sepcma_step_follows_purecma_with_a_diagonal_covariance():
    """One generation against purecma's equations (pycma 4.5.0) with diagonal C and Ros & Hansen's (n+2)/3 rates."""
    n, lam = 6, 10
    scale = torch.linspace(0.5, 2.0, n, dtype=torch.float64)
    strategy = SepCMAES(size=lam, mutation=Mutation(sigma=0.4, scale=scale))
    fitness = torch.tensor([0.3, 2.0, -1.0, 0.7, 5.0, 0.0, 0.2, 1.1, 3.0, -0.5], dtype=torch.float64)
    center = torch.linspace(-1, 1, n, dtype=torch.float64)
    _, new, metrics, eps = told(strategy, fitness, center)
    # the parameters, written out (Hansen 2016; Ros & Hansen 2008 for the (n+2)/3)
    mu = lam // 2
    w = math.log((lam + 1) / 2) - torch.log(torch.arange(1, mu + 1, dtype=torch.float64))
    w = w / w.sum()
    mueff = float(1 / (w**2).sum())
    cs = (mueff + 2) / (n + mueff + 5)
    damps = 2 * mueff / lam + 0.3 + cs
    cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
    c1 = (n + 2) / 3 * 2 / ((n + 1.3) ** 2 + mueff)
    cmu = min(1 - c1, (n + 2) / 3 * 2 * (mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))
    p = SepCMAParameters(dim=n, size=lam)
    assert (p.mu, p.cs, p.damps, p.cc, p.c1, p.cmu) == pytest.approx((mu, cs, damps, cc, c1, cmu), rel=1e-14)
    # purecma.CMAES.tell, first generation (ps = pc = 0, counteval = λ), C = diag(scale²), sigma = 0.4
    sigma, C = 0.4, scale**2
    best = eps[torch.argsort(fitness)[:mu]]  # (μ, n) x_k - x_old of the μ best
    y = w @ best  # (n,) xmean - xold
    z = y / C.sqrt()  # C^{-1/2} y
    ps = math.sqrt(cs * (2 - cs) * mueff) / sigma * z
    hsig = float(float((ps**2).sum()) / n / (1 - (1 - cs) ** 2) < 2 + 4 / (n + 1))
    pc = math.sqrt(cc * (2 - cc) * mueff) / sigma * hsig * y
    c1a = c1 * (1 - (1 - hsig**2) * cc * (2 - cc))
    C = (1 - c1a - cmu) * C + c1 * pc**2 + cmu * (w @ best**2) / sigma**2
    sigma = sigma * math.exp(min(1, cs / damps * (float((ps**2).sum()) / n - 1) / 2))
    torch.testing.assert_close(new.center, center + y, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(new.path_sigma, ps, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(new.path_c, pc, rtol=1e-12, atol=1e-15)
    assert new.mutation.sigma == pytest.approx(sigma, rel=1e-12) == metrics["step_size"]
    torch.testing.assert_close(new.mutation.scale, C.sqrt(), rtol=1e-12, atol=1e-15)
    assert metrics["axis_ratio"] == pytest.approx(float(C.sqrt().max() / C.sqrt().min()), rel=1e-12)


def test_openes_pgpe_sigma_adaptation_follows_sehnkes_rule():
    """sigma_adapt="pgpe": σ ← σ · clip(1 + η_σ mean_k u_k (z_k² - 1), 1 ± max_change), u = -centered ranks."""
    strategy = OpenES(
        size=8, mutation=Mutation(sigma=0.3, antithetic=True), sigma_adapt="pgpe", sigma_lr=0.5, sigma_max_change=0.1
    )
    fitness = torch.tensor([0.3, 2.0, -1.0, 0.7, 5.0, 0.0, 0.2, 1.0], dtype=torch.float64)
    center = torch.zeros(5, dtype=torch.float64)
    state, new, _, eps = told(strategy, fitness, center)
    assert isinstance(state.mutation.scale, torch.Tensor)  # the first state carries the factors already
    z = eps / 0.3
    u = -shaping.centered_ranks(fitness)
    factor = (1 + 0.5 * (u @ (z**2 - 1)) / 8).clamp(0.9, 1.1)
    torch.testing.assert_close(diagonal.per_coordinate(new.mutation, center), 0.3 * factor, rtol=1e-12, atol=1e-15)
    plain = OpenES(size=8, mutation=Mutation(sigma=0.3, antithetic=True))
    torch.testing.assert_close(new.center, told(plain, fitness, center)[1].center, rtol=0, atol=0)


def test_rolling_pgpe_sigma_adaptation_uses_the_mutations_not_the_parent():
    """RollingImprovement(sigma_adapt="pgpe"): the same rule over the mutations, u = -centered ranks of theirs."""
    mutation = Mutation(kind="cauchy", sigma=0.2, clip=3.0, antithetic=True)
    strategy = RollingImprovement(size=8, mutation=mutation, sigma_adapt="pgpe", sigma_lr=0.5)
    fitness = torch.tensor([1.0, 0.3, 2.0, -1.0, 0.7, 5.0, 0.0, 0.2, 1.0], dtype=torch.float64)  # parent first
    center = torch.zeros(5, dtype=torch.float64)
    _, new, _, eps = told(strategy, fitness, center)
    zeta = eps[1:] / 0.2 / math.sqrt(diagonal.second_moment(mutation, 5))  # (8, 5) standardized rows
    u = -shaping.centered_ranks(fitness[1:])
    factor = (1 + 0.5 * (u @ (zeta**2 - 1)) / 8).clamp(0.8, 1.2)
    torch.testing.assert_close(diagonal.per_coordinate(new.mutation, center), 0.2 * factor, rtol=1e-12, atol=1e-15)
    assert torch.equal(eps[0], torch.zeros(5, dtype=torch.float64))  # the parent's re-score perturbs nothing


def test_heavy_tailed_rows_are_standardized():
    """Clipped Cauchy rows enter the sigma updates as z/√m₂: on a flat function sigma does not drift."""
    strategy = SNES(size=40, mutation=Mutation(kind="cauchy", sigma=0.1, clip=3.0))
    flat = lambda x: torch.zeros(x.shape[0], dtype=x.dtype)  # noqa: E731  ties: ranks by position, random wrt z
    state, _ = run(strategy, flat, torch.zeros(200, dtype=torch.float64), 50)
    mean_log = float(torch.log(diagonal.per_coordinate(state.mutation, state.center) / 0.1).mean())
    assert abs(mean_log) < 0.1, mean_log  # without standardization: z² averages 2.96, log sigma climbs ~0.3/gen


# ----------------------------------------------------------------------------------------------
# ClipUp


def test_clipup_matches_the_paper_over_two_parameters():
    """v ← m v + α g/‖g‖ over the whole group; ‖v‖ clipped at max_speed; θ ← θ - v."""
    a = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
    opt = ClipUp([a, b], lr=0.3, max_speed=0.4, momentum=0.8)
    theta, v = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for g in ([3.0, 0.0, 4.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]):
        g = torch.tensor(g, dtype=torch.float64)
        a.grad, b.grad = g[:2].clone(), g[2:].clone()
        opt.step()
        v = 0.8 * v + 0.3 * g / g.norm()
        v = v * min(1.0, 0.4 / float(v.norm()))
        theta = theta - v
        torch.testing.assert_close(torch.cat([a.detach(), b.detach()]), theta, rtol=1e-14, atol=0)
    assert float(v.norm()) == pytest.approx(0.4)  # the speed limit was reached


def test_clipup_default_max_speed_follows_a_scheduler_and_state_round_trips():
    x = torch.nn.Parameter(torch.zeros(2))
    opt = ClipUp([x], lr=0.1, momentum=0.0)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x.grad = torch.tensor([1.0, 0.0])
    opt.step()
    scheduler.step()
    opt.step()  # lr 0.05, max_speed 0.1 now
    torch.testing.assert_close(x.detach(), torch.tensor([-0.15, 0.0]))
    clone = ClipUp([torch.nn.Parameter(x.detach().clone())], lr=1.0)
    clone.load_state_dict(opt.state_dict())
    assert clone.param_groups[0]["lr"] == 0.05 and torch.equal(
        clone.state_dict()["state"][0]["velocity"], opt.state[x]["velocity"]
    )


@pytest.mark.parametrize(
    "settings, field", [({"lr": -0.1}, "lr"), ({"max_speed": 0.0}, "max_speed"), ({"momentum": 1.0}, "momentum")]
)
def test_clipup_refuses_bad_settings(settings, field):
    with pytest.raises(ValueError, match=field):
        ClipUp([torch.nn.Parameter(torch.zeros(1))], **settings)
    with pytest.raises(TypeError, match="lr"):
        ClipUp([torch.nn.Parameter(torch.zeros(1))], lr="0.1")


def test_openes_with_clipup_solves_a_sphere():
    strategy = OpenES(size=20, mutation=Mutation(sigma=0.1, antithetic=True), lr=0.05, lr_decay=0.99, optimizer=ClipUp)
    state, _ = run(strategy, sphere, torch.ones(10, dtype=torch.float64), 300)
    assert float(sphere(state.center)) < 1e-3  # from 10


# ----------------------------------------------------------------------------------------------
# gradient estimates for the hybrid optimizer


def test_pgpe_and_snes_estimates_drive_the_hybrid_optimizer():
    for strategy in (
        PGPE(size=16, mutation=Mutation(sigma=0.1, antithetic=True)),
        SNES(size=16, mutation=Mutation(sigma=0.1)),
    ):
        assert strategy.gradient_estimate(strategy.init(torch.ones(3), seed=0)) is None
        x = torch.nn.Parameter(torch.ones(10))
        unit = directions.chain(directions.es(strategy, seed=0), directions.normalize())
        opt = HybridOptimizer([x], unit, evaluator=FunctionEvaluator(sphere), lr=0.05)
        for _ in range(150):
            opt.step()
        assert float(sphere(x.detach())) < 0.1, type(strategy).__name__  # from 10
    assert not hasattr(SepCMAES(), "gradient_estimate")  # a recombination, not a gradient


# ----------------------------------------------------------------------------------------------
# convergence against published behaviour


def test_sepcma_learns_the_30d_ellipsoid_in_linear_time():
    """sep-CMA-ES on the 30-d ellipsoid (condition 1e6) from x0 = 1, sigma0 = 1, λ = 4 + ⌊3 ln 30⌋ = 14.

    Reference, pycma 4.5.0 with ``CMA_diagonal=True`` (sep-CMA; 5 seeds, f < 1e-8;
    the command is in benchmarks/RESULTS.rst): 9,058-9,856 evaluations (median 9,380) with
    ``CMA_active=False`` (the variant implemented here), 6,258-7,252 with pycma's default active update.
    Ros & Hansen (2008) report that sep-CMA learns a diagonal scaling in O(n) evaluations, where full
    CMA-ES needs O(n²) (about 2e4 here, Hansen 2016). Measured here: 7,784-7,994 evaluations over 3 seeds.
    """
    n = 30
    strategy = SepCMAES(size=diagonal.paper_size(n), mutation=Mutation(sigma=1.0))
    for seed in range(3):
        state, history = run(strategy, ellipsoid, torch.ones(n, dtype=torch.float64), 2000, seed=seed, target=1e-8)
        evaluations = len(history) * strategy.population
        assert history[-1]["best"] < 1e-8 and evaluations <= 1.25 * 9380, (seed, evaluations)
        # the diagonal has learned the scaling: √diag(C) spans the ellipsoid's axis ratio √1e6 = 1000
        assert 300 < history[-1]["axis_ratio"] < 3000, history[-1]["axis_ratio"]
        # once adapted (the last third), sigma shrinks geometrically: a straight line in log sigma
        sigmas = torch.tensor([m["sigma"] for m in history[2 * len(history) // 3 :]], dtype=torch.float64).log()
        t = torch.arange(len(sigmas), dtype=torch.float64)
        slope = float(((t - t.mean()) * (sigmas - sigmas.mean())).sum() / ((t - t.mean()) ** 2).sum())
        residual = float((sigmas - (sigmas.mean() + slope * (t - t.mean()))).abs().max())
        assert slope < -0.03 and residual < 1.0, (slope, residual)  # measured: -0.042 to -0.046, 0.16 to 0.32


def test_sepcma_and_snes_solve_the_30d_sphere():
    """pycma 4.5.0 sep-CMA (non-active) needs 3,346-3,528 evaluations to f < 1e-8 from x0 = 1, sigma0 = 1."""
    n = 30
    for strategy, bound in ((SepCMAES, 1.25 * 3458), (SNES, 2.5 * 3458)):
        strategy = strategy(size=diagonal.paper_size(n), mutation=Mutation(sigma=1.0))
        _, history = run(strategy, sphere, torch.ones(n, dtype=torch.float64), 1000, target=1e-8)
        assert len(history) * strategy.population <= bound, (type(strategy).__name__, len(history))


def test_snes_solves_the_30d_ellipsoid():
    """SNES's separable model learns the ellipsoid's scales too (Schaul et al. 2011: separable problems in O(n))."""
    n = 30
    strategy = SNES(size=diagonal.paper_size(n), mutation=Mutation(sigma=1.0))
    _, history = run(strategy, ellipsoid, torch.ones(n, dtype=torch.float64), 2000, target=1e-8)
    assert history[-1]["best"] < 1e-8 and len(history) * strategy.population <= 12_000, len(history)


def test_pgpe_descends_the_sphere_with_clipup():
    """PGPE + ClipUp with a decaying speed: the center from 30 to below 1e-6 on the 30-d sphere in 600 generations
    (measured: 1e-7 by generation ~530 on seeds 0-2), sigma shrinking with the distance to the optimum."""
    strategy = PGPE(size=40, mutation=Mutation(sigma=0.3, antithetic=True), lr=0.15, lr_decay=0.985)
    for seed in range(2):
        state, history = run(strategy, sphere, torch.ones(30, dtype=torch.float64), 600, seed=seed)
        assert float(sphere(state.center)) < 1e-6, seed
        assert history[-1]["sigma"] < 0.3 / 20, history[-1]["sigma"]


@pytest.mark.slow
@pytest.mark.parametrize("make", [SepCMAES, SNES])
def test_large_populations_find_the_global_basin_of_rastrigin(make):
    """10-d Rastrigin from uniform starts in [-5.12, 5.12]: with λ = 200 and sigma0 = 2 both reach the global
    minimum's basin (f < 1; Hansen & Kern 2004 report CMA-ES succeeding on Rastrigin once λ is large enough,
    Schaul et al. 2011 the same for SNES) within 40,000 evaluations on at least 4 of 5 starts.

    Measured: sep-CMA 5/5 in 7,000-11,400 evaluations, SNES 5/5 in 28,000-29,200; with λ = 100 only
    3/5 and 4/5 within 40,000, the population dependence the references describe."""
    solved = 0
    for seed in range(5):
        start = (
            torch.rand(10, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64) * 2 - 1
        ) * 5.12
        strategy = make(size=200, mutation=Mutation(sigma=2.0))
        _, history = run(strategy, rastrigin, start, 200, seed=seed, target=1.0)
        solved += history[-1]["best"] < 1.0
    assert solved >= 4, solved
