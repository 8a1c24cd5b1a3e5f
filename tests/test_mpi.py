"""Tests of evograd.mpi and mpi/train.py.

Tests marked ``mpi`` launch ``mpiexec -n N <python> -m mpi4py script`` in a subprocess of its own
session with a timeout, and kill the whole process group if it runs over (so a hang fails the test
instead of the suite). The other tests need neither MPI nor mpi4py.
"""

import contextlib
import csv
import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

from evograd import FunctionEvaluator, Mutation, OpenES, checkpoint, flat, noise
from evograd.mpi import MPIEvaluator, ShardedUpdate, coordinate_shares, split, state_digest
from evograd.tasks import mlp

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "mpi_scripts"
TRAIN = ROOT / "mpi" / "train.py"
_BESIDE = pathlib.Path(sys.executable).parent / "mpiexec"
MPIEXEC = str(_BESIDE) if _BESIDE.exists() else shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
    reason="needs mpiexec and mpi4py: pip install mpi4py mpich",
)


#: Generous limits of whole jobs: a loaded machine (a CI runner, eight people on two cores) can slow a
#: job several times over; a test that must end within a stated time asserts that time itself.
TIMEOUT = 300


def mpirun(n, script, *args, timeout=TIMEOUT, wait=True, env=None, command=None):
    """Launch ``script`` on ``n`` ranks; returns (returncode, output), or the Popen when not ``wait``.

    ``env`` adds environment variables; ``command`` replaces the whole command line (MPMD launches).
    """
    path = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1", **(env or {})}
    if command is None:
        command = [MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py", str(script), *map(str, args)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
    )
    if not wait:
        return proc
    return finish(proc, timeout)


def finish(proc, timeout):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"MPI job hung for {timeout} s and was killed; output:\n{out.decode(errors='replace')}")
    return proc.returncode, out.decode(errors="replace")


# ----------------------------------------------------------------------------------------------
# without MPI


@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 19, 100, 257])
@pytest.mark.parametrize("parts", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("block", [1, 4, 32])
def test_split_covers_every_index_once_balanced_and_aligned(n, parts, block):
    shares = split(n, parts, block=block)
    assert len(shares) == parts
    assert [i for share in shares for i in share] == list(range(n))
    sizes = [len(share) for share in shares]
    if block == 1:
        assert max(sizes) - min(sizes) <= 1
    assert all(abs(size - n / parts) <= block for size in sizes)
    assert all(share.start % block == 0 for share in shares if share.start < n)


@pytest.mark.parametrize("dim", [1, 63, 64, 1000, 100_810])
@pytest.mark.parametrize("block", [1, 64, 1024])
def test_coordinate_shares_are_whole_blocks_of_a_partition_that_does_not_depend_on_the_rank_count(dim, block):
    """Every rank count cuts only at multiples of ``block`` (the same blocks for 1, 2, 3, 7 and 1,000
    ranks), covers every coordinate once in order, and gives each rank within one block of D/N."""
    for parts in (1, 2, 3, 7, 1000):
        shares = coordinate_shares(dim, parts, block=block)
        assert len(shares) == parts
        assert [i for share in shares for i in share] == list(range(dim))
        assert all(share.start % block == 0 for share in shares if len(share))
        assert all(share.stop % block == 0 or share.stop == dim for share in shares if len(share))
        assert all(abs(len(share) - dim / parts) <= block for share in shares)


@pytest.mark.parametrize("block", [0, -3, 2.5, True])
def test_a_sharded_update_refuses_a_bad_block_before_it_needs_mpi(block):
    with pytest.raises((TypeError, ValueError), match="block"):
        ShardedUpdate(block=block)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n=-1, parts=2), "n"),
        (dict(n=4, parts=0), "parts"),
        (dict(n=4, parts=2, block=0), "block"),
        (dict(n=4.0, parts=2), "n"),
    ],
)
def test_split_refuses_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        split(**kwargs)


def test_missing_mpi_names_the_extra(monkeypatch):
    sphere = FunctionEvaluator(lambda x: (x**2).sum(1))
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # not installed: ImportError
    with pytest.raises(ImportError, match=r"evograd-torch\[mpi\]"):
        MPIEvaluator(sphere)
    no_library = types.ModuleType("mpi4py")  # installed, but no MPI library to load: RuntimeError

    def fail(name):
        raise RuntimeError("cannot load MPI library")

    no_library.__getattr__ = fail
    monkeypatch.setitem(sys.modules, "mpi4py", no_library)
    with pytest.raises(ImportError, match=r"evograd-torch\[mpi\].*cannot load MPI library"):
        MPIEvaluator(sphere)


def test_state_digest_sees_every_part_of_a_state():
    strategy = OpenES(size=4, mutation=Mutation(sigma=0.1, antithetic=True))
    state = strategy.init(torch.ones(3), seed=0)
    seeds = strategy.ask(state)
    state, _ = strategy.tell(state, seeds, torch.arange(4.0))
    digest = state_digest(state)
    assert state_digest(dataclasses.replace(state, center=state.center.clone())) == digest
    moved = state.optimizer_state["state"][0]["exp_avg"].clone().add_(1e-3)
    changed = {**state.optimizer_state, "state": {0: {**state.optimizer_state["state"][0], "exp_avg": moved}}}
    assert state_digest(dataclasses.replace(state, optimizer_state=changed)) != digest
    assert state_digest(dataclasses.replace(state, mutation=state.mutation.replace(sigma=0.1000001))) != digest
    assert state_digest(dataclasses.replace(state, center=state.center.double())) != digest


# ----------------------------------------------------------------------------------------------
# with MPI


def single_process(script, out, timeout=TIMEOUT):
    """What a rank script computes in one process without MPI (its ``--reference`` mode), loaded from ``out``."""
    subprocess.run(
        [sys.executable, str(script), "--reference", str(out)],
        check=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return torch.load(out)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    # fifteen strategies, 4 generations each: seconds of CPU, minutes of wall time when the machine is shared
    return single_process(SCRIPTS / "spmd_run.py", tmp_path_factory.mktemp("reference") / "reference.pt")


@pytest.mark.slow
@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_reproduce_the_single_process_run_bit_for_bit(ranks, reference, tmp_path):
    """Every strategy, a population that 2 and 3 ranks split unevenly, a model sensitive to chunking."""
    code, out = mpirun(ranks, SCRIPTS / "spmd_run.py", tmp_path / "spmd.pt", timeout=240)
    assert code == 0, out
    assert all(f"rank {r} of {ranks} ok" in out for r in range(ranks)), out
    results = torch.load(tmp_path / "spmd.pt")
    for name, want in reference.items():
        got = results[name]
        assert torch.equal(got["fitness"], want["fitness"]), name
        assert torch.equal(got["center"], want["center"]), name
        assert torch.equal(got["sigma"], want["sigma"]), name
        assert (got["evaluations"], got["fe"]) == (want["evaluations"], want["fe"]), name


@pytest.mark.mpi
@needs_mpi
def test_the_hybrid_optimizer_over_mpi_equals_one_process_for_every_source(tmp_path):
    """HybridOptimizer(evaluator=MPIEvaluator(VmapEvaluator)) and step(closure, batch=...) on 1, 2 and 3 ranks.

    Every source kind (populations split across ranks; backprop, SPSA and forward gradients
    computed in full on each rank; mixes and per-group directions) ends with the parameters of the
    single-process run bit for bit, and reports the same FE: the algorithmic cost, counted once.
    """
    script = SCRIPTS / "hybrid_run.py"
    reference = single_process(script, tmp_path / "reference.pt")
    assert len(reference) == 8
    for ranks in (1, 2, 3):
        code, out = mpirun(ranks, script, tmp_path / f"hybrid-{ranks}.pt")
        assert code == 0, out
        assert all(f"rank {r} of {ranks} ok" in out for r in range(ranks)), out
        results = torch.load(tmp_path / f"hybrid-{ranks}.pt")
        for name, want in reference.items():
            got = results[name]
            assert all(torch.equal(p, q) for p, q in zip(got["parameters"], want["parameters"])), (ranks, name)
            assert torch.equal(got["losses"], want["losses"]), (ranks, name)
            assert got["fe"] == want["fe"], (ranks, name)
    initial = mlp((20, 50, 1), seed=0).parameters()
    assert not any(torch.equal(p, q) for p, q in zip(reference["improvement"]["parameters"], initial))  # it trained


@pytest.mark.mpi
@needs_mpi
def test_a_sharded_update_equals_the_whole_row_update_bit_for_bit_on_1_2_and_3_ranks(tmp_path):
    """ShardedUpdate with every strategy and weighting (signed ranks, row norms to the powers 1 and 2,
    loguniform rows with a sparse mask, clipped Cauchy with coordinate scales, a comma mean, float32
    and float64) ends at the center of the one-process run with whole rows, bit for bit, after 5
    generations; each rank regenerates its own coordinates of every weighted row only."""
    script = SCRIPTS / "sharded_run.py"
    reference = single_process(script, tmp_path / "reference.pt")
    assert all(not torch.equal(want["center"], torch.zeros_like(want["center"])) for want in reference.values())
    single = None  # the one-rank run's work
    for ranks in (1, 2, 3):
        code, out = mpirun(ranks, script, tmp_path / f"sharded-{ranks}.pt", timeout=120)
        assert code == 0, out
        assert all(f"rank {r} of {ranks} ok" in out for r in range(ranks)), out
        results = torch.load(tmp_path / f"sharded-{ranks}.pt")
        widths = results.pop("widths")
        assert sum(widths) == 1000 and all(abs(width - 1000 / ranks) <= 64 for width in widths)
        for name, want in reference.items():
            got = results[name]
            assert torch.equal(got["fitness"], want["fitness"]), (ranks, name)
            assert torch.equal(got["center"], want["center"]), (ranks, name)
        # signed ranks weight every member and need no norms: 5 generations x 18 rows x the rank's width
        assert results["openes"]["regenerated"] == [5 * 18 * width for width in widths], ranks
        # the (mu/mu, lambda) mean: 5 generations x 5 elite rows x the rank's width
        assert results["evolution-comma"]["regenerated"] == [5 * 5 * width for width in widths], ranks
        # norms cost whole rows of a share of the members: the ranks' work adds up to one rank's, shared evenly
        work = results["rolling-improvement"]["regenerated"]
        single = work[0] if single is None else single
        assert sum(work) == single and all(abs(w - single / ranks) <= 0.1 * single / ranks for w in work), work


@pytest.mark.mpi
@needs_mpi
def test_train_with_a_sharded_update_ends_with_the_state_of_the_unsharded_run():
    """``mpi/train.py --shard-update`` on 3 ranks: the same final state digest as 1 rank without it."""
    digests = []
    for ranks, flags in ((1, ()), (3, ("--shard-update",))):
        code, out = mpirun(
            ranks,
            TRAIN,
            "--strategy",
            "rolling",
            "--population",
            16,
            "--chunk-size",
            4,
            "--generations",
            15,
            "--log-every",
            100,
            *flags,
            timeout=120,
        )
        assert code == 0, out
        digests.append(out.split("state digest ")[-1].split(")")[0])
    assert digests[0] == digests[1], digests


@pytest.mark.mpi
@needs_mpi
def test_an_exception_on_one_rank_aborts_the_job():
    start = time.perf_counter()
    code, out = mpirun(2, SCRIPTS / "fail_rank1.py")
    assert code != 0
    assert "Traceback" in out and "RuntimeError: deliberate failure on rank 1" in out, out
    assert time.perf_counter() - start < 60


@pytest.mark.slow
@pytest.mark.mpi
@needs_mpi
def test_check_sync_catches_a_desynchronized_rank_on_every_rank():
    code, out = mpirun(3, SCRIPTS / "desync.py")
    assert code == 0, out
    for rank in range(3):
        assert (
            f"rank {rank} caught SyncError: ranks out of sync at generation 4: rank(s) [1] differ from rank(s) [0, 2]"
        ) in out, out


TRAIN_ARGS = (
    "--task",
    "teacher",
    "--strategy",
    "openes",
    "--population",
    "16",
    "--chunk-size",
    "4",
    "--batch-size",
    "64",
    "--checkpoint-every",
    "5",
    "--log-every",
    "1000",
)


def generation_of(path):
    return int(path.stem.split("-")[1])  # ckpt-000000015.pt -> 15, without reading a file being pruned


@pytest.mark.slow
@pytest.mark.mpi
@needs_mpi
def test_a_killed_run_resumes_to_the_uninterrupted_result_and_truncation_is_refused(tmp_path):
    """SIGKILL a 2-rank training job after its first checkpoints, resume it, compare with a clean run.

    The killed job is asked for more generations than it will live to see, so the kill always lands
    mid-run; the target ``G`` is chosen after the kill, and both the resumed job and an uninterrupted
    job run to ``G``: they must end with the same parameters and Adam state, bit for bit.
    """
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    job = mpirun(2, TRAIN, *TRAIN_ARGS, "--generations", 10**6, "--checkpoint-dir", broken, wait=False)
    deadline = time.monotonic() + TIMEOUT
    while checkpoint.latest(broken) is None or generation_of(checkpoint.latest(broken)) < 10:
        if job.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
            pytest.fail("the job ended or stalled before its checkpoints:\n" + finish(job, 10)[1])
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)
    job.communicate()
    interrupted_at = checkpoint.load(checkpoint.latest(broken)).generation
    target = interrupted_at + 15

    code, out = mpirun(2, TRAIN, *TRAIN_ARGS, "--generations", target, "--checkpoint-dir", clean)
    assert code == 0, out
    code, out = mpirun(2, TRAIN, *TRAIN_ARGS, "--generations", target, "--checkpoint-dir", broken, "--resume")
    assert code == 0, out
    assert f"from generation {interrupted_at}" in out
    want, got = checkpoint.load(checkpoint.latest(clean)), checkpoint.load(checkpoint.latest(broken))
    assert got.generation == want.generation == target
    assert torch.equal(got.state["fields"]["center"], want.state["fields"]["center"])  # loaded as plain data
    assert state_digest(got.state) == state_digest(want.state)
    assert got.metadata == want.metadata  # forward passes keep counting across the resume

    newest = checkpoint.latest(broken)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    code, out = mpirun(1, TRAIN, *TRAIN_ARGS, "--generations", target + 10, "--checkpoint-dir", broken, "--resume")
    assert code != 0
    assert f"{newest} cannot be read: it is truncated" in out, out


@pytest.mark.mpi
@needs_mpi
def test_train_streams_its_progress_to_loggers_from_rank_0_only(tmp_path):
    code, out = mpirun(
        2, TRAIN, *TRAIN_ARGS, "--generations", 20, "--log-every", 5, "--log", "csv", "jsonl", "--log-dir", tmp_path
    )
    assert code == 0, out
    with open(tmp_path / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    printed = [line.split()[1] for line in out.splitlines() if line.startswith("generation")]
    assert [row["generation"] for row in rows] == printed == ["5", "10", "15", "20"], "one row per line, not per rank"
    jsonl = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["fe"] for r in jsonl] == [int(row["fe"]) for row in rows] and jsonl[-1]["fe"] > jsonl[0]["fe"]


@pytest.mark.slow
@pytest.mark.mpi
@needs_mpi
def test_observation_statistics_merge_bit_for_bit_on_1_2_and_3_ranks(tmp_path):
    """EpisodeEvaluator with obs_norm under MPIEvaluator: every rank sends its members' rows of
    observation statistics with their fitness, every rank merges all rows in member order, so the
    fitness of every generation, the center and the running statistics equal one process's, bit for bit."""
    pytest.importorskip("gymnasium")
    script = SCRIPTS / "episodes_run.py"
    reference = single_process(script, tmp_path / "reference.pt")
    for ranks in (1, 2, 3):
        code, out = mpirun(ranks, script, tmp_path / f"episodes-{ranks}.pt")
        assert code == 0, out
        assert all(f"rank {r} of {ranks} ok" in out for r in range(ranks)), out
        results = torch.load(tmp_path / f"episodes-{ranks}.pt")
        for name, want in reference.items():
            got = results[name]
            assert torch.equal(got["fitness"], want["fitness"]), (ranks, name)
            assert torch.equal(got["center"], want["center"]), (ranks, name)
            assert all(torch.equal(a, b) for a, b in zip(got["statistics"], want["statistics"])), (ranks, name)
            assert (got["fe"], got["generation"]) == (want["fe"], want["generation"])
    for want in reference.values():
        count, _, m2, _ = want["statistics"]
        assert count == want["fe"] and bool((m2 > 0).all()), "every observation acted on was merged"


class _OneRank:
    """A communicator of one rank whose all-gather is a copy: MPIEvaluator's packing without MPI."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Allgatherv(self, send, receive):
        buffer, counts, offsets, _ = receive
        buffer[offsets[0] : offsets[0] + counts[0]] = send


class _Recorder:
    """A StatisticsEvaluator whose rows are known: member i's row is (seed, i, -i); it records what it absorbs."""

    statistics_width = 3
    evaluations = fe = 0

    def __init__(self):
        self.absorbed = []

    def evaluate(self, center, seeds, mutation):
        self.fe += 2 * len(seeds)
        rows = torch.stack([seeds.double(), torch.arange(len(seeds)).double(), -torch.arange(len(seeds)).double()], 1)
        return seeds.double() / 10, rows

    def absorb(self, statistics):
        self.absorbed.append(statistics)

    def __call__(self, center, seeds, mutation):
        fitness, rows = self.evaluate(center, seeds, mutation)
        self.absorb(rows)
        return fitness


def test_statistics_travel_with_the_fitness_and_are_absorbed_once_in_member_order(monkeypatch):
    import evograd.mpi

    monkeypatch.setattr(evograd.mpi, "_mpi", lambda: types.SimpleNamespace(DOUBLE=None))
    local = _Recorder()
    evaluate = MPIEvaluator(local, _OneRank())
    seeds = torch.arange(5, dtype=torch.int64) * 7
    fitness = evaluate(torch.zeros(2), seeds, Mutation())
    assert torch.equal(fitness, seeds.double() / 10) and evaluate.fe == 10
    (rows,) = local.absorbed
    assert torch.equal(rows, local.evaluate(None, seeds, None)[1])


def test_mpi_of_an_episode_evaluator_on_one_rank_equals_the_evaluator(monkeypatch):
    pytest.importorskip("gymnasium")
    import evograd.mpi
    from evograd import tasks

    monkeypatch.setattr(evograd.mpi, "_mpi", lambda: types.SimpleNamespace(DOUBLE=None))
    task = tasks.get("pendulum")
    seeds, mutation = noise.member_seeds(0, 0, 6, antithetic=True), Mutation(sigma=0.2, antithetic=True)
    runs = []
    for wrap in (lambda local: local, lambda local: MPIEvaluator(local, _OneRank())):
        model = task.make_model(0)
        evaluate = wrap(tasks.EpisodeEvaluator(model, task.environment, seed=0, obs_norm=True, chunk_size=3))
        fitness = evaluate(flat.flatten(model), seeds, mutation)
        runs.append((fitness, model[0].mean.clone(), model[0].m2.clone(), evaluate.fe))
    (fitness, mean, m2, steps), (fitness_mpi, mean_mpi, m2_mpi, steps_mpi) = runs
    assert torch.equal(fitness, fitness_mpi) and torch.equal(mean, mean_mpi) and torch.equal(m2, m2_mpi)
    assert steps == steps_mpi == 6 * 200


# ----------------------------------------------------------------------------------------------
# faults: every one ends the job non-zero, naming the rank and the generation, within 60 s of it

FAULT_TIMEOUT = "20"  # the collectives' deadline in these tests (s; default 300): start-up skew under load stays below
FAULT_ARGS = ("--population", "16", "--chunk-size", "4", "--generations", "40", "--log-every", "1000")
WAITED = r"rank 0 of 2 waited [\d.]+ s for rank\(s\) \[1\] in the evaluation of generation 5"
ABRUPT = r"rank 1 \(pid \d+\) ended abruptly at generation 5 \(outside any collective\)"


@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize(
    "kind, message",
    [
        ("raise", r"rank 1 failed at generation 5: RuntimeError\('deliberate failure on rank 1'\)"),
        ("kill", ABRUPT),
        ("exit3", ABRUPT),
        ("stop", WAITED),
        ("exit", WAITED),
        (
            "position",
            r"ranks reached different collectives: rank 0 at the evaluation of generation 5 \(size 17\); "
            r"rank 1 at the sync check of generation 5 \(size 1\)",
        ),
        ("data", r'ranks run with different settings at generation 0: data \(rank\(s\) \[0\]: "\w+", rank\(s\) \[1\]'),
    ],
)
def test_every_fault_ends_the_job_naming_the_rank_and_generation_within_60_s(kind, message):
    """A fault on rank 1 (see tests/mpi_scripts/faults.py): non-zero exit, the rank and generation named.

    The 60 s are counted from the moment the fault happens (the script prints it), so start-up on a
    loaded machine does not count; the job itself has the generous generic limit.
    """
    code, out = mpirun(2, SCRIPTS / "faults.py", kind, 1, 5, *FAULT_ARGS, env={"EVOGRAD_MPI_TIMEOUT": FAULT_TIMEOUT})
    ended = time.time()
    assert code != 0, out
    announced = re.search(rf"injecting {kind} on rank 1 at generation \d+ at ([\d.]+)", out)
    assert announced, out
    assert ended - float(announced.group(1)) < 60, out
    if kind in ("kill", "exit3"):  # every rank's watcher reports; the failing rank's notice comes first
        first = re.search(r"rank \d \(pid \d+\) ended abruptly.*", out)
        assert first and re.match(message, first.group(0)), out
    else:
        assert re.search(message, out), out


@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize(
    "kind, message",
    [
        ("stop", r"rank 0 of 2 waited [\d.]+ s for rank\(s\) \[1\] in the sharded update of call 5;"),
        ("exit", r"rank 0 of 2 waited [\d.]+ s for rank\(s\) \[1\] in the sharded update of call 5;"),
        ("kill", r"rank 1 \(pid \d+\) ended abruptly at call 4 \(in or after the sharded update\)"),
    ],
)
def test_a_rank_lost_during_a_sharded_update_ends_the_job_naming_it_within_60_s(kind, message):
    """A rank that stops, leaves or dies before the update of generation 5 (tests/mpi_scripts/sharded_fault.py).

    The update's all-gathers are the job's only collectives, so without their deadline the job would hang.
    """
    script = SCRIPTS / "sharded_fault.py"
    code, out = mpirun(2, script, kind, 1, 5, env={"EVOGRAD_MPI_TIMEOUT": FAULT_TIMEOUT})
    ended = time.time()
    assert code != 0, out
    announced = re.search(rf"injecting {kind} on rank 1 at generation 5 at ([\d.]+)", out)
    assert announced, out
    assert ended - float(announced.group(1)) < 60, out
    assert re.search(message, out), out
    assert not re.search(r"rank \d of 2 ok", out), out


@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize(
    "extra, message",
    [
        (("--sync-every", "30"), r"sync_every \(rank\(s\) \[0\]: 100, rank\(s\) \[1\]: 30\)"),
        (("--generations", "120"), r"generations \(rank\(s\) \[0\]: 300, rank\(s\) \[1\]: 120\)"),
        (("--batch-size", "64"), r"batch_size \(rank\(s\) \[0\]: 128, rank\(s\) \[1\]: 64\)"),
    ],
)
def test_ranks_launched_with_different_settings_end_the_job_naming_the_field(extra, message):
    """The issue's MPMD repros: ``mpiexec -n 1 train.py : -n 1 train.py --sync-every 30`` and the like."""
    rank = [sys.executable, "-m", "mpi4py", str(TRAIN), "--generations", "300"]
    command = [MPIEXEC, "-n", "1", *rank, ":", "-n", "1", *rank, *extra]
    start = time.monotonic()
    code, out = mpirun(2, None, command=command, env={"EVOGRAD_MPI_TIMEOUT": FAULT_TIMEOUT})
    assert code != 0, out
    assert re.search(r"SyncError: ranks run with different settings at generation 0: " + message, out), out
    assert time.monotonic() - start < TIMEOUT


@pytest.mark.mpi
@needs_mpi
def test_a_timeout_of_the_wrong_kind_is_refused(tmp_path):
    code, out = mpirun(1, TRAIN, "--generations", "1", env={"EVOGRAD_MPI_TIMEOUT": "soon"})
    assert code != 0 and "EVOGRAD_MPI_TIMEOUT='soon' is not a number; allowed seconds in (0, inf)" in out, out
