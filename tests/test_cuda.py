"""The GPU path, end to end (issue 8): every module runs with its tensors on a CUDA device.

Each section takes one module. Where a computation is deterministic, it is compared with the same
computation on the CPU. The noise codebook is drawn on the CPU and copied to the device, so rows
agree bit for bit and strategies follow the CPU's trajectory to float tolerance. Where it is not
deterministic (forward-gradient probes come from the GPU's generator), a statistical property is
asserted instead. The transfer tests watch every operator torch dispatches (tests/transfers.py)
and assert that a generation moves nothing the size of the model between host and device: only
seeds, per-member offsets and fitness values, at most one number per member, cross.

Every test here is marked ``cuda``; tests/conftest.py skips them, with the reason, where torch
sees no CUDA device.
"""

import io
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from problems import quadratic, rastrigin
from torch.nn import functional as F
from transfers import Crossings

from evograd import (
    FunctionEvaluator,
    HybridOptimizer,
    Mutation,
    OpenES,
    RollingImprovement,
    ScaleFreeEvolution,
    SerialEvaluator,
    VmapEvaluator,
    checkpoint,
    deap_tools,
    diagnostics,
    evaluate,
    experiments,
    feedback,
    flat,
    harness,
    noise,
    shaping,
    tasks,
)
from evograd import directions as D

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")
CPU = torch.device("cpu")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def classification(device, *, sizes=(20, 64, 5), n=256, seed=0, dtype=torch.float32):
    """A model and a batch whose labels a random teacher network gives: learnable, not trivial."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, sizes[0], generator=gen, dtype=dtype)
    with torch.no_grad():
        y = tasks.mlp(sizes, seed=seed + 1, dtype=dtype)(x).argmax(1)
    return tasks.mlp(sizes, seed=seed, dtype=dtype).to(device), (x.to(device), y.to(device))


def strategies(size=16):
    """One of each strategy, ``size`` members per generation."""
    return {
        "plus": ScaleFreeEvolution(size=size, mutation=Mutation(kind="cauchy", sigma=0.1)),
        "comma": ScaleFreeEvolution(
            size=size, mutation=Mutation(kind="levy", alpha=1.5, sigma=0.1), selection="comma", mu=4
        ),
        "rolling": RollingImprovement(
            size=size, mutation=Mutation(kind="cauchy", sigma=0.05, clip=3.0, antithetic=True)
        ),
        "openes": OpenES(size=size, mutation=Mutation(sigma=0.05, antithetic=True), lr=0.05),
    }


def run_generations(strategy, evaluator, center, generations, seed=0):
    state = strategy.init(center, seed=seed)
    for _ in range(generations):
        seeds = strategy.ask(state)
        state, _ = strategy.tell(state, seeds, evaluator(state.center, seeds, state.mutation))
    return state


# ----------------------------------------------------------------------------------------------
# noise


MUTATIONS = [
    Mutation(kind="gaussian", sigma=0.1, antithetic=True),
    Mutation(kind="cauchy", sigma=0.1, clip=3.0, sparsity=0.5),
    Mutation(kind="levy", alpha=1.3, sigma=0.1, scale=torch.linspace(0.5, 2.0, 1000)),
    Mutation(kind="loguniform", sigma=1.0, log_range=4.0),
]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.kind)
def test_rows_on_the_gpu_are_the_cpu_rows(mutation):
    """One codebook for every device: the same seed gives the same perturbation on the GPU."""
    seeds = torch.cat([noise.member_seeds(3, 7, 32, antithetic=True), torch.tensor([noise.PARENT_SEED])])
    cpu = noise.sample(mutation, seeds, 1000)
    gpu = noise.sample(mutation, seeds, 1000, device=CUDA)
    assert gpu.device.type == "cuda"
    if mutation.kind == "loguniform":  # the row norm is reduced on the device: equal to rounding
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-6, atol=1e-7)
    else:
        assert torch.equal(gpu.cpu(), cpu)
    assert torch.equal(gpu[-1], torch.zeros(1000, device=CUDA))


def test_weighted_sum_on_the_gpu_matches_the_cpu():
    mutation = Mutation(kind="cauchy", sigma=0.05, clip=3.0, antithetic=True)
    seeds = noise.member_seeds(0, 1, 256, antithetic=True)
    weights = torch.linspace(-1, 1, 256)
    weights[::5] = 0.0
    total_cpu, norms_cpu = noise.weighted_sum(mutation, seeds, weights, 5000, norm_power=1.0)
    total_gpu, norms_gpu = noise.weighted_sum(mutation, seeds, weights, 5000, norm_power=1.0, device=CUDA)
    assert total_gpu.device.type == "cuda" and norms_gpu.device.type == "cuda"
    torch.testing.assert_close(norms_gpu.cpu(), norms_cpu, rtol=1e-5, atol=0)
    torch.testing.assert_close(total_gpu.cpu(), total_cpu, rtol=1e-4, atol=1e-5 * float(total_cpu.abs().max()))
    assert noise.chunk_rows(5000, device=CUDA) > noise.chunk_rows(5000)


# ----------------------------------------------------------------------------------------------
# flat and shaping


def test_flat_round_trips_on_the_gpu():
    model, _ = classification(CUDA)
    layout = flat.layout_of(model)
    vector = flat.flatten(model)
    assert vector.device.type == "cuda" and vector.numel() == layout.dim
    params = flat.unflatten(vector * 2, layout)
    assert all(params[name].device.type == "cuda" for name in params)
    stacked = flat.stacked(torch.stack([vector, vector * 3]), layout)
    assert torch.equal(stacked["0.weight"][1], 3 * model[0].weight.detach())
    flat.assign(model, vector * 2)
    assert torch.equal(flat.flatten(model), vector * 2)


def test_shaping_on_the_gpu_matches_the_cpu():
    fitness = torch.tensor([3.0, 1.0, math.inf, 2.0, math.nan, 1.0, -4.0], dtype=torch.float64)
    for shape in (
        shaping.centered_ranks,
        shaping.zscore,
        shaping.finite_or_worst,
        lambda f: shaping.improvements(2.0, f),
    ):
        want = shape(fitness)
        got = shape(fitness.to(CUDA))
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), want, equal_nan=True)


# ----------------------------------------------------------------------------------------------
# evaluate


def test_vmap_evaluator_on_the_gpu_agrees_with_serial_and_with_the_cpu():
    model, batch = classification(CUDA, dtype=torch.float64)
    seeds = noise.member_seeds(0, 0, 40, antithetic=True)
    mutation = Mutation(kind="cauchy", sigma=0.05, clip=3.0, antithetic=True)
    center = flat.flatten(model)
    vmapped = VmapEvaluator(model, F.cross_entropy, batch, chunk_size=16)
    fitness = vmapped(center, seeds, mutation)
    assert fitness.device.type == "cuda" and vmapped.fe == 40 * len(batch[0])
    serial = SerialEvaluator(model, F.cross_entropy, batch)(center, seeds, mutation)
    torch.testing.assert_close(fitness, serial, rtol=1e-10, atol=1e-12)
    model_cpu = tasks.mlp((20, 64, 5), seed=0, dtype=torch.float64)
    on_cpu = VmapEvaluator(model_cpu, F.cross_entropy, tuple(t.cpu() for t in batch))(center.cpu(), seeds, mutation)
    torch.testing.assert_close(fitness.cpu(), on_cpu, rtol=1e-10, atol=1e-12)
    assert VmapEvaluator(model, F.cross_entropy, batch).chunk_size == evaluate.default_chunk_size(
        center.numel(), torch.float64, CUDA
    )


def test_non_finite_fitness_on_the_gpu_is_ranked_worst():
    def fn(x):
        out = (x**2).sum(1)
        out[::3] = math.nan
        return out

    fitness = FunctionEvaluator(fn)(torch.zeros(8, device=CUDA), noise.member_seeds(0, 0, 9), Mutation())
    assert fitness.device.type == "cuda"
    assert torch.isinf(fitness[::3]).all() and torch.isfinite(fitness[1::3]).all()


def test_a_generation_moves_only_seeds_and_fitness_between_host_and_device():
    """P=64 members of a 21,885-parameter MLP: nothing crosses that is larger than one number per member."""
    model, batch = classification(CUDA, sizes=(64, 256, 20, 5))
    dim = flat.layout_of(model).dim
    for strategy in strategies(size=64).values():
        evaluator = VmapEvaluator(model, F.cross_entropy, batch)
        state = strategy.init(flat.flatten(model), seed=0)
        run_generations(strategy, evaluator, state.center, 1)  # first call: codebook copied to the device
        with Crossings() as crossings:
            state = run_generations(strategy, evaluator, state.center, 2)
        assert state.center.device.type == "cuda"
        assert crossings.log, "the fitness must reach the host at least once"
        assert crossings.largest() <= 65, (type(strategy).__name__, crossings.log)
        assert sum(c.numel for c in crossings.log) < dim / 10, type(strategy).__name__


# ----------------------------------------------------------------------------------------------
# population


@pytest.mark.parametrize("name", ["plus", "comma", "rolling", "openes"])
def test_strategies_follow_the_cpu_trajectory_on_the_gpu(name):
    value, _ = quadratic(50)
    value_gpu, _ = _quadratic_on(CUDA, 50)
    center = torch.linspace(-1, 1, 50, dtype=torch.float64)
    cpu = run_generations(strategies()[name], FunctionEvaluator(value), center, 20)
    gpu = run_generations(strategies()[name], FunctionEvaluator(value_gpu), center.to(CUDA), 20)
    assert gpu.center.device.type == "cuda"
    torch.testing.assert_close(gpu.center.cpu(), cpu.center, rtol=1e-9, atol=1e-12)
    assert float(value(gpu.center.cpu())) < float(value(center))


def test_rolling_improvement_trains_a_classifier_on_the_gpu():
    model, batch = classification(CUDA)
    evaluator = VmapEvaluator(model, F.cross_entropy, batch)
    strategy = RollingImprovement(size=64, lr=0.05)
    before = float(evaluator(flat.flatten(model), torch.tensor([noise.PARENT_SEED]), strategy.mutation)[0])
    state = run_generations(strategy, evaluator, flat.flatten(model), 300)
    after = float(evaluator(state.center, torch.tensor([noise.PARENT_SEED]), strategy.mutation)[0])
    assert after < 0.5 * before, (before, after)


# ----------------------------------------------------------------------------------------------
# directions and the hybrid optimizer


SOURCES = {  # name -> the source, given the model converted to the rule of that name (FA for the others)
    "improvement": lambda converted: D.improvement(strategies()["rolling"], seed=0),
    "es": lambda converted: D.es(strategies()["openes"], seed=0),
    "backprop": lambda converted: D.backprop(),
    "fa": D.feedback_alignment,
    "dfa": D.direct_feedback_alignment,
    "sign": D.sign_symmetry,
}


@pytest.mark.parametrize("name", list(SOURCES))
def test_direction_sources_on_the_gpu_match_the_cpu(name):
    found = {}
    for device in (CPU, CUDA):
        model, (x, y) = classification(device, dtype=torch.float64)
        converted = feedback.convert(model, mode=name if name in ("fa", "dfa", "sign") else "fa", seed=0)
        source = SOURCES[name](converted)
        ctx = D.Context(
            list(model.parameters()),
            closure=lambda: F.cross_entropy(converted(x), y),
            evaluator=VmapEvaluator(model, F.cross_entropy, (x, y)),
            samples=len(x),
        )
        directions, _ = source.update(source.init(ctx), ctx)
        assert all(d.device.type == device.type for d in directions)
        found[device.type] = torch.cat([d.reshape(-1) for d in directions]).cpu()
    want = found["cpu"]
    assert want.abs().max() > 0
    torch.testing.assert_close(found["cuda"], want, rtol=1e-7, atol=1e-9 * float(want.abs().max()))


@pytest.mark.parametrize("make", [lambda: D.forward_gradient(seed=0), lambda: D.spsa(seed=0, eps=1e-3)])
def test_probe_sources_are_unbiased_on_the_gpu(make):
    """The mean of n probes has RMS error sqrt((d+1)/n)|g| (see test_directions); 3x that never fails."""
    d, n = 6, 2000
    value, grad = _quadratic_on(CUDA, d)
    x = torch.linspace(-1, 1, d, dtype=torch.float64, device=CUDA).requires_grad_()
    g = grad(x.detach())
    source, total = make(), torch.zeros(d, dtype=torch.float64, device=CUDA)
    for step in range(n):
        (direction,), _ = source.update(None, D.Context([x], step=step, evaluator=FunctionEvaluator(value)))
        assert direction.device.type == "cuda"
        total += direction
    assert float((total / n - g).norm()) < 3 * math.sqrt((d + 1) / n) * float(g.norm())


def _quadratic_on(device, d):
    value, grad = quadratic(d)
    a = grad(torch.eye(d, dtype=torch.float64)).to(device)  # A = A·I column by column (A is symmetric)
    return (lambda x: 0.5 * ((x @ a) * x).sum(-1)), (lambda x: a @ x)


def test_hybrid_optimizer_trains_on_the_gpu_and_resumes_from_its_state_dict():
    model, batch = classification(CUDA)
    x, y = batch

    def make(m):
        direction = D.mix(
            bp=(0.5, D.chain(D.backprop(), D.normalize())),
            evo=(0.5, D.chain(D.improvement(RollingImprovement(size=32), seed=0), D.normalize())),
        )
        return HybridOptimizer(
            m.parameters(),
            direction,
            base=torch.optim.Adam,
            evaluator=VmapEvaluator(m, F.cross_entropy, batch),
            lr=3e-3,
        )

    optimizer = make(model)

    def closure(m=model, opt=optimizer):
        opt.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        return loss

    first = float(optimizer.step(closure, batch=batch))
    for _ in range(150):
        loss = optimizer.step(closure, batch=batch)
    assert float(loss) < 0.5 * first and all(p.device.type == "cuda" for p in model.parameters())
    assert optimizer.fe == 151 * (3 * len(x) + 33 * len(x))

    twin, _ = classification(CUDA)
    twin.load_state_dict(model.state_dict())
    twin_optimizer = make(twin)
    saved = io.BytesIO()  # through a file, as a resumed run does: the live state tensors are not shared
    torch.save(optimizer.state_dict(), saved)
    saved.seek(0)
    twin_optimizer.load_state_dict(torch.load(saved, weights_only=True))
    optimizer.step(closure, batch=batch)
    twin_optimizer.step(lambda: closure(twin, twin_optimizer), batch=batch)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_an_evolution_step_of_the_optimizer_moves_only_seeds_and_fitness():
    model, batch = classification(CUDA, sizes=(64, 256, 20, 5))
    optimizer = HybridOptimizer(
        model.parameters(),
        D.improvement(RollingImprovement(size=64), seed=0),
        evaluator=VmapEvaluator(model, F.cross_entropy, batch),
        lr=0.01,
    )
    optimizer.step()
    with Crossings() as crossings:
        optimizer.step()
        optimizer.step()
    assert 0 < crossings.largest() <= 65, crossings.log


# ----------------------------------------------------------------------------------------------
# feedback and diagnostics


def test_feedback_matrices_and_gradients_are_the_cpus():
    for mode in ("fa", "dfa", "sign"):
        grads = {}
        for device in (CPU, CUDA):
            model, (x, y) = classification(device, dtype=torch.float64)
            converted = feedback.convert(model, mode=mode, seed=3)
            found = feedback.feedback_gradients(converted, lambda: F.cross_entropy(converted(x), y), mode)
            buffers = dict(converted.named_buffers())  # DFA draws its matrices at the first forward
            assert len(buffers) == {"fa": 2, "dfa": 1, "sign": 0}[mode], (mode, list(buffers))
            assert all(b.device.type == device.type for b in buffers.values())
            grads[device.type] = ([b.cpu() for b in buffers.values()], [g.cpu() for g in found])
        assert all(torch.equal(a, b) for a, b in zip(grads["cuda"][0], grads["cpu"][0])), mode
        for a, b in zip(grads["cuda"][1], grads["cpu"][1]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_alignment_on_the_gpu():
    model, (x, y) = classification(CUDA, dtype=torch.float64)
    closure = lambda: F.cross_entropy(model(x), y)  # noqa: E731
    assert diagnostics.alignment(D.backprop(), model, closure).overall == pytest.approx(1.0, abs=1e-9)
    evaluator = VmapEvaluator(model, F.cross_entropy, (x, y))
    es = D.es(OpenES(size=512, mutation=Mutation(sigma=1e-3, antithetic=True)), seed=0)
    assert diagnostics.alignment(es, model, closure, evaluator=evaluator).overall > 0.3


# ----------------------------------------------------------------------------------------------
# checkpoint and MPI


def test_a_gpu_checkpoint_resumes_on_either_device(tmp_path):
    strategy = strategies()["openes"]
    value, _ = _quadratic_on(CUDA, 30)
    evaluator = FunctionEvaluator(value)
    state = run_generations(strategy, evaluator, torch.ones(30, dtype=torch.float64, device=CUDA), 5)
    path = checkpoint.save(tmp_path / "gpu.pt", generation=5, state=state, strategy=strategy)
    on_cpu = checkpoint.load(path, strategy=strategy, like=strategy.init(torch.ones(30, dtype=torch.float64), seed=0))
    assert on_cpu.state.center.device.type == "cpu" and torch.equal(on_cpu.state.center, state.center.cpu())
    on_gpu = checkpoint.load(path, strategy=strategy, like=state)
    assert on_gpu.state.center.device.type == "cuda" and torch.equal(on_gpu.state.center, state.center)
    resumed, straight = on_gpu.state, state
    for _ in range(3):
        seeds = strategy.ask(straight)
        straight, _ = strategy.tell(straight, seeds, evaluator(straight.center, seeds, straight.mutation))
        resumed, _ = strategy.tell(resumed, seeds, evaluator(resumed.center, seeds, resumed.mutation))
    assert torch.equal(resumed.center, straight.center)


def test_two_ranks_on_one_gpu_reproduce_the_single_process_gpu_run(tmp_path):
    from test_mpi import MPIEXEC, SCRIPTS, mpirun

    if MPIEXEC is None:
        pytest.skip("needs mpiexec and mpi4py: pip install mpi4py mpich")
    pytest.importorskip("mpi4py")
    reference = tmp_path / "reference.pt"
    subprocess.run(
        [sys.executable, str(SCRIPTS / "spmd_run.py"), "--reference", str(reference), "--device", "cuda"],
        check=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    code, out = mpirun(2, SCRIPTS / "spmd_run.py", tmp_path / "spmd.pt", "--device", "cuda", timeout=180)
    assert code == 0, out
    want, got = torch.load(reference), torch.load(tmp_path / "spmd.pt")
    for name in want:
        assert got[name]["center"].device.type == "cuda"
        assert torch.equal(got[name]["fitness"], want[name]["fitness"]), name
        assert torch.equal(got[name]["center"], want[name]["center"]), name


# ----------------------------------------------------------------------------------------------
# tasks, compare, experiments, the command line and plots


def test_task_metrics_measure_a_gpu_model():
    task = tasks.get("teacher")
    model = task.make_model(0)
    want = task.metric(model)
    assert task.metric(model.to(CUDA)) == pytest.approx(want, rel=1e-5)
    split = tasks.teacher()
    labels = split.test_y.argmax(1)
    assert harness.accuracy(model, split.test_x, labels) == pytest.approx(
        harness.accuracy(model.cpu(), split.test_x, labels)
    )


def test_compare_runs_on_the_gpu_from_the_command_line(tmp_path):
    pytest.importorskip("matplotlib")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "evograd.cli",
            "compare",
            "--device",
            "cuda",
            "--task",
            "teacher",
            "--methods",
            "adam",
            "rolling",
            "hybrid",
            "--seeds",
            "1",
            "--budget-fe",
            "300000",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [run["method"] for run in runs] == ["adam", "rolling", "hybrid"]
    for run in runs:  # test MSE, lower is better: every method learned on the GPU
        assert run["curve"][-1][2] < 0.7 * run["curve"][0][2], (run["method"], run["curve"][0], run["curve"][-1])
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_an_experiment_on_the_gpu_reproduces_its_cpu_run(tmp_path):
    """Same weights, feedback matrices and minibatches on both devices: the runs differ by rounding only."""
    pytest.importorskip("matplotlib")
    records = {}
    for device in ("cpu", "cuda"):
        (tmp_path / device).mkdir()
        experiments.run("alignment", quick=True, out=tmp_path / device, device=device)
        records[device] = json.loads((tmp_path / device / "alignment.json").read_text())
    assert records["cuda"]["config"]["device"] == "cuda"
    for cpu, gpu in zip(records["cpu"]["numbers"]["runs"], records["cuda"]["numbers"]["runs"]):
        assert (cpu["rule"], cpu["depth"]) == (gpu["rule"], gpu["depth"])
        assert abs(cpu["test_accuracy"] - gpu["test_accuracy"]) <= 0.02, (cpu["rule"], cpu["depth"])
        if gpu["rule"] == "bp":
            assert max(a for layer in gpu["angles"].values() for a in layer) < 1e-3


# ----------------------------------------------------------------------------------------------
# DEAP and CuPy


def test_a_deap_population_is_scored_on_the_gpu():
    model, batch = classification(CUDA)
    center = flat.flatten(model).cpu().numpy()
    rng = np.random.default_rng(0)
    population = [list(center + 0.05 * rng.standard_normal(center.size)) for _ in range(50)]
    fitness = deap_tools.PopulationFitness(VmapEvaluator(model, F.cross_entropy, batch), device=CUDA)
    got = deap_tools.batch_map(fitness, population)
    model_cpu = tasks.mlp((20, 64, 5), seed=0)
    want = deap_tools.batch_map(
        deap_tools.PopulationFitness(VmapEvaluator(model_cpu, F.cross_entropy, tuple(t.cpu() for t in batch))),
        population,
    )
    assert all(isinstance(f, tuple) and len(f) == 1 and isinstance(f[0], float) for f in got)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5)


@pytest.fixture
def cupy():
    pytest.importorskip("cupy", reason="needs CuPy: pip install 'evograd-torch[gpu]'")
    from evograd import cupy_bridge

    return cupy_bridge.require_cupy()


def test_cupy_views_share_memory_with_torch(cupy):
    from evograd.cupy_bridge import to_cupy, to_torch

    tensor = torch.arange(12, dtype=torch.float32, device=CUDA).view(3, 4)
    array = to_cupy(tensor)
    assert array.data.ptr == tensor.data_ptr() and array.shape == (3, 4)
    array[0, 0] = 100.0
    assert float(tensor[0, 0]) == 100.0  # the same memory, seen from both sides
    back = to_torch(array * 2)
    assert back.device.type == "cuda"
    source = cupy.ones(5, dtype=cupy.float64)
    assert to_torch(source).data_ptr() == source.data.ptr


def test_cupy_evaluator_hands_over_gpu_memory_without_copies(cupy, monkeypatch):
    from evograd import CupyEvaluator, cupy_bridge

    seen, returned = [], []

    def cupy_rastrigin(x):
        seen.append((x.data.ptr, x.shape))
        out = 10 * x.shape[1] + (x**2 - 10 * cupy.cos(2 * cupy.pi * x)).sum(1)
        returned.append(out.data.ptr)
        return out

    converted = []
    original = cupy_bridge.to_torch
    monkeypatch.setattr(cupy_bridge, "to_torch", lambda a: converted.append(original(a).data_ptr()) or original(a))
    candidates = torch.randn(64, 30, generator=torch.Generator().manual_seed(0)).to(CUDA)
    evaluator = CupyEvaluator(cupy_rastrigin, chunk_size=32)
    fitness = evaluator.score(candidates)
    row_bytes = 30 * candidates.element_size()
    assert seen == [(candidates.data_ptr(), (32, 30)), (candidates.data_ptr() + 32 * row_bytes, (32, 30))]
    assert converted == returned
    torch.testing.assert_close(fitness, rastrigin(candidates), rtol=1e-5, atol=1e-4)
    assert evaluator.evaluations == 64


def test_cupy_bridge_refuses_host_tensors_and_wrong_results(cupy):
    from evograd import CupyEvaluator
    from evograd.cupy_bridge import to_cupy

    with pytest.raises(ValueError, match="needs a tensor on a CUDA device"):
        to_cupy(torch.zeros(3))
    with pytest.raises(ValueError, match="scores candidates on a CUDA device"):
        CupyEvaluator(lambda x: x.sum(1))(torch.zeros(3), noise.member_seeds(0, 0, 2), Mutation())
    with pytest.raises(ValueError, match=r"one fitness per candidate, shape \(2,\)"):
        CupyEvaluator(lambda x: x)(torch.zeros(3, device=CUDA), noise.member_seeds(0, 0, 2), Mutation())


def test_openes_minimizes_a_cupy_rastrigin(cupy):
    from evograd import CupyEvaluator

    evaluator = CupyEvaluator(lambda x: 10 * x.shape[1] + (x**2 - 10 * cupy.cos(2 * cupy.pi * x)).sum(1))
    center = torch.full((10,), 0.3, device=CUDA)
    strategy = OpenES(size=256, mutation=Mutation(sigma=0.1, antithetic=True), lr=0.02)
    state = run_generations(strategy, evaluator, center, 200)
    assert state.center.device.type == "cuda"
    assert float(rastrigin(state.center)) < 0.2 * float(rastrigin(center))
