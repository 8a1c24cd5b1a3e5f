"""Tests of evograd.checkpoint: round trips, exact resume, atomic writes, refusals."""

import dataclasses

import pytest
import torch
from problems import quadratic

from evograd import FunctionEvaluator, Mutation, OpenES, RollingImprovement, ScaleFreeEvolution, checkpoint, noise
from evograd.checkpoint import Checkpointer, CheckpointError

DIM = 6
SCALE = torch.linspace(0.5, 2.0, DIM, dtype=torch.float64)
STRATEGIES = {
    "evolution": lambda **kw: ScaleFreeEvolution(
        size=6, mutation=Mutation(kind="cauchy", sigma=0.3, scale=SCALE), **kw
    ),
    "rolling": lambda **kw: RollingImprovement(
        size=6, mutation=Mutation(kind="loguniform", sigma=1.0, antithetic=True, scale=SCALE), **kw
    ),
    "openes": lambda **kw: OpenES(size=6, mutation=Mutation(sigma=0.3, antithetic=True, scale=SCALE), lr=0.1, **kw),
}


def advance(strategy, state, generations):
    value, _ = quadratic(DIM)
    evaluate = FunctionEvaluator(value)
    for _ in range(generations):
        seeds = strategy.ask(state)
        state, _ = strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
    return state


def start(name, seed=0):
    strategy = STRATEGIES[name]()
    return strategy, strategy.init(torch.linspace(-1, 1, DIM, dtype=torch.float64), seed=seed)


def assert_same_state(a, b):
    assert type(a) is type(b)
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if torch.is_tensor(x):
            assert x.dtype == y.dtype and torch.equal(x, y), field.name
        elif field.name == "mutation":
            assert x == y and torch.equal(x.scale, y.scale)
        elif field.name == "optimizer_state" and x is not None:
            assert x["param_groups"] == y["param_groups"]
            assert x["state"].keys() == y["state"].keys()
            for key in x["state"]:
                assert all(torch.equal(x["state"][key][k], y["state"][key][k]) for k in x["state"][key])
        else:
            assert x == y, field.name


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_state_type_round_trips_exactly(name, tmp_path):
    strategy, state = start(name)
    state = advance(strategy, state, 3)
    checkpoint.save(tmp_path / "c.pt", generation=3, state=state, strategy=strategy, metadata={"note": [1, 2.5]})
    back = checkpoint.load(tmp_path / "c.pt", strategy=STRATEGIES[name](), like=start(name)[1])
    assert back.generation == 3 and back.strategy == type(strategy).__name__
    assert back.metadata == {"note": [1, 2.5]}
    assert_same_state(back.state, state)


@pytest.mark.parametrize("name", STRATEGIES)
def test_resumed_run_equals_the_uninterrupted_run(name, tmp_path):
    strategy, state = start(name)
    uninterrupted = advance(strategy, state, 12)

    saver = Checkpointer(tmp_path, every=5)
    state = start(name)[1]
    for _ in range(7):  # "killed" after generation 7; the checkpoint of generation 5 survives
        state = advance(strategy, state, 1)
        saver.step(state.generation, state=state, strategy=strategy)
    fresh_strategy, template = start(name)
    resumed = Checkpointer(tmp_path, every=5).resume(strategy=fresh_strategy, like=template)
    assert resumed.generation == 5
    final = advance(fresh_strategy, resumed.state, 12 - resumed.generation)
    assert_same_state(final, uninterrupted)


def test_optimizer_state_dict_round_trip_continues_identically(tmp_path):
    def make():
        param = torch.nn.Parameter(torch.linspace(-1, 1, 4, dtype=torch.float64))
        return param, torch.optim.SGD([param], lr=0.1, momentum=0.9, nesterov=True)

    def steps(param, opt, n):
        for _ in range(n):
            opt.zero_grad()
            (param**4).sum().backward()
            opt.step()

    param, opt = make()
    steps(param, opt, 3)
    checkpoint.save(tmp_path / "o.pt", generation=3, optimizer=opt, metadata={"param": param.detach()})
    steps(param, opt, 4)

    saved = checkpoint.load(tmp_path / "o.pt")
    other_param, other = make()
    with torch.no_grad():
        other_param.copy_(saved.metadata["param"])
    other.load_state_dict(saved.optimizer)  # the momentum buffers: without them the steps differ
    steps(other_param, other, 4)
    assert torch.equal(other_param, param)


def test_a_failure_mid_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    strategy, state = start("openes")
    path = checkpoint.save(tmp_path / "c.pt", generation=0, state=state, strategy=strategy)
    before = path.read_bytes()

    def crash(obj, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, generation=1, state=advance(strategy, state, 1), strategy=strategy)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_truncated_corrupt_and_foreign_files_are_refused(tmp_path):
    strategy, state = start("rolling")
    path = checkpoint.save(tmp_path / "c.pt", generation=0, state=state, strategy=strategy)
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 10, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated, corrupt"):
            checkpoint.load(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not an evograd checkpoint"):
        checkpoint.load(path)


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_a_checkpoint_cannot_execute_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "version": 1, "payload": _Exploit()}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="cannot be read"):
        checkpoint.load(path)
    assert not (tmp_path / "PWNED").exists()


def test_unstorable_objects_are_refused_before_writing(tmp_path):
    with pytest.raises(CheckpointError, match=r"metadata\.rng: cannot store an object of type Generator"):
        checkpoint.save(tmp_path / "c.pt", generation=0, metadata={"rng": torch.Generator()})
    with pytest.raises(CheckpointError, match="reserved"):
        checkpoint.save(tmp_path / "c.pt", generation=0, metadata={"__dataclass__": "ESState"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda: (STRATEGIES["rolling"](lr=0.5), None), r"strategy\.lr \(saved 0\.05, now 0\.5\)"),
        (lambda: (STRATEGIES["rolling"](chunk_size=8), None), r"strategy\.chunk_size"),
        (lambda: (STRATEGIES["openes"](), None), r"strategy class \(saved RollingImprovement, now OpenES\)"),
        (
            lambda: (None, RollingImprovement(size=6).init(torch.zeros(DIM + 1, dtype=torch.float64), seed=0)),
            r"model \(saved center \(6,\) torch\.float64, now \(7,\)",
        ),
        (lambda: (None, STRATEGIES["rolling"]().init(torch.zeros(DIM), seed=0)), r"model .* now \(6,\) torch\.float32"),
        (
            lambda: (None, STRATEGIES["rolling"]().init(torch.zeros(DIM, dtype=torch.float64), seed=1)),
            r"seed \(saved 0",
        ),
        (
            lambda: (None, STRATEGIES["openes"]().init(torch.zeros(DIM, dtype=torch.float64), seed=0)),
            r"state class \(saved RollingState, now ESState\)",
        ),
    ],
)
def test_a_mismatched_checkpoint_is_refused_and_nothing_is_written(change, message, tmp_path):
    strategy, state = start("rolling")
    saver = Checkpointer(tmp_path, every=1)
    saver.step(2, state=advance(strategy, state, 2), strategy=strategy)
    other_strategy, like = change()
    resumer = Checkpointer(tmp_path, every=1)
    with pytest.raises(CheckpointError, match=message):
        resumer.resume(strategy=other_strategy, like=like)
    with pytest.raises(CheckpointError, match="did not write or resume from"):
        resumer.step(3, state=state, strategy=strategy)  # a failed resume does not unlock the directory
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000002.pt"]


def test_checkpointer_keeps_the_newest_and_touches_nothing_else(tmp_path):
    strategy, state = start("evolution")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "ckpt-best.pt").write_text("mine too")
    saver = Checkpointer(tmp_path, every=2, keep=2)
    for generation in range(1, 10):
        saver.step(generation, state=state, strategy=strategy)
    saver.step(9, state=state, strategy=strategy, final=True)
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert names == ["ckpt-000000008.pt", "ckpt-000000009.pt", "ckpt-best.pt", "notes.txt"]
    assert checkpoint.latest(tmp_path).name == "ckpt-000000009.pt"
    assert Checkpointer(tmp_path / "empty", every=1).resume() is None


def test_only_rank_0_writes_and_a_fresh_run_refuses_an_old_directory(tmp_path):
    strategy, state = start("openes")
    assert Checkpointer(tmp_path, every=1, rank=1).step(1, state=state, strategy=strategy) is None
    assert list(tmp_path.iterdir()) == []
    Checkpointer(tmp_path, every=1).step(1, state=state, strategy=strategy)
    with pytest.raises(CheckpointError, match=r"generation\(s\) \[1\] that this run did not write"):
        Checkpointer(tmp_path, every=1).step(1, state=state, strategy=strategy)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda d: Checkpointer(d, every=0), "every"),
        (lambda d: Checkpointer(d, every=1, keep=0), "keep"),
        (lambda d: Checkpointer(d, every=1, rank=-1), "rank"),
        (lambda d: checkpoint.save(d / "c.pt", generation=-1), "generation"),
    ],
)
def test_bad_arguments_name_the_parameter(make, name, tmp_path):
    with pytest.raises(ValueError, match=name):
        make(tmp_path)


def test_fields_added_later_take_their_default_and_unknown_fields_are_refused(tmp_path):
    strategy, state = start("openes")
    state = advance(strategy, state, 1)
    path = checkpoint.save(tmp_path / "c.pt", generation=1, state=state)
    payload = torch.load(path, weights_only=True)
    del payload["state"]["fields"]["gradient"]  # as written before ESState had a gradient field
    torch.save(payload, path)
    assert checkpoint.load(path, like=start("openes")[1]).state.gradient is None
    payload["state"]["fields"]["momentum"] = 0.9
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"ESState has no field\(s\) \['momentum'\]"):
        checkpoint.load(path, like=start("openes")[1])


@dataclasses.dataclass(frozen=True)
class NewState:
    """A state class checkpoint.py has never heard of, as a new strategy would bring."""

    center: torch.Tensor
    mutation: Mutation
    seed: int
    generation: int
    history: tuple = ()
    extra: dict | None = None

    def __post_init__(self):
        if self.generation < 0:
            raise ValueError(f"generation={self.generation} is out of range")


def new_state(dim=4, seed=0, **changes):
    state = NewState(torch.zeros(dim, dtype=torch.float64), Mutation(sigma=0.1, scale=torch.ones(dim)), seed, 0)
    return dataclasses.replace(state, **changes)


def test_any_dataclass_state_round_trips_on_its_template_and_is_plain_data_without_one(tmp_path):
    saved = new_state(
        center=torch.arange(4.0, dtype=torch.float64),
        mutation=Mutation(sigma=0.25, scale=torch.full((4,), 2.0)),
        generation=7,
        history=(1.5, 2.5),
        extra={"momentum": torch.ones(4), "steps": [1, 2]},
    )
    path = checkpoint.save(tmp_path / "c.pt", generation=7, state=saved)
    back = checkpoint.load(path, like=new_state()).state
    assert type(back) is NewState and back.generation == 7 and back.history == (1.5, 2.5)
    assert torch.equal(back.center, saved.center) and back.mutation == saved.mutation
    assert torch.equal(back.mutation.scale, saved.mutation.scale)
    assert torch.equal(back.extra["momentum"], torch.ones(4)) and back.extra["steps"] == [1, 2]  # None: as saved

    raw = checkpoint.load(path).state
    assert raw["__dataclass__"] == "NewState" and raw["fields"]["generation"] == 7
    assert raw["fields"]["mutation"]["fields"]["sigma"] == 0.25


def test_restore_refuses_every_mismatch_at_once_naming_each():
    saved = checkpoint.plain(new_state(mutation=Mutation(sigma=0.1, scale=torch.ones(5)), history=(1, 2)))
    with pytest.raises(CheckpointError) as caught:
        checkpoint.restore(new_state(history=(1, 2, 3)), saved)
    message = str(caught.value)
    assert "state.mutation.scale (saved (5,) torch.float32, now (4,) torch.float32)" in message
    assert "state.history (saved a tuple of 2, now a tuple of 3)" in message
    assert message.count("(saved") == 2  # nothing else differs
    saved["fields"]["generation"] = -1  # the class's own validation runs on the rebuilt state
    with pytest.raises(CheckpointError, match=r"state: invalid NewState: generation=-1 is out of range"):
        checkpoint.restore(new_state(), saved)
    with pytest.raises(CheckpointError, match=r"state\.mutation class \(saved dict, now Mutation\)"):
        checkpoint.restore(new_state(), {"__dataclass__": "NewState", "fields": {"mutation": {"sigma": 0.1}}})
    with pytest.raises(CheckpointError, match=r"state\.seed \(saved a list, now 0\)"):
        checkpoint.restore(new_state(), {"__dataclass__": "NewState", "fields": {"seed": [0]}})


class _WholeRows:
    """A WeightedSum that sums whole rows in the process, as a strategy without ``update`` does."""

    regenerated = 0

    def __call__(self, mutation, seeds, weights, dim, *, with_norms=True, **kw):
        total, norms = noise.weighted_sum(mutation, seeds, weights, dim, **kw)
        return total, norms if with_norms else None


def test_where_the_update_sum_is_formed_is_not_part_of_the_checkpointed_config(tmp_path):
    """A run checkpointed with an ``update`` object resumes without one (and ends in the same state)."""
    strategy, state = start("openes")
    sharded = strategy.replace(update=_WholeRows())
    Checkpointer(tmp_path, every=1).step(2, state=advance(sharded, state, 2), strategy=sharded)
    resumed = Checkpointer(tmp_path, every=1).resume(strategy=strategy, like=state)
    assert resumed is not None and resumed.generation == 2
    assert_same_state(resumed.state, advance(strategy, state, 2))
