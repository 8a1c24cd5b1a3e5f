"""Checks of the Slurm template mpi/slurm.sbatch that run without a cluster (CI), and with one when present.

* ``bash -n``: the template parses.
* ``sbatch --test-only``: when Slurm is installed and its controller answers, the template's
  resource request fits the cluster as shipped (it once asked for 2 nodes x 32 tasks and stayed
  pending on a one-node cluster). Skipped otherwise.
* The template run end to end with ``srun`` replaced by a stand-in that records its options and
  runs the command as one MPI rank: the flags it must pass, its log lines, and a second start
  (``SLURM_RESTART_COUNT=1``, what a requeued job sees) that first uses up the step id of the killed
  start and then resumes from its checkpoint to the same state digest as an uninterrupted run.

The real requeue on a one-node slurm-wlm cluster is documented in mpi/README.rst.
"""

import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "mpi" / "slurm.sbatch"
VENV = pathlib.Path(sys.prefix)

STAND_IN = """#!/bin/bash
# srun stand-in: record the options, then run the command (what follows the options) as one rank.
echo "$@" >> "$SRUN_RECORD"
while [[ "$1" == -* ]]; do shift; done
exec "$@"
"""


def test_template_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(TEMPLATE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def slurm_controller_answers() -> bool:
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return ping.returncode == 0 and "UP" in ping.stdout


@pytest.mark.skipif(not slurm_controller_answers(), reason="needs Slurm with a running controller (mpi/README.rst)")
def test_template_resource_request_fits_the_cluster_as_shipped(tmp_path):
    result = subprocess.run(
        ["sbatch", "--test-only", f"--output={tmp_path}/never-%j.out", str(TEMPLATE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"Job \d+ to start at \S+ using \d+ processors", result.stderr), result.stderr


def run_template(tmp_path, run, **variables):
    """Run the template as Slurm would (in the submit directory, SLURM_* set) with the srun stand-in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    srun = bin_dir / "srun"
    srun.write_text(STAND_IN)
    srun.chmod(0o755)
    record = tmp_path / f"srun-{run}.txt"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SRUN_RECORD": str(record),
        "SLURM_JOB_ID": "7",
        "SLURM_RESTART_COUNT": str(run),
        "SLURM_NTASKS": "1",
        "SLURM_CPUS_PER_TASK": "1",
        "SLURM_SUBMIT_DIR": str(ROOT),
        "VENV": str(VENV),
        "TASK": "teacher",
        "STRATEGY": "openes",
        "POPULATION": "8",
        "CHUNK_SIZE": "4",
        "CHECKPOINT_EVERY": "5",
        "EXTRA_ARGS": "--batch-size 32 --log-every 5",
        **{key: str(value) for key, value in variables.items()},
    }
    result = subprocess.run(["bash", str(TEMPLATE)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, record.read_text()


def digest(output: str) -> str:
    return re.search(r"state digest ([0-9a-f]{16})", output).group(1)


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or not (VENV / "bin" / "activate").exists(),
    reason="needs mpi4py in a virtualenv (the template activates one)",
)
def test_template_runs_and_a_resubmission_resumes_to_the_uninterrupted_digest(tmp_path):
    first, steps = run_template(tmp_path, 0, GENERATIONS=10, CHECKPOINT_DIR=tmp_path / "requeued")
    assert "=== job 7 start 0" in first
    assert "from generation 0" in first
    (training,) = steps.splitlines()
    assert training.split()[:2] == ["--kill-on-bad-exit=1", "--mpi=pmi2"]
    assert re.search(r"--ranks 1 .*--resume", training), training

    resumed, steps = run_template(tmp_path, 1, GENERATIONS=20, CHECKPOINT_DIR=tmp_path / "requeued")
    assert "=== job 7 start 1" in resumed
    empty, training = steps.splitlines()  # the first requeue uses up step id 0 of the killed start
    assert empty == "--ntasks=1 --mpi=none true" and training.startswith("--kill-on-bad-exit=1")
    assert "from generation 10" in resumed
    uninterrupted, _ = run_template(tmp_path, 0, GENERATIONS=20, CHECKPOINT_DIR=tmp_path / "clean")
    assert "from generation 0" in uninterrupted
    assert digest(resumed) == digest(uninterrupted)
    assert digest(first) != digest(uninterrupted)
