"""Package-level promises: import has no side effects and pulls in no optional extra."""

import subprocess
import sys

import evograd


def test_import_needs_no_optional_extra():
    code = (
        "import sys, evograd; "
        "print(sorted(m for m in ('mpi4py', 'cupy', 'gymnasium', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_public_names_are_exported():
    for name in (
        "Mutation",
        "ScaleFreeEvolution",
        "RollingImprovement",
        "OpenES",
        "SerialEvaluator",
        "VmapEvaluator",
        "HybridOptimizer",
        "MPIEvaluator",
    ):
        assert name in evograd.__all__ and hasattr(evograd, name)
    assert callable(evograd.noise.sample) and callable(evograd.feedback.convert)
    assert callable(evograd.directions.mix) and callable(evograd.diagnostics.alignment)
