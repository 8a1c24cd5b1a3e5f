"""Episodic tasks: gymnasium environments, whole populations of episodes in lockstep, observation normalization.

A policy is an ordinary torch module from observations to action scores (:func:`policy`: an
:class:`ObservationNorm` in front of an MLP). :class:`Environment` says how its outputs become
actions: the arg-max for discrete action spaces, ``tanh`` scaled to the box for continuous ones.
:class:`EpisodeEvaluator` is the :class:`~evograd.protocols.Evaluator` of episodic tasks: it runs
every episode of every member of a chunk in lockstep, one batched forward pass over all members
per environment step, and scores each member by its negated mean return (lower is better,
docs/design.rst contract 1). Its cost unit is the environment step (contract 8): every step of
every training episode is counted in ``fe``.

Three settings make evolution work on episodes (Salimans et al. 2017; Mania et al. 2018):

* ``episodes``: episodes per member, each from its own start state.
* fresh start states every generation, derived from ``(seed, generation)`` with
  :func:`evograd.noise.stream_seed` (:func:`episode_seeds`), so every MPI rank draws the same
  ones; an antithetic ± pair shares its start states (``share="pair"``), or the whole
  population does (``share="all"``).
* observation normalization (``obs_norm``): the policy's :class:`ObservationNorm` standardizes
  observations with the running mean and variance of every observation the training episodes
  met. Each member's episodes yield one row of statistics; the rows of a generation are merged in
  member order (:meth:`ObservationNorm.merge`), so the result is the same bit for bit whether one
  process or several MPI ranks scored the members (:class:`~evograd.protocols.StatisticsEvaluator`).

CartPole and Pendulum run on a numpy fast path (:mod:`evograd.tasks.classic`) equal to gymnasium
bit for bit; every other environment runs as gymnasium's own, one ``step`` call per environment.

References:
    Salimans, Ho, Chen, Sidor & Sutskever (2017), Evolution strategies as a scalable alternative to
    reinforcement learning (observation normalization, episodes per member).
    Mania, Guy & Recht (2018), Simple random search of static linear policies is competitive for
    reinforcement learning (a ± pair shares its start state; running state statistics).
    Chan, Golub & LeVeque (1979), Updating formulae and a pairwise algorithm for computing sample
    variances (the merge of partial statistics).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from evograd import flat, noise, validate
from evograd.evaluate import ChunkedEvaluator, model_lock
from evograd.shaping import finite_or_worst
from evograd.tasks import classic
from evograd.tasks.models import mlp

__all__ = [
    "SHARING",
    "TEST_SEEDS",
    "Environment",
    "VectorEnv",
    "environment",
    "policy",
    "policy_forward",
    "ObservationNorm",
    "episode_seeds",
    "EpisodeEvaluator",
    "mean_return",
]

#: Who shares start states within a generation: each antithetic ± pair, or every member.
SHARING = ("pair", "all")
#: Start seeds of the episodes that measure a policy (the test metric); never used for training.
TEST_SEEDS = range(10_000, 10_010)
_DEFAULT_MAX_STEPS = 1000  # the time limit of environments registered without one


def _gymnasium() -> Any:
    try:
        import gymnasium
    except ImportError as err:
        raise ImportError("the RL tasks need gymnasium: pip install 'evograd-torch[rl]'") from err
    return gymnasium


# ----------------------------------------------------------------------------------------------
# environments


class VectorEnv(Protocol):
    """``n`` environments of one kind, stepped by index (:mod:`evograd.tasks.classic`, gymnasium's)."""

    def reset(self, seeds: np.ndarray) -> np.ndarray:
        """Start one episode per seed, as ``env.reset(seed=s)`` does; (n, observations) observations."""
        ...

    def step(self, index: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step environments ``index``; their observations, (k,) rewards and (k,) ended (terminated or truncated)."""
        ...


@dataclasses.dataclass(frozen=True)
class Environment:
    """A gymnasium environment as a policy sees it: how many inputs and outputs, and how outputs act.

    Build one with :func:`environment`.

    Attributes:
        env_id: the gymnasium id, e.g. ``"CartPole-v1"``.
        observations: the policy's inputs: the flattened observation box, or ``n`` for a
            ``Discrete(n)`` observation, which is encoded one-hot.
        one_hot: whether observations are ``Discrete`` (encoded one-hot).
        actions: the policy's outputs: one score per action of a ``Discrete`` action space, one
            value per coordinate of a ``Box``.
        discrete: whether the action space is ``Discrete`` (action = arg-max of the outputs).
        action_start: the first action of a ``Discrete`` space.
        action_shape: the shape of a ``Box`` action.
        low, high: the bounds of a ``Box`` action, flattened (action = the box's centre plus its
            half-width times ``tanh`` of the outputs).
        action_dtype: the dtype of a ``Box`` action, e.g. ``"float32"``.
        max_steps: the time limit of an episode (the registered one, else 1,000).
        reward_threshold: the return at which gymnasium deems the task solved, if it says.
    """

    env_id: str
    observations: int
    one_hot: bool
    actions: int
    discrete: bool
    action_start: int = 0
    action_shape: tuple[int, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    action_dtype: str = "float32"
    max_steps: int = _DEFAULT_MAX_STEPS
    reward_threshold: float | None = None

    def act(self, out: torch.Tensor) -> np.ndarray:
        """Actions from ``(k, actions)`` policy outputs: ``(k,)`` integers, or ``(k, *action_shape)`` box values."""
        if self.discrete:
            return (out.argmax(-1) + self.action_start).cpu().numpy()
        low = torch.tensor(self.low, dtype=torch.float64)
        high = torch.tensor(self.high, dtype=torch.float64)
        centre, half = ((high + low) / 2).to(out), ((high - low) / 2).to(out)  # (actions,)
        action = centre + half * torch.tanh(out)  # (k, actions); 2·tanh for a symmetric box of half-width 2
        return action.cpu().numpy().astype(self.action_dtype, copy=False).reshape(len(out), *self.action_shape)

    def vector(self, *, fast: bool = True) -> VectorEnv:
        """A batch of these environments: the numpy fast path where one exists (and ``fast``), else gymnasium's."""
        if fast and self.env_id in classic.CLASSIC:
            cls, max_steps = classic.CLASSIC[self.env_id]
            return cls(max_steps)
        return _GymEnvs(self)


@functools.lru_cache(maxsize=64)
def environment(env_id: str) -> Environment:
    """The :class:`Environment` of gymnasium's ``env_id`` (made once to read its spaces and limits).

    Raises:
        ImportError: gymnasium is missing (install the ``rl`` extra), or the environment needs a
            package that is (gymnasium's message says which).
        ValueError: ``env_id`` is not a registered gymnasium environment, or its spaces are not
            ones a policy network can use (observations: ``Box`` or ``Discrete``; actions:
            ``Discrete`` or a bounded ``Box``).

    Examples:
        >>> env = environment("Pendulum-v1")
        >>> env.observations, env.actions, env.discrete, env.high, env.max_steps
        (3, 1, False, (2.0,), 200)
    """
    gymnasium = _gymnasium()
    spaces = gymnasium.spaces
    try:
        env = _make(gymnasium, env_id)
    except gymnasium.error.DependencyNotInstalled as err:
        raise ImportError(f"gym:{env_id} needs a package gymnasium lacks: {err}") from err
    except gymnasium.error.Error as err:
        message = " ".join(str(err).split())
        raise ValueError(f"task='gym:{env_id}' is unknown: {message}; e.g. gym:CartPole-v1, gym:Pendulum-v1") from err
    try:
        obs_space, act_space, spec = env.observation_space, env.action_space, env.spec
    finally:
        env.close()
    if isinstance(obs_space, spaces.Box):
        observations, one_hot = math.prod(obs_space.shape), False
    elif isinstance(obs_space, spaces.Discrete):
        observations, one_hot = int(obs_space.n), True
    else:
        raise ValueError(f"gym:{env_id} has observation space {obs_space}; allowed Box or Discrete observations")
    common = {
        "env_id": env_id,
        "observations": observations,
        "one_hot": one_hot,
        "max_steps": spec.max_episode_steps or _DEFAULT_MAX_STEPS,
        "reward_threshold": spec.reward_threshold,
    }
    if isinstance(act_space, spaces.Discrete):
        return Environment(actions=int(act_space.n), discrete=True, action_start=int(act_space.start), **common)
    if isinstance(act_space, spaces.Box) and act_space.is_bounded("both"):
        return Environment(
            actions=math.prod(act_space.shape),
            discrete=False,
            action_shape=tuple(act_space.shape),
            low=tuple(float(v) for v in act_space.low.reshape(-1)),
            high=tuple(float(v) for v in act_space.high.reshape(-1)),
            action_dtype=str(act_space.dtype),
            **common,
        )
    raise ValueError(f"gym:{env_id} has action space {act_space}; allowed Discrete or a bounded Box")


def _make(gymnasium: Any, env_id: str) -> Any:
    """``gymnasium.make(env_id)``, with a time limit of 1,000 steps if the environment registers none."""
    limit = gymnasium.spec(env_id).max_episode_steps
    return gymnasium.make(env_id, **({} if limit else {"max_episode_steps": _DEFAULT_MAX_STEPS}))


class _GymEnvs:
    """gymnasium's own environments, made once and kept, stepped one ``step`` call at a time."""

    def __init__(self, env: Environment) -> None:
        self.environment = env
        self.envs: list[Any] = []

    def _encode(self, observation: Any) -> np.ndarray:
        if self.environment.one_hot:
            return np.eye(self.environment.observations, dtype=np.float32)[int(observation)]
        return np.asarray(observation).reshape(-1)

    def reset(self, seeds: np.ndarray) -> np.ndarray:
        gymnasium = _gymnasium()
        while len(self.envs) < len(seeds):
            self.envs.append(_make(gymnasium, self.environment.env_id))
        return np.stack([self._encode(env.reset(seed=int(s))[0]) for env, s in zip(self.envs, seeds)])

    def step(self, index: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        observations, rewards, done = [], np.empty(len(index)), np.empty(len(index), dtype=bool)
        for j, i in enumerate(index.tolist()):
            action = int(actions[j]) if self.environment.discrete else actions[j]
            observation, reward, terminated, truncated, _ = self.envs[i].step(action)
            observations.append(self._encode(observation))
            rewards[j], done[j] = float(reward), terminated or truncated
        return np.stack(observations), rewards, done


# ----------------------------------------------------------------------------------------------
# policies


class ObservationNorm(nn.Module):
    """Standardizes observations with running statistics: ``clip((x - mean) / sqrt(var + eps), -clip, clip)``.

    The running count, mean and sum of squared deviations are float64 buffers, updated only by
    :meth:`merge` (never by ``forward``), so the module travels inside the policy: copies,
    ``state_dict`` and checkpoints carry it, and measuring a policy uses the statistics it was
    trained with. Until the first merge it is the identity, bit for bit.

    Args:
        dim: observation size.
        clip: normalized observations are clipped to [-clip, clip].
        eps: added to the variance, so a constant coordinate does not divide by zero.

    Examples:
        >>> norm = ObservationNorm(2)
        >>> bool((norm(torch.tensor([[3.0, -1.0]])) == torch.tensor([[3.0, -1.0]])).all())
        True
        >>> # two observations, [1, 10] and [3, 30]: count 2, mean [2, 20], squared deviations [2, 200]
        >>> norm.merge(torch.tensor([[2.0, 2.0, 20.0, 2.0, 200.0]], dtype=torch.float64))
        >>> norm.mean.tolist(), norm(torch.tensor([[3.0, 30.0]])).tolist()
        ([2.0, 20.0], [[1.0, 1.0]])
    """

    count: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor
    bound: torch.Tensor

    def __init__(self, dim: int, *, clip: float = 5.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.dim = validate.integer("dim", dim, low=1, high=2**40)
        self.clip = validate.real("clip", clip, low=0.0, low_open=True)
        self.eps = validate.real("eps", eps, low=0.0, low_open=True)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("shift", torch.zeros(dim))  # what forward applies, in the policy's dtype
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("bound", torch.tensor(math.inf))

    @property
    def width(self) -> int:
        """Floats in one row of statistics: the count, the mean and the sum of squared deviations."""
        return 1 + 2 * self.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) observations, normalized."""
        return ((x - self.shift) / self.scale).clamp(-self.bound, self.bound)

    @torch.no_grad()
    def merge(self, rows: torch.Tensor) -> None:
        """Fold (n, width) rows of statistics into the running ones, in row order (Chan et al. 1979).

        The order is the result: merging the same rows in the same order gives the same bits, so
        every MPI rank merges the whole population's rows in member order. Rows with a count of
        zero or a non-finite entry (a member whose policy produced NaN) are skipped: NaN never
        enters the statistics.

        Raises:
            ValueError: rows of the wrong width.
        """
        if rows.dim() != 2 or rows.shape[1] != self.width:
            raise ValueError(f"rows must be (n, {self.width}) statistics, got shape {tuple(rows.shape)}")
        dim, count = self.dim, float(self.count)
        mean, m2 = self.mean.cpu().clone(), self.m2.cpu().clone()  # merged on the host, whatever the policy's device
        for row in rows.to(torch.float64).cpu():
            n = float(row[0])
            if n <= 0 or not bool(torch.isfinite(row).all()):
                continue
            total = count + n
            delta = row[1 : 1 + dim] - mean  # (dim,)
            mean = mean + delta * (n / total)
            m2 = m2 + row[1 + dim :] + delta * delta * (count * n / total)
            count = total
        if count == 0:
            return
        self.count.fill_(count)
        self.mean.copy_(mean)
        self.m2.copy_(m2)
        self.shift.copy_(mean)
        self.scale.copy_((m2 / count + self.eps).sqrt())
        self.bound.fill_(self.clip)


def policy(env: Environment, hidden: tuple[int, ...] = (16,), *, seed: int = 0) -> nn.Sequential:
    """The policy network of ``env``: an :class:`ObservationNorm` (identity until statistics are merged), then an MLP.

    Examples:
        >>> policy(environment("CartPole-v1"), seed=0)
        Sequential(
          (0): ObservationNorm()
          (1): Linear(in_features=4, out_features=16, bias=True)
          (2): Tanh()
          (3): Linear(in_features=16, out_features=2, bias=True)
        )
    """
    return nn.Sequential(ObservationNorm(env.observations), *mlp((env.observations, *hidden, env.actions), seed=seed))


_ELEMENTWISE = (nn.Tanh, nn.ReLU, nn.Sigmoid, nn.Identity, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Softsign)

Forward = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
"""``forward(params, x) -> (c, n, outputs)``: ``c`` members' parameters (name -> (c, *shape), as
:func:`evograd.flat.stacked` gives them), each on its own (c, n, inputs) inputs."""


def policy_forward(model: nn.Module) -> Forward:
    """One forward pass of many members of ``model``, each with its own parameters and inputs.

    A ``nn.Sequential`` of ``nn.Linear`` layers (trainable weight and bias), elementwise
    activations and :class:`ObservationNorm` runs as one batched matrix product per layer
    (``torch.baddbmm``); any other model as ``torch.func.vmap`` over ``functional_call``, whose
    fixed cost (about 2 ms a call measured here, against 0.2 ms) would be most of an environment
    step of a small policy. Buffers and frozen parameters are the model's own, shared by every member.

    Examples:
        >>> net = mlp((3, 5, 2), seed=0)
        >>> params = flat.stacked(flat.flatten(net).repeat(4, 1), flat.layout_of(net))  # name -> (4, *shape)
        >>> out = policy_forward(net)(params, torch.ones(4, 7, 3))
        >>> out.shape, torch.allclose(out[2], net(torch.ones(7, 3)))
        (torch.Size([4, 7, 2]), True)
    """
    names = set(flat.layout_of(model).names)
    layers = list(model) if isinstance(model, nn.Sequential) else []
    linear = [str(i) for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
    batched = bool(layers) and all(isinstance(layer, (nn.Linear, ObservationNorm, *_ELEMENTWISE)) for layer in layers)
    if batched and names == {f"{i}.{p}" for i in linear for p in ("weight", "bias")}:

        def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            for i, layer in enumerate(layers):
                if isinstance(layer, nn.Linear):  # (c, n, in) @ (c, in, out) + (c, 1, out)
                    x = torch.baddbmm(params[f"{i}.bias"].unsqueeze(1), x, params[f"{i}.weight"].transpose(1, 2))
                else:
                    x = layer(x)
            return x

        return forward

    def forward_vmap(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        fixed = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        fixed.update(model.named_buffers())
        call = torch.func.functional_call
        return torch.func.vmap(lambda p, xi: call(model, {**p, **fixed}, (xi,)))(params, x)

    return forward_vmap


# ----------------------------------------------------------------------------------------------
# episodes


def episode_seeds(seed: int, generation: int, members: torch.Tensor, episodes: int, share: str = "pair") -> np.ndarray:
    """Start seeds of the episodes of one generation's members, from ``(seed, generation)`` alone.

    Each start seed is :func:`evograd.noise.stream_seed` of the run's ``seed``, stream
    ``"episodes"``, the ``generation``, the episode number and (with ``share="pair"``) the
    member's pair: a seed ``s >= 0`` and its antithetic mirror ``~s`` share their start states,
    the parent (:data:`evograd.noise.PARENT_SEED`) has its own. With ``share="all"`` every member
    of the generation starts from the same states (common random numbers). A member's start
    states depend on nothing else (not on its position, its chunk or its MPI rank), so every rank
    draws the same ones; every generation draws fresh ones.

    Args:
        seed: the run's seed.
        generation: the generation (episode sets drawn so far).
        members: (n,) int64 member seeds, as ``strategy.ask`` returns them.
        episodes: episodes per member, >= 1.
        share: ``"pair"`` or ``"all"``.

    Returns:
        (n, episodes) int64 start seeds, in [0, 2**63).

    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range, naming it.

    Examples:
        >>> members = noise.member_seeds(0, 0, 4, antithetic=True)
        >>> starts = episode_seeds(0, 0, members, 2)
        >>> bool((starts[:2] == starts[2:]).all()), bool((starts[0] != starts[1]).all())
        (True, True)
        >>> bool((episode_seeds(0, 1, members, 2) != starts).all())
        True
    """
    validate.seed("seed", seed)
    validate.integer("generation", generation, low=0)
    validate.integer("episodes", episodes, low=1)
    validate.choice("share", share, SHARING)
    if share == "all":
        row = [noise.stream_seed(seed, "episodes", generation, e) for e in range(episodes)]
        return np.tile(np.array(row, dtype=np.int64), (len(members), 1))
    pair = noise.pair_keys(members)  # (n,) 0: the parent; else the pair's seed + 1
    rows: dict[int, list[int]] = {}
    for key in pair.tolist():
        if key not in rows:
            rows[key] = [noise.stream_seed(seed, "episodes", generation, e, key) for e in range(episodes)]
    return np.array([rows[key] for key in pair.tolist()], dtype=np.int64).reshape(len(members), episodes)


@dataclasses.dataclass
class _Rollout:
    """What one lockstep run of ``c`` members × ``E`` episodes produced."""

    returns: np.ndarray  # (c, E) float64: the return of every episode (NaN for a member whose policy gave NaN)
    steps: int  # environment steps, all episodes
    statistics: torch.Tensor | None  # (c, width) float64 observation statistics per member, or None


def _rollout(
    forward: Forward,
    layout: flat.Layout,
    vectors: torch.Tensor,
    env: Environment,
    envs: VectorEnv,
    starts: np.ndarray,
    shift: torch.Tensor | None = None,
) -> _Rollout:
    """Run the (c, E) episodes ``starts`` of the ``c`` policies ``vectors`` ((c, dim)) in lockstep.

    Every step pushes the current observations of every member that still has a running episode
    through ``forward`` at once, then steps the running environments. With ``shift`` (the running
    mean), each member's observations are summed into its row of statistics; sums are added per
    member in episode order, so a member's row does not depend on which members share its chunk.
    """
    c, episodes = starts.shape
    obs = torch.as_tensor(envs.reset(starts.reshape(-1)))  # (c·E, observations), the environments' dtype
    running = np.ones(c * episodes, dtype=bool)
    returns, lengths = np.zeros(c * episodes), np.zeros(c * episodes, dtype=np.int64)
    broken = np.zeros(c, dtype=bool)  # members whose policy output NaN: scored +inf, statistics dropped
    if shift is not None:
        s1 = torch.zeros(c, env.observations, dtype=torch.float64)
        s2 = torch.zeros(c, env.observations, dtype=torch.float64)
    live = torch.arange(c)  # members with a running episode
    params = flat.stacked(vectors, layout)  # name -> (live, *shape)
    index = None
    while True:
        if index is None:  # the set of running episodes changed (or this is the start)
            index = np.flatnonzero(running)  # (k,) running environments
            if not len(index):
                break
            at = torch.from_numpy(index)
            owner = at // episodes  # (k,) their members
            alive = torch.unique(owner)  # sorted
            if len(alive) != len(live):  # members only ever finish: fewer means another set
                live = alive
                params = flat.stacked(vectors[live.to(vectors.device)], layout)
            rows = (torch.searchsorted(live, owner) * episodes + at % episodes).to(vectors.device)  # (k,)
        if shift is not None:
            delta = obs[at].double() - shift  # (k, observations)
            s1.index_add_(0, owner, delta)  # adds in index order: per member, in episode order
            s2.index_add_(0, owner, delta * delta)
        x = obs.view(c, episodes, -1)
        x = (x if len(live) == c else x[live]).to(device=vectors.device, dtype=vectors.dtype)  # (live, E, inputs)
        out = forward(params, x).reshape(len(live) * episodes, -1)[rows].cpu()  # (k, actions)
        nan = torch.isnan(out).any(-1).numpy()
        if nan.any():
            broken[owner.numpy()[nan]] = True
            out = torch.nan_to_num(out, nan=0.0)
        observation, reward, ended = envs.step(index, env.act(out))
        obs[at] = torch.as_tensor(observation, dtype=obs.dtype)
        returns[index] += reward
        lengths[index] += 1
        if ended.any():
            running[index[ended]] = False
            index = None
    per_episode = returns.reshape(c, episodes)
    per_episode[broken] = np.nan
    statistics = None
    if shift is not None:
        n = torch.as_tensor(lengths.reshape(c, episodes).sum(1), dtype=torch.float64)[:, None]  # (c, 1)
        statistics = torch.cat([n, shift + s1 / n, (s2 - s1 * s1 / n).clamp_min(0)], dim=1)  # (c, width)
        statistics[torch.as_tensor(broken)] = math.nan
    return _Rollout(per_episode, int(lengths.sum()), statistics)


def mean_return(env: Environment, model: nn.Module, seeds: Sequence[int] = TEST_SEEDS, *, fast: bool = True) -> float:
    """The mean return of ``model`` (its parameters and its observation statistics) over one episode per seed.

    The test metric of episodic tasks; it trains nothing and counts nothing.
    """
    vectors, layout = flat.flatten(model)[None], flat.layout_of(model)  # (1, dim)
    with torch.no_grad():
        run = _rollout(policy_forward(model), layout, vectors, env, env.vector(fast=fast), np.array([list(seeds)]))
    return float(run.returns.mean())


def _check_fits(model: nn.Module, env: Environment, like: torch.Tensor) -> None:
    """Raise a ValueError unless ``model`` maps (1, observations) inputs to (1, actions) outputs."""
    try:
        with torch.no_grad():
            shape = tuple(model(torch.zeros(1, env.observations, dtype=like.dtype, device=like.device)).shape)
    except RuntimeError as err:
        shape = f"an error ({' '.join(str(err).split())})"
    if shape != (1, env.actions):
        raise ValueError(
            f"the model maps a (1, {env.observations}) observation of {env.env_id} to {shape}; "
            f"its policy must output (1, {env.actions})"
        )


def _observation_norm(model: nn.Module) -> ObservationNorm | None:
    return next((m for m in model.modules() if isinstance(m, ObservationNorm)), None)


@dataclasses.dataclass
class _Call:
    """One evaluation in progress: its start seeds, and what its chunks produced so far."""

    starts: np.ndarray  # (n, E)
    shift: torch.Tensor | None
    done: int = 0  # members scored
    steps: int = 0
    statistics: list[torch.Tensor] = dataclasses.field(default_factory=list)


class EpisodeEvaluator(ChunkedEvaluator):
    """Members scored by their episodes: fitness = minus the mean return (lower is better).

    Every call draws the next generation's start states (:func:`episode_seeds`), scores the
    population a chunk at a time, every episode of a chunk's members in lockstep (one batched
    forward pass per step, :func:`policy_forward`), and counts every environment step in
    ``fe`` (docs/design.rst, contract 8). A member whose policy outputs NaN is scored
    +inf (contract 6).

    With ``obs_norm`` the model's :class:`ObservationNorm` learns from what is evaluated: a call
    returns after merging every member's observation statistics, in member order, into it, so
    the next generation (and the test metric) see the updated normalization. The evaluator is a
    :class:`~evograd.protocols.StatisticsEvaluator`: :meth:`evaluate` scores without merging and
    :meth:`absorb` merges, which is how :class:`~evograd.MPIEvaluator` merges the rows of every
    rank in member order, bit for bit the single-process result.

    Args:
        model: the policy; its trainable parameters are the flat vector, its buffers (the
            observation statistics) are shared by every member.
        env: the environment (:func:`environment`).
        seed: the run's seed (start states derive from it).
        episodes: episodes per member, >= 1.
        share: who shares start states: ``"pair"`` (each antithetic ± pair) or ``"all"``.
        obs_norm: learn the observation normalization (the model must hold an :class:`ObservationNorm`).
        chunk_size: members scored in lockstep; by default as many as fit in 64 MiB, at most 1,024.
            Over MPI, for results independent of the rank count, ranks receive whole chunks, so
            pick ``chunk_size <= population / ranks`` there (see :mod:`evograd.mpi`).
        fast: run CartPole and Pendulum on the numpy fast path (equal to gymnasium bit for bit).

    Attributes:
        generation: start-state sets drawn so far (one per call); a resumed run sets it back.

    Raises:
        TypeError, ValueError: a setting of the wrong type or out of range, naming it; ``obs_norm``
            for a model without an :class:`ObservationNorm`; a model whose inputs or outputs do
            not fit ``env``.

    Examples:
        >>> env = environment("CartPole-v1")
        >>> model = policy(env, seed=0)
        >>> evaluate = EpisodeEvaluator(model, env, seed=0, episodes=2, obs_norm=True)
        >>> seeds = noise.member_seeds(0, 0, 4, antithetic=True)
        >>> fitness = evaluate(flat.flatten(model), seeds, noise.Mutation(sigma=0.1, antithetic=True))
        >>> fitness.shape, evaluate.fe == -2 * int(fitness.sum())  # CartPole pays 1 per step
        (torch.Size([4]), True)
        >>> int(model[0].count) == evaluate.fe  # every observation acted on, merged
        True
    """

    def __init__(
        self,
        model: nn.Module,
        env: Environment,
        *,
        seed: int,
        episodes: int = 1,
        share: str = "pair",
        obs_norm: bool = False,
        chunk_size: int | None = None,
        fast: bool = True,
    ) -> None:
        with model_lock(model):  # another thread's call may be swapping the model's parameters out
            layout = flat.layout_of(model)
            trainable = next(p for p in model.parameters() if p.requires_grad)
            _check_fits(model, env, trainable)
        if chunk_size is None:
            chunk_size = min(1024, noise.chunk_rows(layout.dim, trainable.dtype, nbytes=64 << 20))
        super().__init__(chunk_size=chunk_size, layout=layout)
        self.model, self.env = model, env
        self.seed = validate.seed("seed", seed)
        self.episodes = validate.integer("episodes", episodes, low=1)
        self.share = validate.choice("share", share, SHARING)
        self.norm = _observation_norm(model) if validate.flag("obs_norm", obs_norm) else None
        if obs_norm and self.norm is None:
            raise ValueError("obs_norm=True needs a model holding an ObservationNorm (see evograd.tasks.rl.policy)")
        if self.norm is not None and self.norm.dim != env.observations:
            raise ValueError(
                f"the model's ObservationNorm has dim {self.norm.dim}; {env.env_id} has {env.observations} observations"
            )
        self.fast = validate.flag("fast", fast)
        self.generation = 0
        self._forward = policy_forward(model)
        self._envs = env.vector(fast=fast)
        self._call: _Call | None = None

    @property
    def statistics_width(self) -> int:
        """Floats per member in :meth:`evaluate`'s statistics (0 without observation normalization)."""
        return 0 if self.norm is None else self.norm.width

    def evaluate(
        self, center: torch.Tensor, seeds: torch.Tensor, mutation: noise.Mutation
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fitness and observation statistics of every member, without merging the statistics.

        Returns:
            (n,) fitness, and (n, :attr:`statistics_width`) float64 rows, one per member, in order.
        """
        with model_lock(self.model):  # one call at a time: it advances the generation and reads the statistics
            starts = episode_seeds(self.seed, self.generation, seeds, self.episodes, self.share)
            self.generation += 1
            return self._run(starts, functools.partial(super().__call__, center, seeds, mutation))

    def absorb(self, statistics: torch.Tensor) -> None:
        """Merge a whole population's rows (from :meth:`evaluate`, every rank's, in member order)."""
        if self.norm is not None:
            with model_lock(self.model):
                self.norm.merge(statistics)

    def __call__(self, center: torch.Tensor, seeds: torch.Tensor, mutation: noise.Mutation) -> torch.Tensor:
        """(n,) fitness of ``center`` perturbed by each seed; the statistics are merged before it returns."""
        with model_lock(self.model):  # scored and merged before another thread's call starts
            fitness, statistics = self.evaluate(center, seeds, mutation)
            self.absorb(statistics)
            return fitness

    def score(self, candidates: torch.Tensor) -> torch.Tensor:
        """Fitness of explicit (n, dim) candidates (each its own pair of start states); statistics are merged."""
        with model_lock(self.model):
            members = torch.arange(len(candidates), dtype=torch.int64)
            starts = episode_seeds(self.seed, self.generation, members, self.episodes, self.share)
            self.generation += 1
            fitness, statistics = self._run(starts, functools.partial(super().score, candidates))
            self.absorb(statistics)
            return fitness

    def _run(self, starts: np.ndarray, chunked: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the base class's chunk loop with this call's start seeds; its fitness and statistics."""
        shift = None if self.norm is None else self.norm.mean.cpu().clone()  # observations live on the host
        self._call = _Call(starts, shift)
        try:
            fitness = chunked()
            call = self._call
        finally:
            self._call = None
        rows = torch.cat(call.statistics) if call.statistics else torch.zeros(len(starts), 0, dtype=torch.float64)
        return fitness, rows

    def _lock(self) -> threading.RLock:
        return model_lock(self.model)  # the model's: its statistics and, off the fast path, its parameters

    def _begin(self) -> _Call:
        return self._call

    def _score(self, candidates: torch.Tensor, context: _Call) -> torch.Tensor:
        starts = context.starts[context.done : context.done + len(candidates)]
        context.done += len(candidates)
        run = _rollout(self._forward, self.layout, candidates, self.env, self._envs, starts, context.shift)
        context.steps += run.steps
        if run.statistics is not None:
            context.statistics.append(run.statistics)
        return -torch.as_tensor(run.returns.mean(1))  # (c,) float64; NaN for a broken policy

    def _finish(self, fitness: torch.Tensor, context: _Call) -> torch.Tensor:
        self.evaluations += len(fitness)
        self.fe += context.steps
        return finite_or_worst(fitness)
