"""Tests of evograd.directions: the sources' estimates, the combinators, states as plain data."""

import math

import pytest
import torch
from problems import quadratic
from torch.nn import functional as F

from evograd import FunctionEvaluator, Mutation, OpenES, RollingImprovement, VmapEvaluator, checkpoint, feedback
from evograd import directions as D
from evograd.tasks import mlp


def mean_direction(source, x, evaluator, n):
    """The mean of ``n`` updates of a stateless source at a fixed point (steps 0..n-1 draw fresh noise)."""
    total = torch.zeros_like(x)
    for step in range(n):
        ctx = D.Context([x], step=step, evaluator=evaluator)
        (direction,), _ = source.update(None, ctx)
        total += direction
    return total / n


@pytest.mark.parametrize("source", [D.forward_gradient(seed=0), D.spsa(seed=0, eps=1e-3)], ids=repr)
def test_estimates_are_unbiased_on_a_quadratic(source):
    """E[(∇L·v) v] = ∇L for v ~ N(0, I); SPSA's central difference is exact on a quadratic.

    For one estimate X, E|X - g|² = (d+1)|g|² (Isserlis: E[(g·v)² v vᵀ] = |g|² I + 2 g gᵀ), so the
    mean of n has RMS error sqrt((d+1)/n)|g|. Its square is a sum of d nearly independent squared
    normal errors; exceeding 3x the RMS (9x the mean square, chi-square with 6 dof) has probability
    below 1e-9, and the seeds are fixed, so this never flakes.
    """
    d, n = 6, 2000
    value, grad = quadratic(d)
    x = torch.linspace(-1, 1, d, dtype=torch.float64).requires_grad_()
    g = grad(x.detach())
    estimate = mean_direction(source, x, FunctionEvaluator(value), n)
    assert (estimate - g).norm() < 3 * math.sqrt((d + 1) / n) * g.norm()
    torch.testing.assert_close(x.detach(), torch.linspace(-1, 1, d, dtype=torch.float64), rtol=0, atol=1e-13)


def test_spsa_and_forward_gradient_share_their_noise_and_agree_on_a_network():
    """Same seed, same step, same z: SPSA's slope is a finite-difference of the forward gradient's JVP."""
    model = mlp((6, 5, 3), seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(32, 6, generator=gen, dtype=torch.float64), torch.randint(0, 3, (32,), generator=gen))
    evaluator = VmapEvaluator(model, F.cross_entropy, batch)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    ctx = D.Context(params, step=3, evaluator=evaluator)
    forward, _ = D.forward_gradient(seed=1).update(None, ctx)
    zeroth, _ = D.spsa(seed=1, eps=1e-5).update(None, ctx)
    for f, z in zip(forward, zeroth):
        torch.testing.assert_close(z, f, rtol=1e-6, atol=1e-9)
    for p, b in zip(params, before):  # restored up to rounding in the last bits
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=1e-15)
    true = torch.autograd.grad(F.cross_entropy(model(batch[0]), batch[1]), params)
    assert sum(torch.dot(f.reshape(-1), t.reshape(-1)) for f, t in zip(forward, true)) >= 0  # (∇L·v)² >= 0
    assert ctx.fe == 3 * 32 + 2 * 32


def test_improvement_and_es_point_uphill_like_the_gradient():
    """Negated rolling estimate and OpenES gradient both align with the true gradient of a quadratic."""
    value, grad = quadratic(20)
    x = torch.linspace(-1, 1, 20, dtype=torch.float64)
    evaluator = FunctionEvaluator(value)
    for source in (
        D.improvement(RollingImprovement(size=32, mutation=Mutation(sigma=0.01, antithetic=True)), seed=0),
        D.es(OpenES(size=32, mutation=Mutation(sigma=0.01, antithetic=True)), seed=0),
    ):
        ctx = D.Context([x], evaluator=evaluator)
        state = source.init(ctx)
        for step in range(30):  # the center is re-synced each step; x does not move here
            ctx = D.Context([x], step=step, evaluator=evaluator)
            (direction,), state = source.update(state, ctx)
        assert F.cosine_similarity(direction, grad(x), dim=0) > 0.5, source
        assert ctx.fe == 33 if source.name == "improvement" else ctx.fe == 32


def test_feedback_sources_match_feedback_gradients_and_backprop_stays_true():
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    for mode, source in (("fa", D.feedback_alignment), ("dfa", D.direct_feedback_alignment), ("sign", D.sign_symmetry)):
        converted = feedback.convert(net, mode=mode, seed=0)
        closure = lambda: F.mse_loss(converted(x), y)  # noqa: E731
        ctx = D.Context(list(converted.parameters()), closure=closure, samples=10)
        found, _ = source(converted).update(source(converted).init(ctx), ctx)
        for f, e in zip(found, feedback.feedback_gradients(converted, closure, mode)):
            assert torch.equal(f, e)
        true, _ = D.backprop().update(None, ctx)  # through the converted layers: still autograd's
        for t, e in zip(true, torch.autograd.grad(F.mse_loss(net(x), y), list(net.parameters()))):
            torch.testing.assert_close(t, e, rtol=1e-12, atol=1e-14)
        assert not torch.equal(found[0], true[0]) and ctx.fe == 2 * 3 * 10

    converted = feedback.convert(net, mode="fa", seed=0)
    ctx = D.Context(list(net.parameters()), closure=lambda: F.mse_loss(net(x), y))
    with pytest.raises(ValueError, match="never called the converted model"):
        D.feedback_alignment(converted).update(None, ctx)
    with pytest.raises(ValueError, match="has no converted layer"):
        D.feedback_alignment(net)


def test_combinators():
    a, b = torch.tensor([3.0, 0.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64)
    assert [t.tolist() for t in D.normalize()([a, b])] == [[0.6, 0.0], [0.8]]
    assert [t.tolist() for t in D.clip_norm(10.0)([a, b])] == [[3.0, 0.0], [4.0]]  # under the bound: unchanged
    assert [t.tolist() for t in D.clip_norm(2.0, per_tensor=True)([a, b])] == [[2.0, 0.0], [2.0]]
    x = torch.tensor([1.0, 2.0], requires_grad=True)

    def closure():
        x.grad = None
        loss = (x**2).sum()
        loss.backward()
        return loss

    ctx = D.Context([x], closure=closure)
    mixed, state = D.mix(one=(0.25, D.backprop()), two=(lambda step: 0.5, D.chain(D.backprop(), D.normalize()))).update(
        {"one": None, "two": None}, ctx
    )
    gradient = torch.tensor([2.0, 4.0])
    torch.testing.assert_close(mixed[0], 0.25 * gradient + 0.5 * gradient / gradient.norm())
    assert state == {"one": None, "two": None}
    with pytest.raises(TypeError, match="must be a \\(weight, source\\) pair"):
        D.mix(bp=D.backprop())
    with pytest.raises(TypeError, match="is not a transform"):
        D.chain(D.backprop(), D.backprop())
    with pytest.raises(ValueError, match="eps=0.0 is out of range"):
        D.spsa(seed=0, eps=0.0)
    with pytest.raises(ValueError, match="seed=-1 is out of range"):
        D.forward_gradient(seed=-1)


def test_plain_restore_round_trip_keys_states_by_name():
    x = torch.zeros(6, dtype=torch.float64)
    evaluator = FunctionEvaluator(lambda v: (v**2).sum(1))
    source = D.mix(
        evo=(1.0, D.improvement(RollingImprovement(size=4, mutation=Mutation(antithetic=True)), seed=0)),
        bp=(0.0, D.backprop()),
    )
    ctx = D.Context([x], evaluator=evaluator)
    _, state = source.update(source.init(ctx), ctx)
    saved = checkpoint.plain(state)
    assert saved["evo"]["__dataclass__"] == "RollingState" and saved["evo"]["fields"]["generation"] == 1
    restored = checkpoint.restore(source.init(ctx), saved)
    assert torch.equal(restored["evo"].estimate, state["evo"].estimate)
    assert restored["evo"].mutation == state["evo"].mutation and restored["evo"].generation == 1
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['es'\] and lacks \['evo'\]"):
        checkpoint.restore(source.init(ctx), {"es": saved["evo"], "bp": None})
