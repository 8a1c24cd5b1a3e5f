"""CartPole and Pendulum as numpy arrays of environments: gymnasium's dynamics, bit for bit, many at once.

gymnasium steps one environment per Python call; an evolution strategy steps hundreds in lockstep
(:class:`evograd.tasks.rl.EpisodeEvaluator`), and on these two small problems the per-call
overhead is most of the time. These classes hold ``n`` environments as arrays and step any subset
of them with one numpy expression per line of gymnasium's own ``step``, written in the same order
with the same constants, so every observation, reward and termination equals gymnasium's bit for
bit (``tests/test_rl.py`` checks them against ``gymnasium.make`` step by step). They are a fast
path for exactly ``CartPole-v0``, ``CartPole-v1`` and ``Pendulum-v1`` with default arguments;
every other environment runs through gymnasium itself.

Both follow one interface (:class:`evograd.tasks.rl.VectorEnv`): ``reset(seeds)`` starts one
episode per seed exactly as ``env.reset(seed=s)`` does (the start state drawn from
``numpy.random.default_rng(s)``, which is gymnasium's ``seeding.np_random(s)``), and
``step(index, actions)`` advances the environments ``index`` and returns their observations,
rewards and whether each episode ended (terminated, or truncated by the time limit, as
gymnasium's ``TimeLimit`` wrapper does).

References:
    Barto, Sutton & Anderson (1983), Neuronlike adaptive elements that can solve difficult learning
    control problems (the cart-pole).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CartPole", "Pendulum", "CLASSIC"]

Step = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(observations (k, obs_dim) float32, rewards (k,) float64, done (k,) bool)`` of the stepped environments."""


class _Episodes:
    """Shared bookkeeping: the time limit and the steps taken since each environment's reset."""

    def __init__(self, max_steps: int) -> None:
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps={max_steps!r} is out of range; allowed integers in [1, inf)")
        self.max_steps = max_steps
        self.elapsed = np.zeros(0, dtype=np.int64)

    def _start(self, seeds: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """(n, len(low)) start states, row i drawn as gymnasium's reset(seed=seeds[i]) draws it."""
        self.elapsed = np.zeros(len(seeds), dtype=np.int64)
        return np.stack([np.random.default_rng(int(s)).uniform(low=low, high=high) for s in seeds])

    def _truncated(self, index: np.ndarray) -> np.ndarray:
        self.elapsed[index] += 1
        return self.elapsed[index] >= self.max_steps


class CartPole(_Episodes):
    """``n`` CartPole environments (gymnasium's ``CartPoleEnv``, Euler integration, reward 1 per step).

    Args:
        max_steps: the time limit: 500 for ``CartPole-v1``, 200 for ``CartPole-v0``.

    Examples:
        >>> envs = CartPole()
        >>> obs = envs.reset(np.array([0, 1]))
        >>> obs.shape, obs.dtype
        ((2, 4), dtype('float32'))
        >>> _, reward, done = envs.step(np.array([1]), np.array([0]))
        >>> reward.tolist(), done.tolist()
        ([1.0], [False])
    """

    obs_dim = 4
    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    total_mass = masspole + masscart
    length = 0.5  # half the pole's length
    polemass_length = masspole * length
    force_mag = 10.0
    tau = 0.02  # seconds between state updates
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def __init__(self, max_steps: int = 500) -> None:
        super().__init__(max_steps)
        self.state = np.zeros((4, 0))  # (x, x_dot, theta, theta_dot) × environments: each variable a contiguous row

    def reset(self, seeds: np.ndarray) -> np.ndarray:
        """Start one episode per seed; (n, 4) float32 observations."""
        self.state = np.ascontiguousarray(self._start(seeds, np.full(4, -0.05), np.full(4, 0.05)).T)  # (4, n)
        return self.state.T.astype(np.float32)

    def step(self, index: np.ndarray, actions: np.ndarray) -> Step:
        """Push the carts ``index`` left (action 0) or right (action 1)."""
        x, x_dot, theta, theta_dot = self.state[:, index]  # (k,) each, contiguous
        force = np.where(actions == 1, self.force_mag, -self.force_mag)
        costheta = np.cos(theta)
        sintheta = np.sin(theta)
        temp = (force + self.polemass_length * np.square(theta_dot) * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * np.square(costheta) / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        state = np.stack((x, x_dot, theta, theta_dot))  # (4, k)
        self.state[:, index] = state
        terminated = (
            (x < -self.x_threshold)
            | (x > self.x_threshold)
            | (theta < -self.theta_threshold_radians)
            | (theta > self.theta_threshold_radians)
        )
        reward = np.ones(len(index))  # 1 for every step, the terminating one included
        return state.T.astype(np.float32), reward, terminated | self._truncated(index)


class Pendulum(_Episodes):
    """``n`` Pendulum environments (gymnasium's ``PendulumEnv`` with ``g=10``): swing up, hold upright.

    Actions are torques, float32 like the action space (the dtype changes the rounding of the
    cost, so it is part of bit-equality with gymnasium), clipped to [-2, 2].

    Args:
        max_steps: the time limit: 200 for ``Pendulum-v1``.
    """

    obs_dim = 3
    max_speed = 8
    max_torque = 2.0
    dt = 0.05
    g = 10.0
    m = 1.0
    l = 1.0  # gymnasium's name

    def __init__(self, max_steps: int = 200) -> None:
        super().__init__(max_steps)
        self.state = np.zeros((2, 0))  # (th, thdot) × environments

    @staticmethod
    def _observe(th: np.ndarray, thdot: np.ndarray) -> np.ndarray:
        return np.stack([np.cos(th), np.sin(th), thdot], axis=1).astype(np.float32)  # (k, 3)

    def reset(self, seeds: np.ndarray) -> np.ndarray:
        """Start one episode per seed; (n, 3) float32 observations."""
        high = np.array([np.pi, 1.0])
        self.state = np.ascontiguousarray(self._start(seeds, -high, high).T)  # (2, n)
        return self._observe(*self.state)

    def step(self, index: np.ndarray, actions: np.ndarray) -> Step:
        """Apply the torques ``actions`` ((k,) or (k, 1), float32) to the pendulums ``index``."""
        th, thdot = self.state[:, index]  # (k,) each, contiguous
        g, m, l, dt = self.g, self.m, self.l, self.dt
        u = np.clip(actions.reshape(len(index)), -self.max_torque, self.max_torque)
        costs = _pow2(_angle_normalize(th)) + 0.1 * _pow2(thdot) + 0.001 * _pow2(u)
        newthdot = thdot + (3 * g / (2 * l) * np.sin(th) + 3.0 / (m * l**2) * u) * dt
        newthdot = np.clip(newthdot, -self.max_speed, self.max_speed)
        newth = th + newthdot * dt
        self.state[:, index] = newth, newthdot
        never = np.zeros(len(index), dtype=bool)  # a pendulum never terminates; only the time limit ends it
        return self._observe(newth, newthdot), -costs, never | self._truncated(index)


def _angle_normalize(x: np.ndarray) -> np.ndarray:
    return ((x + np.pi) % (2 * np.pi)) - np.pi


def _pow2(x: np.ndarray) -> np.ndarray:
    """``x ** 2`` as gymnasium's scalar code computes it: C ``pow`` per element, in ``x``'s dtype.

    numpy squares an *array* raised to the constant 2 as ``x * x``, while a numpy *scalar* raised
    to 2 calls ``pow``, and the two differ in the last bit for about 1 number in 1,000; an
    exponent given as an array keeps numpy on ``pow``.
    """
    return np.power(x, np.full_like(x, 2.0))


#: gymnasium ids with a numpy fast path: the class and its time limit.
CLASSIC: dict[str, tuple[type[CartPole] | type[Pendulum], int]] = {
    "CartPole-v0": (CartPole, 200),
    "CartPole-v1": (CartPole, 500),
    "Pendulum-v1": (Pendulum, 200),
}
