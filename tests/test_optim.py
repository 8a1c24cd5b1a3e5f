"""Tests of evograd.optim: HybridOptimizer is a torch optimizer whose direction is a mix."""

import importlib.util
import io
import pathlib

import pytest
import torch
from torch.nn import functional as F

from evograd import FunctionEvaluator, HybridOptimizer, Mutation, RollingImprovement, VmapEvaluator
from evograd import directions as D
from evograd.context import Context
from evograd.tasks import mlp

ROOT = pathlib.Path(__file__).resolve().parents[1]


def batches(steps, n=16, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, 64, generator=gen, dtype=dtype), torch.randint(0, 10, (n,), generator=gen))
        for _ in range(steps)
    ]


def closure_for(optimizer, model, x, y):
    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def strategy(size=8):
    return RollingImprovement(size=size, mutation=Mutation(kind="cauchy", sigma=0.01, clip=3.0, antithetic=True))


@pytest.mark.parametrize(
    "base, options",
    [
        (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "nesterov": True}),
        (torch.optim.Adam, {"lr": 1e-2, "weight_decay": 1e-3, "amsgrad": True}),
    ],
)
def test_backprop_equals_torch_optimizer_step_for_step(base, options):
    plain_model, hybrid_model = mlp(seed=0, dtype=torch.float64), mlp(seed=0, dtype=torch.float64)
    plain = base(plain_model.parameters(), **options)
    hybrid = HybridOptimizer(hybrid_model.parameters(), D.backprop(), base=base, **options)
    schedules = [torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5) for o in (plain, hybrid)]
    for x, y in batches(20):
        expected = plain.step(closure_for(plain, plain_model, x, y))
        assert torch.equal(hybrid.step(closure_for(hybrid, hybrid_model, x, y)), expected)
        for schedule in schedules:
            schedule.step()
    assert hybrid.param_groups[0]["lr"] == plain.param_groups[0]["lr"] == options["lr"] / 16
    for p, q in zip(plain_model.parameters(), hybrid_model.parameters()):
        assert torch.equal(p, q)
    assert hybrid.state is hybrid.base.state and hybrid.param_groups is hybrid.base.param_groups


def test_backprop_reads_grad_of_a_loop_without_closure():
    """The common loop: zero_grad(); loss.backward(); step()."""
    plain_model, hybrid_model = mlp(seed=1, dtype=torch.float64), mlp(seed=1, dtype=torch.float64)
    plain = torch.optim.SGD(plain_model.parameters(), lr=0.1, momentum=0.5)
    hybrid = HybridOptimizer(hybrid_model.parameters(), D.backprop(), lr=0.1, momentum=0.5)
    for x, y in batches(5):
        for model, optimizer in ((plain_model, plain), (hybrid_model, hybrid)):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            assert optimizer.step(**({"batch": (x, y)} if optimizer is hybrid else {})) is None
    assert all(torch.equal(p, q) for p, q in zip(plain_model.parameters(), hybrid_model.parameters()))
    assert hybrid.fe == 5 * 3 * 16  # the gradient it used: forward + backward per sample


def test_per_group_directions_touch_only_their_groups():
    """Layer 0 evolves, layer 2 backprops: each group moves only along its own direction."""
    model = mlp(seed=0, dtype=torch.float64)
    evaluator = VmapEvaluator(model, F.cross_entropy)
    evo = D.improvement(strategy(), seed=0)
    optimizer = HybridOptimizer(
        [{"params": model[0].parameters(), "direction": evo}, {"params": model[2].parameters(), "lr": 0.05}],
        D.backprop(),
        lr=0.1,
        evaluator=evaluator,
    )
    x, y = batches(1)[0]
    top_before = [p.detach().clone() for p in model[2].parameters()]
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    top_grad = [p.grad.clone() for p in model[2].parameters()]
    optimizer.step(closure_for(optimizer, model, x, y), batch=(x, y))

    for p, before, grad in zip(model[2].parameters(), top_before, top_grad):  # plain SGD at the group's lr
        assert torch.equal(p.detach(), before.add(grad, alpha=-0.05))
    state = optimizer._states[optimizer._key((0,))]
    bottom = model[0].weight.numel() + model[0].bias.numel()
    assert torch.equal(state.mutation.scale[:bottom], torch.ones(bottom, dtype=torch.float64))
    assert not state.mutation.scale[bottom:].any()  # mutations never touch the top layer ...
    assert not state.estimate[bottom:].any() and state.estimate[:bottom].any()  # ... nor does the estimate
    assert torch.equal(model[0].weight.grad.reshape(-1), -state.estimate[: model[0].weight.numel()])
    assert optimizer.fe == 9 * 16 + 3 * 16  # parent and 8 mutations, then forward + backward, 16 samples


def test_mix_skips_sources_weighted_zero_and_counts_fe():
    model = mlp(seed=0)
    direction = D.mix(
        evo=(D.anneal(1.0, 0.0, 2), D.improvement(strategy(), seed=0)), bp=(D.anneal(0.0, 1.0, 2), D.backprop())
    )
    optimizer = HybridOptimizer(model.parameters(), direction, evaluator=VmapEvaluator(model, F.cross_entropy))
    spent = []
    for x, y in batches(4, dtype=torch.float32):
        before = optimizer.fe
        optimizer.step(closure_for(optimizer, model, x, y), batch=(x, y))
        spent.append(optimizer.fe - before)
    assert spent == [9 * 16 + 3 * 16, 9 * 16 + 3 * 16, 3 * 16, 3 * 16]  # evolution annealed out at step 2


def test_fe_of_closure_calls_without_batch_size_is_reported_uncounted():
    model = mlp(seed=0)
    optimizer = HybridOptimizer(model.parameters(), D.backprop())
    x, y = batches(1, dtype=torch.float32)[0]
    optimizer.step(closure_for(optimizer, model, x, y))
    assert (optimizer.fe, optimizer.uncounted_calls) == (0, 1)


def test_closure_that_only_returns_the_loss_is_backpropagated():
    model, reference = mlp(seed=2, dtype=torch.float64), mlp(seed=2, dtype=torch.float64)
    optimizer = HybridOptimizer(model.parameters(), D.backprop(), lr=0.1)
    x, y = batches(1)[0]
    loss = optimizer.step(lambda: F.cross_entropy(model(x), y))
    F.cross_entropy(reference(x), y).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(p.grad, alpha=-0.1)
    assert loss.item() > 0 and all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))


def _hybrid_run(model, evaluator, steps, *, state=None):
    direction = D.mix(
        bp=(0.5, D.chain(D.backprop(), D.normalize())),
        evo=(0.3, D.chain(D.improvement(strategy(), seed=3), D.clip_norm(1.0))),
        zo=(0.2, D.spsa(seed=4, eps=1e-4)),
    )
    optimizer = HybridOptimizer(
        [{"params": model[0].parameters(), "direction": D.forward_gradient(seed=5)}, {"params": model[2].parameters()}],
        direction,
        base=torch.optim.Adam,
        evaluator=evaluator,
        lr=1e-2,
        weight_decay=1e-3,
    )
    if state is not None:
        optimizer.load_state_dict(state)
    return optimizer


def test_state_dict_round_trip_equals_an_uninterrupted_run():
    data = batches(20)
    straight = mlp(seed=0, dtype=torch.float64)
    optimizer = _hybrid_run(straight, VmapEvaluator(straight, F.cross_entropy), 20)
    for x, y in data:
        optimizer.step(closure_for(optimizer, straight, x, y), batch=(x, y))

    first = mlp(seed=0, dtype=torch.float64)
    optimizer = _hybrid_run(first, VmapEvaluator(first, F.cross_entropy), 10)
    for x, y in data[:10]:
        optimizer.step(closure_for(optimizer, first, x, y), batch=(x, y))
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # plain data: loads without unpickling classes

    resumed = mlp(seed=7, dtype=torch.float64)  # other weights, overwritten by the checkpoint
    resumed.load_state_dict(saved["model"])
    optimizer = _hybrid_run(resumed, VmapEvaluator(resumed, F.cross_entropy), 10, state=saved["optimizer"])
    assert optimizer.step_count == 10
    for x, y in data[10:]:
        optimizer.step(closure_for(optimizer, resumed, x, y), batch=(x, y))
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_load_state_dict_refuses_other_names_and_groups():
    model = mlp(seed=0)
    evaluator = VmapEvaluator(model, F.cross_entropy)
    saved = HybridOptimizer(
        model.parameters(),
        D.mix(bp=(1.0, D.backprop()), evo=(1.0, D.improvement(strategy(), seed=0))),
        evaluator=evaluator,
    ).state_dict()
    renamed = HybridOptimizer(
        model.parameters(),
        D.mix(bp=(1.0, D.backprop()), es=(1.0, D.improvement(strategy(), seed=0))),
        evaluator=evaluator,
    )
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['evo'\] and lacks \['es'\]"):
        renamed.load_state_dict(saved)
    grouped = HybridOptimizer([{"params": model[0].parameters()}, {"params": model[2].parameters()}], D.backprop())
    with pytest.raises(ValueError, match="mismatched param groups"):
        grouped.load_state_dict(saved)
    with pytest.raises(ValueError, match="no 'hybrid' entry"):
        grouped.load_state_dict(torch.optim.SGD(model.parameters()).state_dict())


def test_bad_input_is_named():
    model = mlp(seed=0)
    x, y = batches(1, dtype=torch.float32)[0]
    with pytest.raises(ValueError, match="improvement\\(\\) needs an evaluator"):
        HybridOptimizer(model.parameters(), D.improvement(strategy(), seed=0))
    with pytest.raises(ValueError, match="positive sum"):
        HybridOptimizer(model.parameters(), D.mix(bp=(-0.5, D.backprop()), fg=(0.2, D.backprop())))
    with pytest.raises(TypeError, match="param group 1's 'direction' must be a direction source"):
        HybridOptimizer(
            [{"params": model[0].parameters()}, {"params": model[2].parameters(), "direction": "bp"}], D.backprop()
        )
    with pytest.raises(TypeError, match="base must be a torch.optim.Optimizer class"):
        HybridOptimizer(model.parameters(), D.backprop(), base=torch.optim.SGD(model.parameters()))
    optimizer = HybridOptimizer(model.parameters(), D.backprop())
    with pytest.raises(TypeError, match="closure must return the loss"):
        optimizer.step(lambda: F.cross_entropy(model(x), y).backward())
    with pytest.raises(ValueError, match="backprop\\(\\) needs the gradient"):
        HybridOptimizer(mlp(seed=0).parameters(), D.backprop()).step()
    other = mlp(seed=1)
    with pytest.raises(ValueError, match="parameter '0.weight' .* is not a trainable parameter of the evaluator"):
        HybridOptimizer(other.named_parameters(), D.spsa(seed=0), evaluator=VmapEvaluator(model, F.cross_entropy))
    falls = D.mix(bp=(D.anneal(1.0, -1.0, 4), D.backprop()))
    optimizer = HybridOptimizer(model.parameters(), falls)
    for _ in range(2):
        optimizer.step(closure_for(optimizer, model, x, y))
    with pytest.raises(ValueError, match="mix weights at step 2 are {'bp': 0.0}"):
        optimizer.step(closure_for(optimizer, model, x, y))


def _example():
    spec = importlib.util.spec_from_file_location("hybrid_digits", ROOT / "examples" / "hybrid_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_digits_improvement_only_and_hybrid_reach_their_targets():
    """Digits, MLP 64-32-10, 800 steps of minibatch 128, seed 0 (examples/hybrid_digits.py).

    Budgets: evolution only 800 × 65 members × 128 samples = 6.66M FE; the hybrid adds a forward and
    backward pass per step, 6.96M FE. Measured on seeds 0-3: evolution 94.7/95.0/96.1/95.8%, the
    hybrid 97.5/97.8/97.2/96.9% (96.9% is 11 errors of 359); SGD 96.4-97.5%, Adam 96.7-98.3% in 0.31M FE.
    """
    example = _example()
    accuracy, fe, _ = example.train("improvement", steps=800, seed=0)
    assert fe == 800 * 65 * 128 and accuracy >= 0.93
    accuracy, fe, _ = example.train("hybrid 50/50", steps=800, seed=0)
    assert fe == 800 * 68 * 128 and accuracy >= 0.97


# ----------------------------------------------------------------------------------------------
# torch.optim parity (issue 16) and non-finite directions (issue 13)


def test_add_param_group_then_step_equals_torch_and_a_group_may_bring_its_direction():
    """A group added mid-run gets the base's defaults and its own options, step for step as torch's Adam."""
    plain_model, hybrid_model = mlp(seed=3, dtype=torch.float64), mlp(seed=3, dtype=torch.float64)
    plain = torch.optim.Adam(plain_model[0].parameters(), lr=1e-2)
    hybrid = HybridOptimizer(hybrid_model[0].parameters(), D.backprop(), base=torch.optim.Adam, lr=1e-2)
    for step, (x, y) in enumerate(batches(8)):
        if step == 3:
            plain.add_param_group({"params": plain_model[2].parameters(), "lr": 5e-3})
            hybrid.add_param_group({"params": hybrid_model[2].parameters(), "lr": 5e-3})
        plain.step(closure_for(plain, plain_model, x, y))
        hybrid.step(closure_for(hybrid, hybrid_model, x, y))
    assert hybrid.param_groups[1]["lr"] == 5e-3 and hybrid.param_groups[1]["betas"] == (0.9, 0.999)
    assert all(torch.equal(p, q) for p, q in zip(plain_model.parameters(), hybrid_model.parameters()))

    # a group with a direction of its own: unit-norm backprop, so SGD moves it by exactly lr along -g/|g|
    model = mlp(seed=4, dtype=torch.float64)
    optimizer = HybridOptimizer(model[0].parameters(), D.backprop(), lr=0.1)
    optimizer.add_param_group({"params": model[2].parameters(), "direction": D.chain(D.backprop(), D.normalize())})
    x, y = batches(1)[0]
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step(closure_for(optimizer, model, x, y))
    top_norm = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads[2:]]))
    for i, (p, b, g) in enumerate(zip(model.parameters(), before, grads)):
        expected = b - 0.1 * g if i < 2 else b - 0.1 * g / top_norm
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-15)


def test_frozen_parameters_are_skipped_as_torch_skips_them():
    """requires_grad=False in model.parameters(): no direction, no move, no base state, as with torch's SGD."""
    plain_model, hybrid_model = mlp(seed=5, dtype=torch.float64), mlp(seed=5, dtype=torch.float64)
    for model in (plain_model, hybrid_model):
        model[0].weight.requires_grad_(False)
    frozen = hybrid_model[0].weight.detach().clone()
    options = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2}  # weight decay would move a zero-gradient weight
    plain = torch.optim.SGD(plain_model.parameters(), **options)
    hybrid = HybridOptimizer(hybrid_model.parameters(), D.backprop(), **options)
    for x, y in batches(4):
        plain.step(closure_for(plain, plain_model, x, y))
        hybrid.step(closure_for(hybrid, hybrid_model, x, y), batch=(x, y))
    assert all(torch.equal(p, q) for p, q in zip(plain_model.parameters(), hybrid_model.parameters()))
    assert torch.equal(hybrid_model[0].weight, frozen) and hybrid_model[0].weight not in hybrid.state
    assert hybrid.fe == 4 * 3 * 16

    # population and probe sources skip it too (the evaluator's vector holds only trainable parameters)
    model = mlp(seed=6, dtype=torch.float64)
    model[2].weight.requires_grad_(False)
    evaluator = VmapEvaluator(model, F.cross_entropy)
    direction = D.mix(evo=(1.0, D.improvement(strategy(), seed=0)), zo=(1.0, D.spsa(seed=1)))
    optimizer = HybridOptimizer(model.parameters(), direction, evaluator=evaluator, lr=0.1)
    kept, moving = model[2].weight.detach().clone(), model[0].weight.detach().clone()
    for x, y in batches(3):
        optimizer.step(batch=(x, y))
    assert torch.equal(model[2].weight, kept) and not torch.equal(model[0].weight, moving)


def test_unsupported_bases_are_refused_at_construction_naming_what_works():
    model = mlp(seed=0)
    with pytest.raises(ValueError, match=r"base=LBFGS is not supported: it needs the closure many times per step.*SGD"):
        HybridOptimizer(model.parameters(), D.backprop(), base=torch.optim.LBFGS)
    with pytest.raises(ValueError, match=r"base=SparseAdam is not supported: it needs sparse gradients.*Adam"):
        HybridOptimizer(model.parameters(), D.backprop(), base=torch.optim.SparseAdam)
    for base in (torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.NAdam):
        HybridOptimizer(model.parameters(), D.backprop(), base=base)


def _nan_batch():
    x, y = batches(1)[0]
    x = x.clone()
    x[0, 0] = float("nan")  # one NaN input: a NaN loss for the closure and for the evaluator
    return x, y


@pytest.mark.parametrize(
    "source",
    [
        lambda: D.backprop(),
        lambda: D.forward_gradient(seed=0),
        lambda: D.spsa(seed=0),
        lambda: D.chain(D.backprop(), D.clip_norm(1.0)),
        lambda: D.mix(bp=(0.5, D.backprop()), evo=(0.5, D.improvement(strategy(), seed=0))),
    ],
    ids=["backprop", "forward_gradient", "spsa", "chain-clip", "mix-bp-evolution"],
)
def test_a_non_finite_direction_skips_the_step_and_leaves_parameters_and_base_state(source):
    """A NaN loss: as GradScaler, no base step, parameters and Adam moments untouched, the skip counted."""
    model = mlp(seed=0, dtype=torch.float64)
    optimizer = HybridOptimizer(
        model.parameters(), source(), base=torch.optim.Adam, evaluator=VmapEvaluator(model, F.cross_entropy), lr=1e-2
    )
    x, y = batches(1)[0]
    optimizer.step(closure_for(optimizer, model, x, y), batch=(x, y))  # a finite step fills Adam's moments
    params = [p.detach().clone() for p in model.parameters()]
    moments = {k: {n: t.clone() for n, t in v.items()} for k, v in optimizer.state.items()}
    sources = optimizer.state_dict()["hybrid"]["directions"]
    nan_x, nan_y = _nan_batch()
    loss = optimizer.step(closure_for(optimizer, model, nan_x, nan_y), batch=(nan_x, nan_y))
    assert torch.isnan(loss)
    assert optimizer.skipped_steps == 1 and optimizer.step_count == 2
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    assert moments.keys() == optimizer.state.keys()
    for p, state in optimizer.state.items():
        assert all(torch.equal(t, moments[p][n]) for n, t in state.items())
    assert str(optimizer.state_dict()["hybrid"]["directions"]) == str(sources)  # sources' states not advanced
    optimizer.step(closure_for(optimizer, model, x, y), batch=(x, y))  # and training goes on
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not any(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    assert int(next(iter(optimizer.state.values()))["step"]) == 2


def test_spsa_restores_the_parameters_by_copy_whatever_eps():
    sphere = FunctionEvaluator(lambda v: (v**2).sum(1))
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    optimizer = HybridOptimizer([w], D.spsa(seed=0, eps=1e30), evaluator=sphere, lr=0.0)
    optimizer.step()  # the probes overflow: a NaN direction, skipped; the weights come back exactly
    assert w.tolist() == [1.0, 2.0, 3.0] and optimizer.skipped_steps == 1

    # a finite direction at lr=0: the weights come back bit for bit, where subtracting εz again would not
    eps, w = 1e4, torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    optimizer = HybridOptimizer([w], D.spsa(seed=0, eps=eps), evaluator=sphere, lr=0.0)
    optimizer.step()
    assert optimizer.skipped_steps == 0 and w.tolist() == [1.0, 2.0, 3.0]
    z = torch.randn(3, generator=torch.Generator().manual_seed(D.spsa(seed=0).key(Context([w]))))
    subtracted = torch.tensor([1.0, 2.0, 3.0]).add(z, alpha=eps).add(z, alpha=-2 * eps).add(z, alpha=eps)
    assert not torch.equal(subtracted, torch.tensor([1.0, 2.0, 3.0]))  # so the check above can fail


def test_batchnorm_in_train_mode_running_stats_follow_the_closure_alone():
    """Populations and probes score members by their batch statistics; only the closure's forward updates the stats."""
    with torch.random.fork_rng():  # the layers' initial weights only; the run's random numbers come from its seeds
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.BatchNorm1d(64), torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10)
        ).double()
    reference = torch.nn.BatchNorm1d(64).double()  # the stats a plain torch loop of the closures would keep
    direction = D.mix(
        bp=(1.0, D.backprop()),
        evo=(1.0, D.improvement(strategy(), seed=0)),
        fg=(1.0, D.forward_gradient(seed=1)),
        zo=(1.0, D.spsa(seed=2)),
    )
    optimizer = HybridOptimizer(model.parameters(), direction, evaluator=VmapEvaluator(model, F.cross_entropy), lr=0.05)
    calls = 0
    for x, y in batches(4):

        def closure(x=x, y=y):
            nonlocal calls
            calls += 1
            reference(x)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        loss = optimizer.step(closure, batch=(x, y))
        assert torch.isfinite(loss)
    assert calls >= 4 and int(model[0].num_batches_tracked) == calls
    torch.testing.assert_close(model[0].running_mean, reference.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(model[0].running_var, reference.running_var, rtol=0, atol=0)
