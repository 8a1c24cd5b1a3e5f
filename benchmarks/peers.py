"""Peer baselines for evograd's benchmark: EvoTorch PGPE/SNES, EvoX OpenES, pycma sep-CMA, and an Adam reference.

Every peer trains exactly evograd's model on exactly evograd's task, and is charged in the same units:

* supervised tasks (``digits``, ``mnist1d``): minibatch fitness, one minibatch per generation shared by all
  members, drawn by the same seeded stream as ``evograd.compare`` (``torch.Generator`` seeded ``10_007 + seed``,
  indices with replacement); cost = members x batch samples forward-pass equivalents (FE); the Adam reference
  pays 3 FE per sample (forward + backward);
* episodic tasks (``cartpole``, ``pendulum``): cost = every environment step of every training episode; the
  centre is judged on evograd's 10 test episodes (seeds 10,000-10,009), which are not charged.

The peers run their own algorithm code at their own documented settings (``RECOMMENDED``); only the fitness
function is ours. It scores a whole population at once (batched matrix products; the RL environments are
vectorised numpy replicas of gymnasium's CartPole-v1 and Pendulum-v1, checked against gymnasium by
``benchmarks/peers_check.py``), so a run costs seconds to minutes on one core. Observation normalisation, where enabled,
has the arithmetic of EvoTorch's ``RunningNorm`` (the class its ``GymNE`` uses) and is updated with every
training observation.

Peers are benchmark-only: this file runs in its own virtualenv and is never imported by evograd or its tests.
evograd itself is only read (``evograd.tasks``: data, models, the test metric): put this checkout on
``PYTHONPATH``. ``benchmarks/peers_check.py`` checks the environment replicas and the normaliser.

Two things differ from ``evograd compare`` and are kept so the figures in ``benchmarks/RESULTS.rst`` reproduce:
the minibatch stream is the one ``evograd compare`` used when the peers were measured (a generator seeded
``10_007 + seed``; evograd's harness now derives its stream seeds by hashing, which draws different batches of
the same distribution), and mnist1d is the mnist1d paper's MLP 40-100-100-10 on the package's own split
(``--set hidden=64`` gives evograd's task model).

Environment (its own virtualenv; torch first, from the CPU wheel, so pip keeps it)::

    python3 -m venv peers-venv && . peers-venv/bin/activate
    pip install torch==2.13.0 && pip install evotorch==0.6.1 evox==1.4.0 cma==4.5.0 gymnasium scikit-learn mnist1d

Usage (one run per seed, one JSON line per run)::

    PYTHONPATH=. python benchmarks/peers.py run --peer evotorch-pgpe --task cartpole --seeds 0-9 \\
        --set popsize=20 --out peers/cartpole.jsonl
    python benchmarks/peers.py table peers/cartpole.jsonl
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import importlib.metadata
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# ----------------------------------------------------------------------------------------------
# tasks: evograd's data and models, a batched population fitness, a test metric


@dataclasses.dataclass
class Meter:
    """What a run has spent (FE or env steps) and how many fitness calls (generations) it made."""

    cost: int = 0
    calls: int = 0


@dataclasses.dataclass
class Bench:
    """One task as the peers see it.

    Attributes:
        name: task name.
        model: evograd's model for the seed (its parameters are the starting centre).
        fitness: ``fitness(pop (P, D)) -> (P,)`` losses, lower is better; charges ``meter``.
        test: ``test(center (D,)) -> float``, the task's test metric of the centre (not charged).
        confirm: an authoritative re-measurement used when ``test`` claims the target (or None).
        meter: the cost counter.
        budget, target, unit: the run's cap, the metric value to reach (None: report the curve only), and
            the cost unit's name.
        train_batch: ``() -> (x, y)``, the next minibatch (supervised tasks; for the Adam reference).
    """

    name: str
    model: nn.Sequential
    fitness: Callable[[torch.Tensor], torch.Tensor]
    test: Callable[[torch.Tensor], float]
    confirm: Callable[[torch.Tensor], float] | None
    meter: Meter
    budget: int
    target: float | None
    unit: str
    train_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None


def _layers(model: nn.Sequential) -> list[tuple[int, int]]:
    """(in, out) of each Linear of an MLP whose hidden activations are Tanh, checking that shape.

    A leading ``ObservationNorm`` (evograd's policies carry one, with no parameters) is left out: the peers
    normalise observations themselves (``ObsNorm``).
    """
    from evograd.tasks import ObservationNorm

    layers = [m for m in model if not isinstance(m, ObservationNorm)]
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    acts = [m for m in layers if not isinstance(m, nn.Linear)]
    if len(linears) != len(acts) + 1 or any(not isinstance(a, nn.Tanh) for a in acts):
        raise ValueError(f"model {model} is not a Linear/Tanh MLP")
    return [(m.in_features, m.out_features) for m in linears]


def population_forward(layers: list[tuple[int, int]], pop: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The MLP output of every member: ``pop`` (P, D) flat parameters in ``nn.Sequential`` order.

    ``x`` is (B, in) shared by all members or (P, B, in) per member; returns (P, B, out).
    """
    n, offset = len(pop), 0
    h = x
    for i, (n_in, n_out) in enumerate(layers):
        w = pop[:, offset : offset + n_in * n_out].reshape(n, n_out, n_in)  # (P, out, in)
        offset += n_in * n_out
        b = pop[:, offset : offset + n_out]  # (P, out)
        offset += n_out
        h = torch.matmul(h, w.transpose(1, 2)) + b[:, None, :]  # (P, B, out)
        if i < len(layers) - 1:
            h = torch.tanh(h)
    return h


def flat_parameters(model: nn.Module) -> torch.Tensor:
    return nn.utils.parameters_to_vector(model.parameters()).detach().clone()


def with_parameters(model: nn.Module, center: torch.Tensor) -> nn.Module:
    nn.utils.vector_to_parameters(center.detach().to(torch.float32), model.parameters())
    return model


def minibatches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
    """evograd.compare's stream: ``randint`` indices with replacement from a generator seeded 10_007 + seed."""
    gen = torch.Generator().manual_seed(10_007 + seed)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, len(x), (batch_size,), generator=gen)
        return x[index], y[index]

    return draw


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).double().mean())


def supervised(name: str, seed: int, s: dict) -> Bench:
    """digits (evograd.tasks.TASKS['digits']) or mnist1d (the mnist1d package's standard 4,000/1,000 split)."""
    import evograd.tasks as T

    if name == "digits":
        task = T.TASKS["digits"]()
        split, model = task.split, task.make_model(seed)
        budget, target = 5_000_000, task.target
    else:
        from mnist1d.data import get_dataset_args, make_dataset

        data = make_dataset(get_dataset_args())  # generated locally (seed 42); nothing is downloaded
        split = T.Split(
            torch.as_tensor(data["x"], dtype=torch.float32),
            torch.as_tensor(data["y"], dtype=torch.int64),
            torch.as_tensor(data["x_test"], dtype=torch.float32),
            torch.as_tensor(data["y_test"], dtype=torch.int64),
        )
        hidden = tuple(int(h) for h in str(s.get("hidden", "100,100")).split(","))
        model = T.mlp((40, *hidden, 10), seed=seed)
        budget, target = 20_000_000, None
    layers, meter = _layers(model), Meter()
    draw = minibatches(split.train_x, split.train_y, int(s.get("batch_size", 128)), seed)
    probe = T.mlp(tuple([layers[0][0]] + [o for _, o in layers]), seed=0)

    def fitness(pop: torch.Tensor) -> torch.Tensor:
        pop = pop.as_subclass(torch.Tensor)  # EvoTorch hands read-only tensors: skip their dispatch overhead
        x, y = draw()
        with torch.no_grad():
            logits = population_forward(layers, pop.to(torch.float32), x)  # (P, B, C)
            # (P, C, B) layout: the fast cross-entropy kernel on this CPU (benchmarks/RESULTS.rst, "Throughput")
            loss = F.cross_entropy(logits.transpose(1, 2), y.expand(len(pop), -1), reduction="none").mean(1)
        meter.cost += len(pop) * len(x)
        meter.calls += 1
        return loss

    def test(center: torch.Tensor) -> float:
        return _accuracy(with_parameters(probe, center), split.test_x, split.test_y)

    return Bench(name, model, fitness, test, None, meter, budget, target, "FE", train_batch=draw)


# ---- episodic tasks: vectorised replicas of gymnasium's classic-control dynamics


class CartPoleBatch:
    """gymnasium CartPole-v1 (euler integrator, 500-step limit), ``n`` copies stepped at once in float64."""

    obs_dim, act_dim, max_steps = 4, 2, 500
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    theta_threshold, x_threshold = 12 * 2 * math.pi / 360, 2.4

    def reset(self, states: np.ndarray) -> np.ndarray:
        self.state = np.array(states, dtype=np.float64)  # (n, 4)
        return self.state.astype(np.float32)

    @staticmethod
    def initial_states(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(-0.05, 0.05, size=(n, 4))

    @staticmethod
    def action(out: np.ndarray) -> np.ndarray:
        return out.argmax(-1)  # (n,) in {0, 1}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, x_dot, theta, theta_dot = self.state.T
        total_mass, polemass_length = self.masspole + self.masscart, self.masspole * self.length
        force = np.where(action == 1, self.force_mag, -self.force_mag)
        costheta, sintheta = np.cos(theta), np.sin(theta)
        temp = (force + polemass_length * np.square(theta_dot) * sintheta) / total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * np.square(costheta) / total_mass)
        )
        xacc = temp - polemass_length * thetaacc * costheta / total_mass
        x, x_dot = x + self.tau * x_dot, x_dot + self.tau * xacc
        theta, theta_dot = theta + self.tau * theta_dot, theta_dot + self.tau * thetaacc
        self.state = np.stack([x, x_dot, theta, theta_dot], axis=1)
        terminated = (np.abs(x) > self.x_threshold) | (np.abs(theta) > self.theta_threshold)
        return self.state.astype(np.float32), np.ones(len(x)), terminated


class PendulumBatch:
    """gymnasium Pendulum-v1 (g = 10, 200-step limit), torque ``2 tanh(output)`` as in evograd.tasks.pendulum."""

    obs_dim, act_dim, max_steps = 3, 1, 200
    g, m, l, dt, max_speed, max_torque = 10.0, 1.0, 1.0, 0.05, 8.0, 2.0

    def reset(self, states: np.ndarray) -> np.ndarray:
        self.state = np.array(states, dtype=np.float64)  # (n, 2): theta, theta_dot
        return self._obs()

    @staticmethod
    def initial_states(rng: np.random.Generator, n: int) -> np.ndarray:
        high = np.array([math.pi, 1.0])
        return rng.uniform(-high, high, size=(n, 2))

    @staticmethod
    def action(out: np.ndarray) -> np.ndarray:
        return (2.0 * np.tanh(out))[:, 0]  # (n,) float32

    def _obs(self) -> np.ndarray:
        th, thdot = self.state.T
        return np.stack([np.cos(th), np.sin(th), thdot], axis=1).astype(np.float32)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        th, thdot = self.state.T
        u = np.clip(action, -self.max_torque, self.max_torque)
        costs = (((th + np.pi) % (2 * np.pi)) - np.pi) ** 2 + 0.1 * thdot**2 + 0.001 * (u**2)
        newthdot = thdot + (3 * self.g / (2 * self.l) * np.sin(th) + 3.0 / (self.m * self.l**2) * u) * self.dt
        newthdot = np.clip(newthdot, -self.max_speed, self.max_speed)
        self.state = np.stack([th + newthdot * self.dt, newthdot], axis=1)
        return self._obs(), -costs, np.zeros(len(th), dtype=bool)


ENVS = {"cartpole": ("CartPole-v1", CartPoleBatch), "pendulum": ("Pendulum-v1", PendulumBatch)}
TEST_SEEDS = range(10_000, 10_010)  # evograd.tasks: the centre's 10 test episodes


class ObsNorm:
    """Observation normalisation with the arithmetic of EvoTorch's ``RunningNorm`` (the class ``GymNE`` uses).

    float32 running sum, sum of squares and count; mean = sum / count; variance = E[x^2] - mean^2 clamped
    below at 1e-2 (``min_variance``, as Salimans et al. 2017); no clipping. Kept in numpy because a rollout
    updates it at every step of a whole population and torch's per-call overhead dominated
    (``benchmarks/peers_check.py`` checks it against ``RunningNorm``).
    """

    min_variance = 1e-2

    def __init__(self, dim: int):
        self.sum = np.zeros(dim, dtype=np.float32)
        self.sum_of_squares = np.zeros(dim, dtype=np.float32)
        self.count = 0

    def update(self, x: np.ndarray, mask: np.ndarray) -> None:
        rows = x[mask]  # (n, dim) float32
        self.sum += rows.sum(0)
        self.sum_of_squares += np.square(rows).sum(0)
        self.count += len(rows)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.sum / np.float32(self.count)
        variance = np.maximum(self.sum_of_squares / np.float32(self.count) - np.square(mean), self.min_variance)
        return mean, np.sqrt(variance).astype(np.float32)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        if self.count == 0:  # GymNE passes observations through until stats exist
            return x
        mean, stdev = self.stats()
        return (x - mean) / stdev

    def layer(self) -> nn.Module:
        """The same normalisation as a module in front of a policy (what ``GymNE.to_policy`` adds)."""
        mean, stdev = (torch.as_tensor(a) for a in self.stats())

        class Normalize(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return (x - mean) / stdev

        return Normalize()


def _numpy_layers(layers: list[tuple[int, int]], pop: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-member (W (P, in, out), b (P, 1, out)) float32 arrays from flat ``nn.Sequential``-ordered parameters."""
    flat, offset, out = pop.detach().to(torch.float32).numpy(), 0, []
    for n_in, n_out in layers:
        w = flat[:, offset : offset + n_in * n_out].reshape(len(flat), n_out, n_in).transpose(0, 2, 1)
        offset += n_in * n_out
        out.append((np.ascontiguousarray(w), flat[:, None, offset : offset + n_out]))
        offset += n_out
    return out


def rollout(env, layers, pop: torch.Tensor, states: np.ndarray, episodes: int, norm=None, update: bool = True):
    """Run ``episodes`` episodes per member in lock-step; returns (mean return per member (P,), env steps).

    ``states`` (P * episodes, ...) are the initial states. With ``norm`` (an ``ObsNorm``), every observation
    the environments return (the reset one and each step's, as ``GymNE`` does) updates the stats when
    ``update`` is set, and the policy sees it normalised.
    """
    n_pop, weights = len(pop), _numpy_layers(layers, pop)
    obs = env.reset(states)
    alive = np.ones(len(states), dtype=bool)
    total, steps = np.zeros(len(states)), 0
    for _ in range(env.max_steps):
        if norm is not None:
            if update:
                norm.update(obs, alive)
            obs = norm.normalize(obs)
        h = obs.reshape(n_pop, episodes, -1)  # (P, E, obs)
        for i, (w, b) in enumerate(weights):
            h = np.matmul(h, w) + b  # (P, E, out)
            if i < len(weights) - 1:
                h = np.tanh(h)
        obs, reward, terminated = env.step(env.action(h.reshape(len(states), -1)))
        total += np.where(alive, reward, 0.0)
        steps += int(alive.sum())
        alive &= ~terminated
        if not alive.any():
            break
    if norm is not None and update and alive.any():
        norm.update(obs, alive)  # the final (truncated) observation
    return torch.as_tensor(total.reshape(n_pop, episodes).mean(1)), steps


def episodic(name: str, seed: int, s: dict) -> Bench:
    """CartPole-v1 (policy 4-16-2, arg-max) or Pendulum-v1 (policy 3-16-1, torque 2 tanh) from evograd.tasks."""
    import gymnasium

    import evograd.tasks as T

    task = T.TASKS[name]()
    env_id, env_cls = ENVS[name]
    model, meter = task.make_model(seed), Meter()
    layers = _layers(model)
    env, episodes = env_cls(), int(s.get("episodes", 1))
    rng = np.random.default_rng(1_000_003 + seed)
    norm = ObsNorm(env.obs_dim) if s.get("obs_norm", True) else None
    test_env = gymnasium.make(env_id)
    test_states = []
    for test_seed in TEST_SEEDS:  # gymnasium's own initial states of the 10 test episodes
        test_env.reset(seed=test_seed)
        test_states.append(np.array(test_env.unwrapped.state, dtype=np.float64))
    test_states = np.stack(test_states)
    test_env.close()

    def fitness(pop: torch.Tensor) -> torch.Tensor:
        pop = pop.as_subclass(torch.Tensor)  # EvoTorch hands read-only tensors
        states = env.initial_states(rng, len(pop) * episodes)
        returns, steps = rollout(env, layers, pop, states, episodes, norm)
        meter.cost += steps
        meter.calls += 1
        return -returns.to(torch.float32)

    def test(center: torch.Tensor) -> float:
        returns, _ = rollout(env_cls(), layers, center[None], test_states, len(test_states), norm, update=False)
        return float(returns[0])

    def confirm(center: torch.Tensor) -> float:
        """evograd's own metric on gymnasium itself (the policy behind the current normalisation)."""
        policy = with_parameters(T.mlp(tuple([layers[0][0]] + [o for _, o in layers]), seed=0), center)
        if norm is not None and norm.count > 0:
            policy = nn.Sequential(norm.layer(), policy)
        return task.metric(policy)

    budget = {"cartpole": 200_000, "pendulum": 3_000_000}[name]
    return Bench(name, model, fitness, test, confirm, meter, budget, task.target, "env steps")


def make_bench(name: str, seed: int, s: dict) -> Bench:
    if name in ("digits", "mnist1d"):
        return supervised(name, seed, s)
    if name in ENVS:
        return episodic(name, seed, s)
    raise ValueError(f"task={name!r} is unknown; allowed digits, mnist1d, cartpole, pendulum")


# ----------------------------------------------------------------------------------------------
# peers: each is a generator of centres, one per generation, driving the peer's own code


def _center_init(bench: Bench, s: dict) -> torch.Tensor:
    x0 = flat_parameters(bench.model)
    return torch.zeros_like(x0) if s.get("init", "model") == "zeros" else x0


def _evotorch_problem(bench: Bench, seed: int):
    from evotorch import Problem

    return Problem(
        "min",
        bench.fitness,
        solution_length=len(flat_parameters(bench.model)),
        initial_bounds=(-1.0, 1.0),
        vectorized=True,
        dtype=torch.float32,
        seed=seed,
    )  # num_actors=None: evaluated in this process, ray is never started


def _spread(s: dict) -> dict:
    """EvoTorch's initial spread: ``radius_init`` (norm of the stdev vector) or ``stdev_init``, not both."""
    if s.get("stdev_init") is not None:
        return {"stdev_init": float(s["stdev_init"])}
    return {"radius_init": float(s["radius_init"])}


def evotorch_pgpe(bench: Bench, s: dict, seed: int) -> Iterator[torch.Tensor]:
    """EvoTorch's PGPE (object API), ClipUp or Adam centre optimizer."""
    from evotorch.algorithms import PGPE

    optimizer_config = {"max_speed": float(s["max_speed"])} if s["optimizer"] == "clipup" else {}
    if s["optimizer"] == "clipup" and s.get("momentum") is not None:
        optimizer_config["momentum"] = float(s["momentum"])
    searcher = PGPE(
        _evotorch_problem(bench, seed),
        popsize=int(s["popsize"]),
        center_learning_rate=float(s["center_lr"]),
        stdev_learning_rate=float(s["stdev_lr"]),
        stdev_max_change=s.get("stdev_max_change"),
        optimizer=s["optimizer"],
        optimizer_config=optimizer_config,
        ranking_method=s.get("ranking"),
        center_init=_center_init(bench, s),
        symmetric=True,
        **_spread(s),
    )
    while True:
        searcher.step()
        yield searcher.status["center"].clone()


def evotorch_snes(bench: Bench, s: dict, seed: int) -> Iterator[torch.Tensor]:
    """EvoTorch's SNES (object API); unset settings keep EvoTorch's defaults (popsize 4 + 3 ln D, ...)."""
    from evotorch.algorithms import SNES

    keys = {"popsize": int, "center_lr": float, "stdev_lr": float}
    names = {"popsize": "popsize", "center_lr": "center_learning_rate", "stdev_lr": "stdev_learning_rate"}
    extra = {names[k]: cast(s[k]) for k, cast in keys.items() if s.get(k) is not None}
    searcher = SNES(
        _evotorch_problem(bench, seed),
        center_init=_center_init(bench, s),
        ranking_method=s.get("ranking", "nes"),
        **_spread(s),
        **extra,
    )
    while True:
        searcher.step()
        yield searcher.status["center"].clone()


def evox_openes(bench: Bench, s: dict, seed: int) -> Iterator[torch.Tensor]:
    """EvoX's OpenES through its StdWorkflow; ``rank=True`` adds centred-rank fitness shaping (OpenAI ES)."""
    from evox.algorithms import OpenES
    from evox.core import Problem
    from evox.workflows import StdWorkflow

    class Fitness(Problem):
        def evaluate(self, pop: torch.Tensor) -> torch.Tensor:
            return bench.fitness(pop)

    class CenteredRanks(nn.Module):
        def forward(self, f: torch.Tensor) -> torch.Tensor:
            ranks = torch.empty_like(f)
            ranks[f.argsort()] = torch.arange(len(f), dtype=f.dtype)
            return ranks / (len(f) - 1) - 0.5  # (P,) in [-0.5, 0.5], best (lowest loss) -0.5

    torch.manual_seed(seed)  # EvoX samples from torch's global generator
    algorithm = OpenES(
        pop_size=int(s["popsize"]),
        center_init=_center_init(bench, s),
        learning_rate=float(s["lr"]),
        noise_stdev=float(s["sigma"]),
        optimizer=s.get("optimizer", "adam"),
        mirrored_sampling=True,
    )
    workflow = StdWorkflow(
        algorithm, Fitness(), opt_direction="min", fitness_transform=CenteredRanks() if s.get("rank") else None
    )
    workflow.init_step()
    yield algorithm.center.detach().clone()
    while True:
        workflow.step()
        yield algorithm.center.detach().clone()


def cma_sep(bench: Bench, s: dict, seed: int) -> Iterator[torch.Tensor]:
    """pycma's CMA-ES with ``CMA_diagonal=True`` (sep-CMA-ES, linear time and memory)."""
    import cma

    options = {"CMA_diagonal": True, "seed": seed + 1, "verbose": -9}  # seed 0 would mean "from the clock"
    if s.get("popsize") is not None:
        options["popsize"] = int(s["popsize"])
    es = cma.CMAEvolutionStrategy(_center_init(bench, s).double().numpy(), float(s["sigma0"]), options)
    while True:
        xs = es.ask()
        losses = bench.fitness(torch.as_tensor(np.array(xs), dtype=torch.float32))
        es.tell(xs, losses.double().tolist())
        yield torch.as_tensor(es.mean, dtype=torch.float32)


def adam_reference(bench: Bench, s: dict, seed: int) -> Iterator[torch.Tensor]:
    """Backprop with torch.optim.Adam on the same minibatch stream (3 FE per sample), as evograd.compare's adam."""
    model = bench.model
    optimizer = torch.optim.Adam(model.parameters(), lr=float(s["lr"]), weight_decay=float(s["weight_decay"]))
    while True:
        x, y = bench.train_batch()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        bench.meter.cost += 3 * len(x)
        bench.meter.calls += 1
        yield flat_parameters(model)


PEERS: dict[str, Callable[[Bench, dict, int], Iterator[torch.Tensor]]] = {
    "evotorch-pgpe": evotorch_pgpe,
    "evotorch-snes": evotorch_snes,
    "evox-openes": evox_openes,
    "cma-sep": cma_sep,
    "adam": adam_reference,
}

LIBRARIES = {
    "evotorch-pgpe": ["evotorch.algorithms"],
    "evotorch-snes": ["evotorch.algorithms"],
    "evox-openes": ["evox.algorithms", "evox.workflows"],
    "cma-sep": ["cma"],
    "adam": [],
}

# Settings each peer's own examples and docs recommend (sources: benchmarks/RESULTS.rst, "Peers");
# supervised and episodic differ.
_PGPE_RL = {  # EvoTorch's nnaisense/evotorch/examples/notebooks/Functional_API/problem.ipynb (CartPole-v1, GymNE)
    "popsize": 100,
    "optimizer": "clipup",
    "max_speed": 0.15,
    "center_lr": 0.1125,
    "radius_init": 2.25,
    "stdev_lr": 0.1,
    "stdev_max_change": 0.2,
    "ranking": "centered",
    "obs_norm": True,
    "episodes": 1,
}
_PGPE_SL = {  # EvoTorch's nnaisense/evotorch/examples/notebooks/Training_MNIST30K.ipynb (popsize 3200 there)
    "popsize": 200,
    "optimizer": "adam",
    "center_lr": 0.01,
    "radius_init": 2.25,
    "stdev_lr": 0.1,
    "stdev_max_change": 0.2,
    "ranking": None,
    "batch_size": 128,
}
RECOMMENDED: dict[str, dict[str, dict]] = {
    "evotorch-pgpe": {"supervised": _PGPE_SL, "episodic": _PGPE_RL},
    "evotorch-snes": {  # SNES defaults (popsize 4 + 3 ln D, center lr 1, nes ranking); stdev 1 as in MNIST30K
        "supervised": {"stdev_init": 1.0, "batch_size": 128},
        "episodic": {"radius_init": 2.25, "obs_norm": True, "episodes": 1},
    },
    "evox-openes": {  # EvoX's EMI-Group/evox/benchmarks/benchmark_virtual_lora_es.py: pop 64, sigma 0.1, Adam lr 0.01
        "supervised": {"popsize": 64, "sigma": 0.1, "lr": 0.01, "optimizer": "adam", "rank": False, "batch_size": 128},
        "episodic": {
            "popsize": 64,
            "sigma": 0.1,
            "lr": 0.01,
            "optimizer": "adam",
            "rank": False,
            "obs_norm": True,
            "episodes": 1,
        },
    },
    "cma-sep": {  # pycma: CMA_diagonal=True, default popsize; sigma0 ~ the weights' scale (benchmarks/RESULTS.rst)
        "supervised": {"sigma0": 0.1, "batch_size": 128},
        "episodic": {"sigma0": 0.1, "obs_norm": True, "episodes": 1},
    },
    "adam": {"supervised": {"lr": 3e-3, "weight_decay": 1e-3, "batch_size": 128}},  # evograd.compare's adam
}


# ----------------------------------------------------------------------------------------------
# driver


def run(peer: str, task: str, seed: int, s: dict, budget: int | None, to_budget: bool, eval_every: int) -> dict:
    """One peer on one task and seed: the test metric after every ``eval_every`` generations, until the target
    is reached (unless ``to_budget``) or the budget is spent. The target's crossing is confirmed on gymnasium
    itself (evograd's metric) for episodic tasks."""
    torch.manual_seed(seed)
    bench = make_bench(task, seed, s)
    for module in LIBRARIES[peer]:  # import before the clock starts (EvoTorch's import alone takes seconds)
        importlib.import_module(module)
    budget = budget or bench.budget
    curve = [(0, bench.test(flat_parameters(bench.model)))]
    hit, start, generations = None, time.perf_counter(), 0
    test_seconds, confirmations = 0.0, []
    for center in PEERS[peer](bench, s, seed):
        generations += 1
        if not torch.isfinite(center).all():
            curve.append((bench.meter.cost, float("nan")))
            break
        last = bench.meter.cost >= budget
        if generations % eval_every == 0 or last:
            t0 = time.perf_counter()
            score = bench.test(center)
            if bench.target is not None and hit is None and score >= bench.target and bench.confirm is not None:
                replica, score = score, bench.confirm(center)  # authoritative: evograd's metric on gymnasium
                confirmations.append((bench.meter.cost, replica, score))
            test_seconds += time.perf_counter() - t0
            curve.append((bench.meter.cost, score))
            if bench.target is not None and hit is None and score >= bench.target:
                hit = bench.meter.cost
                if not to_budget:
                    break
        if last:
            break
    return {
        "peer": peer,
        "task": task,
        "seed": seed,
        "settings": s,
        "unit": bench.unit,
        "budget": budget,
        "target": bench.target,
        "cost_to_target": hit,
        "final": curve[-1][1],
        "best": max(v for _, v in curve if not math.isnan(v)),
        "cost": bench.meter.cost,
        "generations": generations,
        "wall_s": round(time.perf_counter() - start - test_seconds, 2),
        "test_s": round(test_seconds, 2),
        "curve": curve,
        "confirmations": confirmations,  # (cost, replica's test metric, gymnasium's) where the replica hit
    }


def versions() -> dict[str, str]:
    names = ["torch", "evotorch", "evox", "cma", "gymnasium", "numpy", "scikit-learn", "mnist1d"]
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def parse_seeds(text: str) -> list[int]:
    """'0-2' -> [0, 1, 2]; '0,3,5' -> [0, 3, 5]."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    return seeds


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def settings_for(peer: str, task: str, overrides: list[str]) -> dict:
    kind = "supervised" if task in ("digits", "mnist1d") else "episodic"
    if kind not in RECOMMENDED[peer]:
        raise ValueError(f"peer {peer!r} has no setting for {kind} tasks")
    s = dict(RECOMMENDED[peer][kind])
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r} must be KEY=VALUE")
        s[key] = parse_value(value)
    return s


# ----------------------------------------------------------------------------------------------
# tables


def _fmt(cost) -> str:
    if cost is None:
        return "-"
    return f"{cost / 1e6:.2f}M" if cost >= 1e6 else f"{cost / 1e3:.1f}k"


def _load(paths: list[str]) -> dict[tuple, list[dict]]:
    """Runs grouped by (task, peer, settings, budget), seeds sorted."""
    rows: dict[tuple, list[dict]] = {}
    for path in paths:
        with open(path) as handle:
            for line in handle:
                r = json.loads(line)
                key = (r["task"], r["peer"], json.dumps(r["settings"], sort_keys=True), r["budget"])
                rows.setdefault(key, []).append(r)
    for runs in rows.values():
        runs.sort(key=lambda r: r["seed"])
    return rows


def _median_cost(runs: list[dict]) -> float:
    """Median cost to target over all seeds, an unsolved seed counting as infinitely expensive."""
    return statistics.median([r["cost_to_target"] if r["cost_to_target"] is not None else math.inf for r in runs])


def _row(task: str, peer: str, settings: str, runs: list[dict], label: str = "") -> str:
    hits = [r["cost_to_target"] for r in runs]
    med = _median_cost(runs)
    med_text = _fmt(med) if math.isfinite(med) else "-"
    finals = " ".join(f"{r['final']:.3g}" for r in runs)
    setting_text = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in json.loads(settings).items()
    )
    wall = statistics.median(r["wall_s"] for r in runs)
    solved = sum(h is not None for h in hits)
    return (
        f"| {task} | {peer}{label} | {setting_text} | {' '.join(_fmt(h) for h in hits)} | {med_text} "
        f"({solved}/{len(runs)}) | {finals} | {wall:.0f} |"
    )


_HEADER = [
    "| task | peer | settings | to target per seed | median (solved) | final per seed | wall s (median) |",
    "|---|---|---|---|---|---|---|",
]


def table(paths: list[str]) -> str:
    """A markdown table, one row per (task, peer, settings): per-seed cost to target, median, finals, wall."""
    rows = _load(paths)
    return "\n".join(_HEADER + [_row(t, p, s, runs) for (t, p, s, _), runs in sorted(rows.items())])


def best(paths: list[str]) -> str:
    """Per task and peer: the recommended setting's row and the best row found (lowest median cost to target,
    ties and target-less tasks broken by the median final score); only settings run on the most seeds count."""
    rows = _load(paths)
    out = list(_HEADER)
    for task, peer in sorted({(t, p) for t, p, _, _ in rows}):
        group = {s: runs for (t, p, s, _), runs in rows.items() if (t, p) == (task, peer)}
        most = max(len(runs) for runs in group.values())
        kind = "supervised" if task in ("digits", "mnist1d") else "episodic"
        recommended = json.dumps(RECOMMENDED[peer][kind], sort_keys=True)
        if recommended in group:
            out.append(_row(task, peer, recommended, group[recommended], " (recommended)"))
        full = {s: runs for s, runs in group.items() if len(runs) == most}
        top = min(full, key=lambda s: (_median_cost(full[s]), -statistics.median(r["final"] for r in full[s])))
        out.append(_row(task, peer, top, full[top], " (best found)"))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one peer on one task for some seeds; one JSON line per seed")
    r.add_argument("--peer", choices=sorted(PEERS), required=True)
    r.add_argument("--task", choices=["digits", "mnist1d", "cartpole", "pendulum"], required=True)
    r.add_argument("--seeds", default="0-2", help="e.g. 0-2 or 0,4")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    r.add_argument("--budget", type=int, default=None, help="cost cap (default: the task's)")
    r.add_argument("--to-budget", action="store_true", help="keep going after the target, to report the final")
    r.add_argument("--eval-every", type=int, default=1, help="generations between test measurements")
    r.add_argument("--out", required=True, help="JSON-lines file to append to")
    t = sub.add_parser("table", help="markdown table of JSON-lines results")
    t.add_argument("paths", nargs="+")
    t.add_argument("--best", action="store_true", help="only each peer's recommended and best-found rows")
    args = parser.parse_args(argv)
    if args.command == "table":
        print(best(args.paths) if args.best else table(args.paths))
        return
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    s = settings_for(args.peer, args.task, args.set)
    for seed in parse_seeds(args.seeds):
        result = run(args.peer, args.task, seed, s, args.budget, args.to_budget, args.eval_every)
        result["versions"] = versions()
        result["command"] = " ".join(sys.argv)
        with open(args.out, "a") as handle:
            handle.write(json.dumps(result) + "\n")
        print(
            f"{args.peer} {args.task} seed {seed}: to target {_fmt(result['cost_to_target'])} {result['unit']}, "
            f"final {result['final']:.4g}, best {result['best']:.4g}, {result['generations']} generations, "
            f"{result['wall_s']:.0f} s (+{result['test_s']:.0f} s testing)",
            flush=True,
        )


if __name__ == "__main__":
    main()
