"""Tests of evograd.tasks.rl and evograd.tasks.classic: environments, episode seeds, observation
normalization, the lockstep episode evaluator and its cost in environment steps."""

import sys

import numpy as np
import pytest
import torch

from evograd import OpenES, compare, flat, noise, tasks
from evograd.protocols import Evaluator, ModelEvaluator, StatisticsEvaluator
from evograd.tasks import classic, rl

gymnasium = pytest.importorskip("gymnasium")


@pytest.fixture(autouse=True)
def _fresh_environment_cache():
    rl.environment.cache_clear()  # a test that hides gymnasium must not see environments made before it
    yield
    rl.environment.cache_clear()


# ----------------------------------------------------------------------------------------------
# the numpy fast path against gymnasium


@pytest.mark.filterwarnings("ignore:.*CartPole-v0 is out of date")
@pytest.mark.parametrize("env_id", sorted(classic.CLASSIC))
def test_classic_envs_equal_gymnasium_bit_for_bit_step_by_step(env_id):
    """Random actions (torques beyond the box, to exercise the clip) from 30 random start seeds:
    every observation, reward and end of episode equals gymnasium's own environment, bit for bit."""
    cls, max_steps = classic.CLASSIC[env_id]
    rng = np.random.default_rng(7)
    seeds = rng.integers(0, 2**63 - 1, size=30)
    ours = cls(max_steps)
    theirs = [gymnasium.make(env_id) for _ in seeds]
    obs = ours.reset(seeds)
    assert np.array_equal(obs, np.stack([env.reset(seed=int(s))[0] for env, s in zip(theirs, seeds)]))
    running, steps = np.arange(len(seeds)), 0
    while len(running):
        if cls is classic.CartPole:
            actions = rng.integers(0, 2, size=len(running))
        else:
            actions = rng.uniform(-2.5, 2.5, size=(len(running), 1)).astype(np.float32)
        obs, rewards, done = ours.step(running, actions)
        for j, i in enumerate(running):
            their_obs, reward, terminated, truncated, _ = theirs[i].step(
                int(actions[j]) if cls is classic.CartPole else actions[j]
            )
            assert np.array_equal(obs[j], their_obs), (env_id, i, steps)
            assert rewards[j] == reward and done[j] == (terminated or truncated), (env_id, i, steps)
        steps += len(running)
        running = running[~done]
    assert steps >= 30 * (200 if cls is classic.Pendulum else 9)


@pytest.mark.parametrize("name, episodes", [("cartpole", 2), ("pendulum", 1)])
def test_the_fast_path_scores_like_gymnasium_through_the_evaluator(name, episodes):
    """The same generations scored on the numpy fast path and on gymnasium's environments: the same
    fitness, environment steps and merged observation statistics, bit for bit."""
    task = tasks.get(name)
    results = []
    for fast in (True, False):
        model = task.make_model(0)
        evaluate = rl.EpisodeEvaluator(model, task.environment, seed=1, episodes=episodes, obs_norm=True, fast=fast)
        mutation = noise.Mutation(sigma=0.5, antithetic=True)
        center = flat.flatten(model)
        fitness = [evaluate(center, noise.member_seeds(0, g, 8, antithetic=True), mutation) for g in range(2)]
        norm = model[0]
        results.append((torch.stack(fitness), evaluate.fe, norm.mean.clone(), norm.m2.clone()))
    (fitness, steps, mean, m2), (ref_fitness, ref_steps, ref_mean, ref_m2) = results
    assert torch.equal(fitness, ref_fitness) and steps == ref_steps
    assert torch.equal(mean, ref_mean) and torch.equal(m2, ref_m2)


# ----------------------------------------------------------------------------------------------
# environments and policies


def test_environment_reads_gymnasium_spaces_and_maps_outputs_to_actions():
    acrobot = rl.environment("Acrobot-v1")
    assert (acrobot.observations, acrobot.actions, acrobot.discrete) == (6, 3, True)
    out = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert acrobot.act(out).tolist() == [1, 0]  # arg-max
    car = rl.environment("MountainCarContinuous-v0")
    assert (car.observations, car.actions, car.discrete, car.low, car.high) == (2, 1, False, (-1.0,), (1.0,))
    pendulum = rl.environment("Pendulum-v1")
    out = torch.linspace(-4, 4, 9).reshape(9, 1)
    action = pendulum.act(out)
    assert action.shape == (9, 1) and action.dtype == np.float32
    low, high = -2.0, 2.0  # an independent formula of tanh scaled to the box
    np.testing.assert_allclose(action, low + (high - low) * (np.tanh(out.numpy()) + 1) / 2, rtol=0, atol=1e-6)
    assert np.array_equal(action, (2.0 * torch.tanh(out)).numpy()), "a symmetric box is exactly half-width * tanh"
    lake = rl.environment("FrozenLake-v1")
    assert (lake.observations, lake.one_hot) == (16, True)


def test_any_gymnasium_environment_by_id_is_a_task():
    task = tasks.get("gym:Acrobot-v1")
    assert task.episodic and task.name == "gym:Acrobot-v1" and task.target == -100.0  # gymnasium's threshold
    model = task.make_model(0)
    evaluate = rl.EpisodeEvaluator(model, task.environment, seed=0)
    fitness = evaluate(flat.flatten(model), noise.member_seeds(0, 0, 2), noise.Mutation(sigma=0.1))
    assert fitness.shape == (2,) and bool((fitness <= 500).all())  # Acrobot pays -1 a step, 500 steps at most
    assert evaluate.fe >= 2 and -500 <= task.metric(model) <= 0
    lake = tasks.get("gym:FrozenLake-v1")  # discrete observations, one-hot
    assert lake.make_model(0)(torch.zeros(1, 16)).shape == (1, 4) and 0 <= lake.metric(lake.make_model(0)) <= 1


@pytest.mark.parametrize(
    "name, error, message",
    [
        ("gym:Nope-v0", ValueError, "task='gym:Nope-v0' is unknown: Environment `Nope` doesn't exist"),
        ("gym:CartPole-v9", ValueError, "task='gym:CartPole-v9' is unknown: Environment version `v9`"),
        ("gym:", ValueError, "task='gym:' names no environment"),
        ("gym:Blackjack-v1", ValueError, "has observation space Tuple"),
    ],
)
def test_bad_gym_ids_are_one_line_errors_naming_them(name, error, message):
    with pytest.raises(error) as caught:
        tasks.get(name)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_environment_package_or_gymnasium_names_what_to_install(monkeypatch):
    try:
        import Box2D  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="gym:LunarLander-v3 needs a package gymnasium lacks: Box2D"):
            tasks.get("gym:LunarLander-v3")
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    for name in ("cartpole", "gym:Acrobot-v1"):
        with pytest.raises(ImportError, match=r"pip install 'evograd-torch\[rl\]'"):
            tasks.get(name)


def test_policy_forward_equals_each_member_through_its_own_module():
    """The batched forward (baddbmm per layer) and the vmap fallback for other models, against the
    module itself, member by member."""
    torch.manual_seed(0)  # test data only; the library never touches the global generator

    class Wrapped(torch.nn.Module):  # not a Sequential: takes the vmap path
        def __init__(self):
            super().__init__()
            self.body = tasks.mlp((4, 8, 3), seed=1)

        def forward(self, x):
            return self.body(x).relu()

    policy = rl.policy(rl.environment("CartPole-v1"), (8, 8), seed=0)
    policy[0].merge(torch.tensor([[10.0, 1.0, -1.0, 0.5, 2.0, 4.0, 3.0, 2.0, 1.0]], dtype=torch.float64))
    for model in (policy, Wrapped()):
        layout = flat.layout_of(model)
        vectors = flat.flatten(model) + 0.1 * torch.randn(5, layout.dim)  # (5, dim)
        x = torch.randn(5, 7, 4)
        out = rl.policy_forward(model)(flat.stacked(vectors, layout), x)
        for i in range(5):
            flat.assign(model, vectors[i])
            torch.testing.assert_close(out[i], model(x[i]))


# ----------------------------------------------------------------------------------------------
# episode seeds


def test_episode_seeds_derive_from_seed_generation_and_pair_alone():
    members = noise.member_seeds(3, 5, 6, antithetic=True)
    with_parent = torch.cat([torch.tensor([noise.PARENT_SEED]), members])
    starts = rl.episode_seeds(3, 5, with_parent, 2)
    assert starts.shape == (7, 2) and starts.dtype == np.int64
    for row, member in zip(starts[1:4], members[:3].tolist()):  # the reference: the stream "episodes"
        assert row.tolist() == [noise.stream_seed(3, "episodes", 5, e, member + 1) for e in range(2)]
    assert np.array_equal(starts[1:4], starts[4:]), "each antithetic pair shares its start states"
    assert starts[0].tolist() == [noise.stream_seed(3, "episodes", 5, e, 0) for e in range(2)], "the parent's own"
    assert len({*starts.reshape(-1).tolist()}) == 8
    # nothing else matters: not the order, not the company (a rank's share), and every generation is fresh
    assert np.array_equal(rl.episode_seeds(3, 5, with_parent.flip(0), 2), starts[::-1])
    assert np.array_equal(rl.episode_seeds(3, 5, members[2:4], 2), starts[3:5])
    assert not np.isin(rl.episode_seeds(3, 6, with_parent, 2), starts).any()
    assert not np.isin(rl.episode_seeds(4, 5, with_parent, 2), starts).any()
    shared = rl.episode_seeds(3, 5, with_parent, 2, share="all")
    assert (shared == shared[0]).all()
    assert shared[0].tolist() == [noise.stream_seed(3, "episodes", 5, e) for e in (0, 1)]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(episodes=0), ValueError, "episodes=0 is out of range"),
        (dict(episodes=1.5), TypeError, "episodes=1.5 must be an integer"),
        (dict(share="none"), ValueError, "share='none' is not allowed; allowed 'pair', 'all'"),
        (dict(obs_norm=1), TypeError, "obs_norm=1 must be True or False"),
        (dict(seed=-1), ValueError, "seed=-1 is out of range"),
    ],
)
def test_episode_settings_are_validated_naming_the_field(kwargs, error, message):
    task = tasks.get("cartpole")
    settings = {"seed": 0, **kwargs}
    with pytest.raises(error, match=message):
        rl.EpisodeEvaluator(task.make_model(0), task.environment, **settings)


def test_a_model_must_fit_its_environment():
    env = rl.environment("CartPole-v1")
    with pytest.raises(ValueError, match="obs_norm=True needs a model holding an ObservationNorm"):
        rl.EpisodeEvaluator(tasks.mlp((4, 8, 2)), env, seed=0, obs_norm=True)
    with pytest.raises(ValueError, match=r"to \(1, 3\); its policy must output \(1, 2\)"):
        rl.EpisodeEvaluator(tasks.mlp((4, 8, 3)), env, seed=0)
    with pytest.raises(ValueError, match=r"to an error \(mat1 and mat2 shapes cannot be multiplied"):
        rl.EpisodeEvaluator(tasks.mlp((3, 8, 2)), env, seed=0)


# ----------------------------------------------------------------------------------------------
# observation normalization


def test_merging_rows_in_order_gives_the_statistics_of_all_observations():
    rng = np.random.default_rng(0)
    data = rng.normal(loc=[1e3, -2.0, 0.0], scale=[1e-2, 3.0, 1.0], size=(600, 3))  # a large offset, tiny spread
    cuts = [0, 5, 130, 131, 400, 600]
    rows = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        part = data[lo:hi]
        rows.append([len(part), *part.mean(0), *((part - part.mean(0)) ** 2).sum(0)])
    norm = rl.ObservationNorm(3)
    norm.merge(torch.tensor(rows[:2], dtype=torch.float64))
    norm.merge(torch.tensor(rows[2:], dtype=torch.float64))
    assert float(norm.count) == 600
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-13)
    np.testing.assert_allclose((norm.m2 / 600).numpy(), data.var(0), rtol=1e-9)
    x = torch.as_tensor(rng.normal(size=(4, 3)) * 20, dtype=torch.float32)
    mean, std = torch.as_tensor(data.mean(0)), torch.as_tensor(np.sqrt(data.var(0) + 1e-8))
    expected = ((x.double() - mean) / std).clamp(-5, 5)
    torch.testing.assert_close(norm(x), expected.float())
    again = rl.ObservationNorm(3)
    again.merge(torch.tensor(rows, dtype=torch.float64))
    assert all(torch.equal(a, b) for a, b in zip(again.buffers(), norm.buffers())), "the same rows, the same bits"


def test_non_finite_rows_never_enter_the_statistics():
    norm = rl.ObservationNorm(2)
    norm.merge(torch.tensor([[2.0, 1.0, 1.0, 0.5, 0.5], [3.0, float("nan"), 0.0, 1.0, 1.0], [0.0, 5.0, 5.0, 0.0, 0.0]]))
    assert float(norm.count) == 2 and norm.mean.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"rows must be \(n, 5\) statistics"):
        norm.merge(torch.zeros(2, 3, dtype=torch.float64))


class _Recording:
    """A VectorEnv that records what every episode it runs observed and how many steps it took."""

    def __init__(self, envs, log):
        self.envs, self.log = envs, log

    def reset(self, seeds):
        obs = self.envs.reset(seeds)
        self.seeds = [int(s) for s in seeds]
        self.log.append({"seeds": self.seeds, "observations": [obs.astype(np.float64)], "steps": 0})
        return obs

    def step(self, index, actions):
        obs, reward, done = self.envs.step(index, actions)
        self.log[-1]["steps"] += len(index)
        self.log[-1]["observations"].append(obs[~done].astype(np.float64))  # the next to be acted on
        return obs, reward, done


@pytest.fixture
def recorded(monkeypatch):
    """Every environment batch made through Environment.vector records into the returned log."""
    log, make = [], rl.Environment.vector
    monkeypatch.setattr(rl.Environment, "vector", lambda self, fast=True: _Recording(make(self, fast=fast), log))
    return log


def test_obs_norm_merges_every_observation_acted_on_and_is_deterministic(recorded):
    task = tasks.get("cartpole")
    runs = []
    for _ in range(2):
        recorded.clear()
        model = task.make_model(0)
        evaluate = rl.EpisodeEvaluator(model, task.environment, seed=2, episodes=3, obs_norm=True)
        strategy = OpenES(size=10, mutation=noise.Mutation(sigma=0.5, antithetic=True), lr=0.05)
        state = strategy.init(flat.flatten(model), seed=0)
        for _ in range(3):
            seeds = strategy.ask(state)
            state, _ = strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        runs.append((model[0], state.center, evaluate.fe))
    (norm, center, steps), (again, center_again, _) = runs
    assert all(torch.equal(a, b) for a, b in zip(norm.buffers(), again.buffers())) and torch.equal(center, center_again)
    # the reference: mean and variance of every observation the policies acted on (all but each episode's last)
    acted = np.concatenate([obs for batch in recorded for obs in batch["observations"]])
    assert float(norm.count) == steps == sum(batch["steps"] for batch in recorded) == len(acted)
    np.testing.assert_allclose(norm.mean.numpy(), acted.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose((norm.m2 / norm.count).numpy(), acted.var(0), rtol=1e-8)


def test_a_policy_that_outputs_nan_is_scored_worst_and_not_learned_from():
    task = tasks.get("pendulum")
    model = task.make_model(0)
    evaluate = rl.EpisodeEvaluator(model, task.environment, seed=0, obs_norm=True)
    broken = flat.flatten(model).repeat(3, 1)
    broken[1, 0] = float("nan")
    fitness = evaluate.score(broken)
    assert fitness[1] == float("inf") and bool(torch.isfinite(fitness[[0, 2]]).all())
    assert float(model[0].count) == 400 and bool(torch.isfinite(model[0].mean).all())  # 2 members × 200 steps
    assert evaluate.fe == 600, "the broken member's steps were spent all the same"


# ----------------------------------------------------------------------------------------------
# the evaluator: protocols and cost


def test_episode_evaluator_declares_what_it_is():
    task = tasks.get("cartpole")
    evaluate = rl.EpisodeEvaluator(task.make_model(0), task.environment, seed=0)
    assert isinstance(evaluate, Evaluator) and isinstance(evaluate, StatisticsEvaluator)
    assert not isinstance(evaluate, ModelEvaluator)  # no batch, no differentiable loss
    assert evaluate.statistics_width == 0
    assert rl.EpisodeEvaluator(task.make_model(0), task.environment, seed=0, obs_norm=True).statistics_width == 9


def test_cost_is_every_environment_step_of_every_training_episode(recorded):
    """CartPole pays 1 a step, so each member's steps are its mean return times the episodes: an
    independent count of what the evaluator charges; the metric's test episodes are not charged."""
    task = tasks.get("cartpole")
    model = task.make_model(0)
    evaluate = rl.EpisodeEvaluator(model, task.environment, seed=0, episodes=3, chunk_size=5)
    total = 0
    for g in range(3):
        fitness = evaluate(flat.flatten(model), noise.member_seeds(0, g, 12), noise.Mutation(sigma=1.0))
        total += sum(round(-float(f) * 3) for f in fitness)
    assert evaluate.fe == total == sum(batch["steps"] for batch in recorded)
    assert evaluate.evaluations == 36 and evaluate.generation == 3
    recorded.clear()
    task.metric(model)
    assert evaluate.fe == total and recorded[0]["seeds"] == list(rl.TEST_SEEDS)


def test_a_compared_run_charges_training_steps_only(recorded):
    task = tasks.get("cartpole")
    result = compare.run_method(
        task, "openes", 0, compare.Budget(fe=3_000, points=2), overrides={"episodes": 2, "obs_norm": True}
    )
    training = [batch for batch in recorded if batch["seeds"] != list(rl.TEST_SEEDS)]
    testing = [batch for batch in recorded if batch["seeds"] == list(rl.TEST_SEEDS)]
    assert result.fe == sum(batch["steps"] for batch in training) >= 3_000
    assert len(testing) == len(result.curve) and all(len(batch["seeds"]) == 10 for batch in testing)
    assert all(len(batch["seeds"]) == 16 * 2 for batch in training), "16 members, 2 episodes each, one lockstep chunk"


def test_episodic_settings_are_method_settings():
    settings = compare.settings_for("rolling", "gym:Acrobot-v1", {"episodes": 5, "obs_norm": True, "share": "all"})
    assert (settings["episodes"], settings["obs_norm"], settings["share"]) == (5, True, "all")
    assert compare.settings_for("openes", "cartpole")["episodes"] >= 1
    with pytest.raises(ValueError, match="openes has no setting 'episodes'"):
        compare.settings_for("openes", "digits", {"episodes": 2})
    assert "episodes" not in compare.settings_for("adam", "cartpole")


@pytest.mark.slow
def test_openes_with_observation_normalization_solves_cartpole():
    """Convergence on a real task: OpenES with observation normalization and one episode per member
    reaches the target (mean return >= 475 over the 10 test episodes) within 60k environment steps."""
    task = tasks.get("cartpole")
    result = compare.run_method(
        task, "openes", 0, compare.Budget(fe=60_000, points=10), overrides={"episodes": 1, "obs_norm": True}
    )
    assert max(value for *_, value in result.curve) >= 475


@pytest.mark.cuda
def test_a_policy_on_the_gpu_is_scored_and_normalized_like_on_the_host():
    """Members' forward passes on the GPU, environments and statistics on the host."""
    task = tasks.get("cartpole")
    model = task.make_model(0).to("cuda")
    evaluate = rl.EpisodeEvaluator(model, task.environment, seed=0, episodes=2, obs_norm=True)
    fitness = evaluate(flat.flatten(model), noise.member_seeds(0, 0, 8), noise.Mutation(sigma=0.5))
    assert fitness.device.type == "cuda" and evaluate.fe == round(-float(fitness.sum()) * 2)
    assert float(model[0].count) == evaluate.fe and model[0].scale.device.type == "cuda"
    assert task.metric(model) > 0


def test_threads_sharing_an_episode_evaluator_each_get_one_whole_generation():
    import threading

    task = tasks.get("cartpole")
    model = task.make_model(0)
    center, seeds = flat.flatten(model), noise.member_seeds(0, 0, 6, antithetic=True)
    mutation = noise.Mutation(sigma=0.5, antithetic=True)
    single = rl.EpisodeEvaluator(model, task.environment, seed=4, episodes=2, chunk_size=2)
    reference = [single(center, seeds, mutation) for _ in range(8)]  # generations 0..7 in turn
    shared = rl.EpisodeEvaluator(model, task.environment, seed=4, episodes=2, chunk_size=2)
    results, errors, start = [], [], threading.Barrier(4)

    def work():
        try:
            start.wait()
            for _ in range(2):
                results.append(shared(center, seeds, mutation))
        except Exception as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    # every call drew its own generation's start states, whole: the results are the reference's, in some order
    unmatched = list(reference)
    for got in results:
        match = next(i for i, want in enumerate(unmatched) if torch.equal(got, want))
        unmatched.pop(match)
    assert not unmatched and shared.generation == 8 and shared.fe == single.fe
