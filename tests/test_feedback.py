"""Tests for evograd.feedback: reference equalities in float64, seeds, errors, digits convergence."""

import copy
import math

import pytest
import torch
from torch import nn

from evograd import feedback
from evograd.feedback import FeedbackConv2d, FeedbackLinear

DT = torch.float64
LAYERS = (FeedbackLinear, FeedbackConv2d)


def _init(net: nn.Module, seed: int) -> nn.Module:
    """Deterministic float64 weights from a local generator (U(±1/sqrt(fan_in)), like torch's)."""
    gen = torch.Generator().manual_seed(seed)
    net = net.to(DT)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                bound = module.weight[0].numel() ** -0.5
                module.weight.uniform_(-bound, bound, generator=gen)
                module.bias.uniform_(-bound, bound, generator=gen)
    return net


def mlp(*sizes: int, seed: int = 0) -> nn.Sequential:
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.Tanh()]
    return _init(nn.Sequential(*layers[:-1]), seed)


def cnn(seed: int = 0) -> nn.Sequential:
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 3, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 5),
    )
    return _init(net, seed)


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def grads(net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of 0.5 * ||net(x) - target||² (so the output error is net(x) - target)."""
    params = list(net.parameters())
    return list(torch.autograd.grad(0.5 * (net(x) - target).square().sum(), params))


def feedback_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, LAYERS)]


MLP_CASE = (lambda: mlp(6, 7, 5, 4), (10, 6), (10, 4))
CNN_CASE = (cnn, (3, 2, 8, 8), (3, 5))


# --- reference equalities -------------------------------------------------------------------------


@pytest.mark.parametrize("make, x_shape, y_shape", [MLP_CASE, CNN_CASE], ids=["mlp", "cnn"])
def test_fa_with_feedback_tied_to_weight_equals_autograd(make, x_shape, y_shape):
    net = make()
    fa = feedback.convert(net, mode="fa", seed=3)
    for layer in feedback_layers(fa):
        layer.feedback.copy_(layer.weight)
    x, y = randn(*x_shape).requires_grad_(), randn(*y_shape, seed=2)
    expected = grads(net, x, y) + list(torch.autograd.grad(net(x).sum(), x))
    got = grads(fa, x, y) + list(torch.autograd.grad(fa(x).sum(), x))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_dfa_with_feedback_tied_to_upstream_jacobian_equals_autograd():
    net = mlp(6, 9, 4)
    dfa = feedback.convert(net, mode="dfa", seed=0)
    x, y = randn(12, 6), randn(12, 4, seed=2)
    dfa(x)  # DFA matrices are drawn at the first forward pass
    assert dfa[0].feedback is None  # the input needs no gradient, so the first layer gets no matrix
    dfa[2].feedback.copy_(net[2].weight)  # (n_out, hidden): e @ W2 is backprop's hidden signal
    for g, e in zip(grads(dfa, x, y), grads(net, x, y)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_dfa_deep_mlp_sends_output_error_straight_to_every_layer():
    net = mlp(5, *[8] * 7, 3)  # 8 Linear layers
    dfa = feedback.convert(net, mode="dfa", seed=1)
    inputs = []
    for layer in feedback_layers(dfa):
        layer.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach()))
    x, y = randn(16, 5), randn(16, 3, seed=2)
    got = grads(dfa, x, y)
    error = dfa(x).detach() - y  # (16, 3): ∂loss/∂output
    layers = feedback_layers(dfa)
    assert len(layers) == 8
    for k in range(7):  # layer k+1's input h gets e @ B_{k+1}; tanh's backward gives δ_k
        h = inputs[k + 1]  # (16, 8)
        delta = (error @ layers[k + 1].feedback) * (1 - h.square())  # (16, 8)
        torch.testing.assert_close(got[2 * k], delta.T @ inputs[k], rtol=1e-12, atol=1e-12)
    for g in got:
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_dfa_cnn_gradients_reach_every_layer():
    net = cnn()
    dfa = feedback.convert(net, mode="dfa", seed=0)
    x, y = randn(3, 2, 8, 8), randn(3, 5, seed=2)
    got = grads(dfa, x, y)
    for g in got:
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert dfa[2].feedback.shape == (5, 4 * 6 * 6) and dfa[5].feedback.shape == (5, 27)
    # conv1's δ is relu'(a1) ⊙ (e @ B of conv2), reshaped: nothing of conv2 or the Linear is used
    a1 = net[0](x)  # (3, 4, 6, 6)
    error = net(x) - y  # (3, 5)
    delta = (error @ dfa[2].feedback).view(a1.shape) * (a1 > 0)  # (3, 4, 6, 6)
    expected = torch.nn.grad.conv2d_weight(x, net[0].weight.shape, delta)
    torch.testing.assert_close(got[0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", ["fa", "dfa", "sign", "noise"])
@pytest.mark.parametrize("make, x_shape", [MLP_CASE[:2], CNN_CASE[:2]], ids=["mlp", "cnn"])
def test_conversion_leaves_forward_unchanged(rule, make, x_shape):
    net, x = make(), randn(*x_shape)
    converted = feedback.convert(net, mode=rule, seed=0)
    assert torch.equal(converted(x), net(x))
    assert all(a is b for a, b in zip(converted.parameters(), net.parameters()))


@pytest.mark.parametrize("rule", ["fa", "dfa", "sign", "noise"])
@pytest.mark.parametrize("make, x_shape, y_shape", [MLP_CASE, CNN_CASE], ids=["mlp", "cnn"])
def test_mode_bp_equals_autograd_on_the_unconverted_model(rule, make, x_shape, y_shape):
    net = make()
    converted = feedback.convert(net, mode=rule, seed=0)
    x, y = randn(*x_shape), randn(*y_shape, seed=2)
    expected = grads(net, x, y)
    with feedback.mode("bp"):
        got_global = grads(converted, x, y)
    with feedback.mode("bp", converted):
        got_model = grads(converted, x, y)
    assert all(layer.rule == rule for layer in feedback_layers(converted))  # restored on exit
    for a, b, e in zip(got_global, got_model, expected):
        assert torch.equal(a, e) and torch.equal(b, e)
    assert not all(torch.equal(a, e) for a, e in zip(grads(converted, x, y), expected))  # rule is back


def test_sign_symmetry_matches_formula():
    net = mlp(4, 6, 3)
    x, y = randn(5, 4), randn(5, 3, seed=2)
    h = torch.tanh(net[0](x))  # (5, 6)
    error = net(x) - y  # (5, 3): δ of the output layer
    w2 = net[2].weight
    for scale, s in [(None, w2.square().mean().sqrt()), (0.5, 0.5)]:
        got = grads(feedback.convert(net, mode="sign", scale=scale), x, y)
        delta = (error @ (s * w2.sign())) * (1 - h.square())  # (5, 6)
        torch.testing.assert_close(got[0], delta.T @ x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[2], error.T @ h, rtol=1e-12, atol=1e-12)  # local and true


def test_noise_has_the_true_norm_and_is_uncorrelated():
    dim = 4096
    net = mlp(8, dim, 4)
    x, y = randn(16, 8), randn(16, 4, seed=2)

    def hidden_signal(model, rule):
        seen = []
        handle = model[1].register_forward_hook(lambda m, args, out: seen.append(out))
        with feedback.mode(rule, model):
            loss = 0.5 * (model(x) - y).square().sum()
        handle.remove()
        seen[0].retain_grad()
        loss.backward()
        return seen[0].grad  # (16, dim): what the layer above sends down

    noisy = feedback.convert(net, mode="noise", seed=0)
    true = hidden_signal(noisy, "bp")
    first, second = hidden_signal(noisy, "noise"), hidden_signal(noisy, "noise")
    torch.testing.assert_close(first.norm(dim=1), true.norm(dim=1), rtol=1e-12, atol=0)
    # cos of an isotropic Gaussian with a fixed vector is ~N(0, 1/dim): 5/sqrt(dim) = 0.078 is 5 sd
    cosine = torch.nn.functional.cosine_similarity(first, true, dim=1)  # (16,)
    assert cosine.abs().max() < 5 / math.sqrt(dim)
    assert not torch.equal(first, second)  # fresh noise at every backward
    again = hidden_signal(feedback.convert(net, mode="noise", seed=0), "noise")
    assert torch.equal(first, again)  # ... drawn from the seed


# --- seeds, buffers, state_dict -------------------------------------------------------------------


def _matrices(net, x, rule, seed, scale=None):
    """A converted model after one forward pass, its drawn feedback layers and their matrices."""
    converted = feedback.convert(net, mode=rule, seed=seed, scale=scale)
    converted(x)
    layers = [layer for layer in feedback_layers(converted) if layer.feedback is not None]
    assert len(layers) == (3 if rule == "fa" else 2)  # DFA's first layer needs no matrix
    return converted, layers, [layer.feedback for layer in layers]


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_feedback_matrices_are_reproducible_and_saved(rule):
    net, x = cnn(), randn(3, 2, 8, 8)
    converted, _, first = _matrices(net, x, rule, seed=0)
    *_, same = _matrices(net, x, rule, seed=0)
    *_, other = _matrices(net, x, rule, seed=1)
    assert all(torch.equal(m, n) for m, n in zip(first, same))
    assert not any(torch.equal(m, n) for m, n in zip(first, other))
    fresh = feedback.convert(cnn(seed=5), mode=rule, seed=7)  # DFA: nothing drawn yet
    fresh.load_state_dict(converted.state_dict())
    loaded = [layer.feedback for layer in feedback_layers(fresh) if layer.feedback is not None]
    assert len(loaded) == len(first) and all(torch.equal(m, n) for m, n in zip(first, loaded))
    assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), net.parameters()))
    assert fresh.to(torch.float32)[2].feedback.dtype == torch.float32  # buffers move with .to()


@pytest.mark.parametrize(
    "rule, fan_in", [("fa", lambda layer: layer.weight[0].numel()), ("dfa", lambda layer: 5)]
)  # DFA: n_out of the model
def test_scale_sets_the_feedback_std(rule, fan_in):
    net, x = cnn(), randn(3, 2, 8, 8)
    *_, unit = _matrices(net, x, rule, seed=0, scale=1.0)
    *_, scaled = _matrices(net, x, rule, seed=0, scale=0.3)
    _, layers, default = _matrices(net, x, rule, seed=0)
    for layer, u, s, d in zip(layers, unit, scaled, default):
        torch.testing.assert_close(s, 0.3 * u, rtol=1e-12, atol=0)
        torch.testing.assert_close(d, fan_in(layer) ** -0.5 * u, rtol=1e-12, atol=0)
    draws = torch.cat([u.flatten() for u in unit])  # >= 315 N(0, 1) draws: their sd has sd <= 0.04
    assert 0.85 < draws.std() < 1.15


def test_library_never_touches_the_global_rng():
    nets, x, y = [cnn() for _ in range(4)], randn(3, 2, 8, 8), randn(3, 5, seed=2)  # nn init uses it
    state = torch.random.get_rng_state()
    for net, rule in zip(nets, ["fa", "dfa", "sign", "noise"]):
        grads(feedback.convert(net, mode=rule, seed=0), x, y)
    assert torch.equal(torch.random.get_rng_state(), state)


# --- mode, feedback_gradients ---------------------------------------------------------------------


def test_feedback_gradients_restores_grad_and_accepts_both_closure_styles():
    net = mlp(6, 7, 4)
    fa = feedback.convert(net, mode="fa", seed=0)
    x, y = randn(10, 6), randn(10, 4, seed=2)
    sentinel = [torch.full_like(p, 7.0) for p in net.parameters()]
    for p, s in zip(net.parameters(), sentinel):
        p.grad = s

    def returns_loss():
        return 0.5 * (fa(x) - y).square().sum()

    def calls_backward():
        fa.zero_grad()
        loss = returns_loss()
        loss.backward()
        return loss

    got = feedback.feedback_gradients(fa, returns_loss, "fa")
    assert all(p.grad is s for p, s in zip(net.parameters(), sentinel))
    for g, e in zip(got, grads(fa, x, y)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=0)
    for g, e in zip(feedback.feedback_gradients(fa, calls_backward, "fa"), got):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=0)
    bp = feedback.feedback_gradients(net, lambda: 0.5 * (net(x) - y).square().sum(), "bp")
    assert all(torch.equal(g, e) for g, e in zip(bp, grads(net, x, y)))
    assert not torch.allclose(got[0], bp[0])  # FA's hidden gradient is not backprop's


def test_mode_rejects_rules_a_layer_cannot_run():
    net = mlp(3, 4, 2)
    dfa = feedback.convert(net, mode="dfa")
    with pytest.raises(ValueError, match="rule='bogus'.*'bp'"):
        with feedback.mode("bogus"):
            pass
    with pytest.raises(ValueError, match="converted with mode='dfa'"):
        with feedback.mode("fa", dfa):
            pass
    with pytest.raises(ValueError, match="converted with mode='dfa'"):
        with feedback.mode("fa"):
            dfa(randn(2, 3))
    with pytest.raises(ValueError, match="no converted layer"):
        with feedback.mode("fa", net):
            pass
    with feedback.mode("sign", dfa):  # matrix-free rules run on any converted layer
        assert dfa[0].rule == "sign"
    assert dfa[0].rule == "dfa"


# --- errors ---------------------------------------------------------------------------------------


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.gain * x


@pytest.mark.parametrize(
    "layer, name",
    [(nn.BatchNorm1d(3), "BatchNorm1d"), (nn.LayerNorm(3), "LayerNorm"), (Scaled(), "Scaled"), (nn.LSTM(3, 3), "LSTM")],
)
def test_unsupported_layers_are_named(layer, name):
    with pytest.raises(TypeError, match=name):
        feedback.convert(nn.Sequential(nn.Linear(3, 3), layer), mode="fa")


def test_bad_arguments_raise():
    net = mlp(3, 4, 2)
    with pytest.raises(ValueError, match="mode='backprop'.*'fa'.*'dfa'.*'sign'.*'noise'"):
        feedback.convert(net, mode="backprop")
    with pytest.raises(ValueError, match="seed=-1"):
        feedback.convert(net, seed=-1)
    with pytest.raises(ValueError, match="scale=0.0"):
        feedback.convert(net, scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        feedback.convert(net, mode="noise", scale=1.0)
    with pytest.raises(TypeError, match="already converted"):
        feedback.convert(feedback.convert(net))
    with pytest.raises(TypeError, match="padding_mode='reflect'"):
        feedback.convert(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))


# --- convergence ----------------------------------------------------------------------------------


def _digits_accuracy(init, rule, seed, x_tr, y_tr, x_te, y_te, epochs=30):
    """Test accuracy (%) of a copy of ``init`` trained under ``rule`` with Adam."""
    base = copy.deepcopy(init)
    net = base if rule == "bp" else feedback.convert(base, mode=rule, seed=seed)
    opt = torch.optim.Adam(base.parameters(), lr=1e-3)  # parameters are shared with net
    order = torch.Generator().manual_seed(seed)  # the same data order for every rule
    for _ in range(epochs):
        for idx in torch.randperm(len(x_tr), generator=order).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
    with torch.no_grad():
        return 100 * (net(x_te).argmax(1) == y_te).double().mean().item()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_fa_and_dfa_match_backprop_on_digits(seed):
    sk_datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = sk_datasets.load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    x_tr, x_te = (torch.tensor(scaler.transform(a)) for a in (x_tr, x_te))
    y_tr, y_te = torch.tensor(y_tr), torch.tensor(y_te)
    init = mlp(64, 64, 10, seed=seed)
    accuracy = {
        rule: _digits_accuracy(init, rule, seed, x_tr, y_tr, x_te, y_te) for rule in ["bp", "fa", "dfa", "noise"]
    }
    # acceptance criterion: within 2 points of backprop; noise (hidden layer driven by noise) clearly worse
    assert accuracy["bp"] > 95, accuracy
    assert accuracy["fa"] > accuracy["bp"] - 2 and accuracy["dfa"] > accuracy["bp"] - 2, accuracy
    assert accuracy["noise"] < accuracy["bp"] - 3, accuracy
