"""Suite-wide settings and checks.

* Process settings, once for the whole run: one torch thread (the suite's models are tiny, and more
  threads only oversubscribe the shared CI cores, several times slower) and denormal floats
  flushed, both through :func:`evograd.harness.torch_threads`, what the command line and the
  experiments use. Set here, at import, so every test sees the same settings whatever subset runs
  and in whatever order; no test module changes them.
* Tests marked ``cuda`` are skipped, with the reason, where torch sees no CUDA device.
* Tests write only into tmp dirs: in a git checkout, the run fails if it leaves a new file or
  folder (an empty one too) in the repository, outside the folders git ignored when it started
  (``.venv/``, build outputs) and ``__pycache__``.
"""

import os
import pathlib
import subprocess

import pytest
import torch

from evograd import harness

ROOT = pathlib.Path(__file__).resolve().parents[1]
harness.torch_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False here")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _ignored_folders() -> set[pathlib.Path] | None:
    """The folders git ignores now (``.venv/``, build outputs), or None outside a git checkout."""
    try:
        found = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=normal"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if found.returncode != 0:
        return None
    return {
        ROOT / line[3:].rstrip("/")
        for line in found.stdout.splitlines()
        if line.startswith("!! ") and line.endswith("/")
    }


def _paths(skip: set[pathlib.Path]) -> set[str]:
    """Every file and folder of the checkout (empty folders too, which git does not list), outside ``skip``."""
    found = set()
    for folder, dirs, files in os.walk(ROOT):
        here = pathlib.Path(folder)
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__") and here / d not in skip]
        found.update(str((here / name).relative_to(ROOT)) for name in dirs + files)
    return found


_BEFORE: tuple[set[pathlib.Path], set[str]] | None = None


def pytest_sessionstart(session):
    global _BEFORE
    skip = _ignored_folders()
    _BEFORE = None if skip is None else (skip, _paths(skip))


def pytest_sessionfinish(session, exitstatus):
    if _BEFORE is None:
        return
    skip, before = _BEFORE
    new = sorted(_paths(skip) - before)
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"tests wrote outside their tmp dirs, into the repository: {', '.join(new)}"
        if reporter is not None:
            reporter.write_line("")
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
