"""Package-level promises: import has no side effects and pulls in no optional extra."""

import configparser
import pathlib
import re
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


ROOT = pathlib.Path(__file__).resolve().parents[1]
DISTRIBUTION = "evograd-torch"
OTHER_PROJECTS = {"evograd", "evograd-diff"}  # names on the package index that belong to unrelated projects
PIP = re.compile(r"pip3?\s+(?:install|download)\s+([^\n&;|#`]*)")
TEXT_SUFFIXES = {".py", ".rst", ".md", ".txt", ".cfg", ".toml", ".sbatch", ".sh", ""}


def _text_files() -> list[pathlib.Path]:
    """Every text file of the checkout a user could read an install hint in (no virtualenv or build output)."""
    skip = {".git", ".venv", "build", "dist", "__pycache__"}
    return sorted(
        p
        for p in ROOT.rglob("*")
        if p.is_file()
        and p.suffix in TEXT_SUFFIXES
        and not skip & set(p.relative_to(ROOT).parts)
        and not any(part.endswith(".egg-info") for part in p.parts)
    )


def requirements(text: str) -> list[str]:
    """The distributions that the ``pip install`` commands in ``text`` name, normalized (local paths left out).

    Examples:
        >>> requirements("pip install -q 'evograd[gpu]' mpich && evograd compare  # or: pip install -e '.[mpi]'")
        ['evograd', 'mpich']
        >>> requirements("pip install -e /path/to/evograd; pip install Evograd_Diff==0.4 'evograd-torch[rl]'")
        ['evograd-diff', 'evograd-torch']
    """
    names = []
    for match in PIP.finditer(text):
        for token in match.group(1).split():
            token = token.strip("'\"")
            if token.startswith(("-", ".", "/", "~", "$")):
                continue
            name = re.match(r"[A-Za-z0-9][A-Za-z0-9_.-]*", token)
            if name:
                names.append(re.sub(r"[-_.]+", "-", name.group(0)).lower())
    return names


def test_no_install_hint_names_another_projects_distribution():
    """``evograd`` on the package index is an unrelated project: every hint names ``evograd-torch`` or a local path."""
    files = _text_files()
    assert ROOT / "README.rst" in files and ROOT / "evograd" / "mpi.py" in files
    found = {
        str(path.relative_to(ROOT)): sorted(OTHER_PROJECTS & set(requirements(path.read_text(errors="replace"))))
        for path in files
        if path != pathlib.Path(__file__)
    }
    assert "evograd-torch" in requirements((ROOT / "README.rst").read_text())
    assert not {path: names for path, names in found.items() if names}


def test_distribution_name_license_and_typing_marker():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["name"] == DISTRIBUTION
    assert config["metadata"]["license"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "evograd" / "py.typed").exists() and "py.typed" in config["options.package_data"]["evograd"]
    assert f"{evograd.__version__}" in (ROOT / "CHANGELOG.rst").read_text()


def test_version_flag_prints_the_package_version(capsys):
    from evograd import cli

    try:
        cli.main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert capsys.readouterr().out.strip() == f"evograd {evograd.__version__}"
