"""Backprop vs backprop-free rules on scikit-learn's digits: accuracy and gradient alignment.

One MLP 64-64-10 (tanh) is trained five times from the same initial weights, with the same data
order, Adam and epochs, sending its error backwards by: backprop (bp), feedback alignment (fa),
direct feedback alignment (dfa), sign symmetry (sign), and norm-matched Gaussian noise (noise).
The angle is between the hidden layer's weight gradient under the rule and the true backprop
gradient, both on the same training batch and the same weights (``feedback.mode("bp")`` vs the
rule); 90° means no better than a random direction. It is measured after the first and the last
epoch. (The output layer's gradient is exact under every rule, so it is left out.)

Run: ``python examples/feedback_digits.py`` (about 6 s on 2 CPU cores; needs scikit-learn).
"""

import math

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

from evograd import feedback

SEED, EPOCHS, BATCH, LR = 0, 30, 32, 1e-3
torch.set_num_threads(1)

# --- data: standardized features, fixed stratified split
x, y = load_digits(return_X_y=True)
x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)
scaler = StandardScaler().fit(x_tr)
x_tr, x_te = (torch.tensor(scaler.transform(a), dtype=torch.float32) for a in (x_tr, x_te))
y_tr, y_te = torch.tensor(y_tr), torch.tensor(y_te)
probe = torch.arange(256)  # the fixed batch the angles are measured on

torch.manual_seed(SEED)  # user code may seed the global RNG; evograd itself never does
init = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)).state_dict()


def hidden_angle(net: nn.Module, rule: str) -> float:
    """Degrees between the hidden weight gradient under ``rule`` and under backprop, same batch."""

    def closure():
        return nn.functional.cross_entropy(net(x_tr[probe]), y_tr[probe])

    true = feedback.feedback_gradients(net, closure, "bp")[0].flatten()  # (64 * 64,)
    rule_grad = feedback.feedback_gradients(net, closure, rule)[0].flatten()  # (64 * 64,)
    cosine = torch.nn.functional.cosine_similarity(true, rule_grad, dim=0).clamp(-1, 1)
    return math.degrees(math.acos(cosine.item()))


def train(rule: str) -> tuple[float, float, float]:
    """Train from ``init`` under ``rule``; return test accuracy and the early and late angles."""
    base = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    base.load_state_dict(init)
    net = base if rule == "bp" else feedback.convert(base, mode=rule, seed=SEED)
    opt = torch.optim.Adam(net.parameters(), lr=LR)  # shared parameters: base's optimizer works too
    order = torch.Generator().manual_seed(SEED)  # the same data order for every rule
    angles = []
    for epoch in range(EPOCHS):
        for idx in torch.randperm(len(x_tr), generator=order).split(BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
        if epoch in (0, EPOCHS - 1):
            angles.append(hidden_angle(net, rule))
    with torch.no_grad():
        accuracy = (net(x_te).argmax(1) == y_te).float().mean().item()
    return accuracy, *angles


print(f"MLP 64-64-10 tanh on digits, Adam lr={LR}, {EPOCHS} epochs, batch {BATCH}, seed {SEED}")
print(f"{'rule':<6} {'test acc':>8} {'angle ep 1':>11} {f'angle ep {EPOCHS}':>12}")
for rule in ("bp", "fa", "dfa", "sign", "noise"):
    accuracy, early, late = train(rule)
    print(f"{rule:<6} {100 * accuracy:>7.1f}% {early:>10.1f}° {late:>11.1f}°")
