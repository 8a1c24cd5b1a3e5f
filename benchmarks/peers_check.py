"""Check benchmarks/peers.py's vectorised CartPole-v1 / Pendulum-v1 replicas against gymnasium itself.

1. Step by step: the same initial state and the same random actions give the same observations, rewards and
   terminations as gymnasium's environment.
2. ``ObsNorm`` (numpy) normalises as EvoTorch's ``RunningNorm`` does after the same masked batch updates.
3. End to end: for random policies (with and without observation normalisation), the replica's test metric
   equals evograd's ``task.metric`` (10 test episodes on gymnasium).

    PYTHONPATH=.:benchmarks python benchmarks/peers_check.py   (in the peers' virtualenv, see benchmarks/peers.py)
"""

import gymnasium
import numpy as np
import peers
import torch


def step_by_step(name: str, episodes: int = 20) -> float:
    env_id, cls = peers.ENVS[name]
    genv, rng, worst = gymnasium.make(env_id), np.random.default_rng(0), 0.0
    for ep in range(episodes):
        obs, _ = genv.reset(seed=ep)
        replica = cls()
        r_obs = replica.reset(np.array(genv.unwrapped.state)[None])
        worst = max(worst, float(np.abs(r_obs[0] - obs).max()))
        for t in range(cls.max_steps):
            if name == "cartpole":
                a = int(rng.integers(2))
                obs, rew, term, trunc, _ = genv.step(a)
                r_obs, r_rew, r_term = replica.step(np.array([a]))
            else:
                a = rng.uniform(-2.5, 2.5, size=1).astype(np.float32)
                obs, rew, term, trunc, _ = genv.step(a)
                r_obs, r_rew, r_term = replica.step(a)
            worst = max(worst, float(np.abs(r_obs[0] - obs).max()), abs(float(r_rew[0]) - float(rew)))
            assert bool(r_term[0]) == term, (name, ep, t)
            if term or trunc:
                assert trunc == (t == cls.max_steps - 1) or term
                break
    genv.close()
    return worst


def end_to_end(name: str, policies: int = 6) -> float:
    worst = 0.0
    for seed in range(policies):
        s = {"obs_norm": seed % 2 == 0, "episodes": 1}
        bench = peers.make_bench(name, seed, s)
        center = peers.flat_parameters(bench.model) * (1 + seed)  # a spread of behaviours
        bench.fitness(center[None].repeat(4, 1) + 0.3 * torch.randn(4, len(center)))  # feed the normaliser
        a, b = bench.test(center), bench.confirm(center)
        print(f"  {name} policy {seed} obs_norm={s['obs_norm']}: replica {a:.6f} gymnasium {b:.6f}")
        worst = max(worst, abs(a - b))
    return worst


def obs_norm(batches: int = 50) -> float:
    from evotorch.neuroevolution.net import RunningNorm

    rng, ours, theirs, worst = np.random.default_rng(1), peers.ObsNorm(3), RunningNorm(shape=3, dtype="float32"), 0.0
    for _ in range(batches):
        x = (rng.normal(size=(17, 3)) * [1.0, 0.01, 5.0] + [0.0, 3.0, -2.0]).astype(np.float32)
        mask = rng.random(17) < 0.7
        ours.update(x, mask)
        theirs.update(torch.as_tensor(x), torch.as_tensor(mask))
        a, b = ours.normalize(x), theirs.normalize(torch.as_tensor(x)).numpy()
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


if __name__ == "__main__":
    torch.manual_seed(0)
    torch.set_num_threads(1)
    print(f"ObsNorm vs RunningNorm: largest difference {obs_norm():.3g}")
    for name in peers.ENVS:
        print(f"{name}: largest step-by-step difference {step_by_step(name):.3g}")
        print(f"{name}: largest test-metric difference {end_to_end(name):.3g}")
