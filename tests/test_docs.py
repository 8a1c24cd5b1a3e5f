"""The Sphinx documentation: docs/api.rst covers the public API, and the docs build without a warning.

The build runs Sphinx in a subprocess with ``-W`` (warnings are errors: a docstring whose markup
docutils cannot read, a broken cross-reference, a module autodoc cannot import) when the ``docs``
extra is installed, and is skipped otherwise.
"""

import importlib
import importlib.util
import pathlib
import re
import subprocess
import sys
import types

import pytest

import evograd

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def public_modules() -> list[str]:
    return [name for name in evograd.__all__ if isinstance(getattr(evograd, name, None), types.ModuleType)]


def test_api_reference_documents_every_public_module_and_top_level_name():
    api = (DOCS / "api.rst").read_text()
    documented = set(re.findall(r"^\.\. automodule:: evograd\.([\w.]+)$", api, flags=re.M))
    assert set(public_modules()) <= documented, set(public_modules()) - documented
    listed = re.findall(r"^   ~([\w.]+)$", api, flags=re.M)
    names = [name for name in evograd.__all__ if not name.startswith("_") and name not in public_modules()]
    assert sorted(entry.rsplit(".", 1)[1] for entry in listed) == sorted(names)
    for entry in listed:  # each entry names the documented module that exports the object
        module, name = entry.rsplit(".", 1)
        assert module in documented, entry
        exporter = importlib.import_module(f"evograd.{module}")
        assert name in exporter.__all__ and getattr(exporter, name) is getattr(evograd, name), entry


def test_docs_toctree_holds_the_guides_and_the_api_reference():
    index = (DOCS / "index.rst").read_text()
    entries = re.findall(r"^   (\w+)$", index.split(".. toctree::", 1)[1], flags=re.M)
    assert entries == ["design", "experiments", "api"]
    assert all((DOCS / f"{entry}.rst").exists() for entry in entries)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("sphinx") is None, reason="needs sphinx: pip install -e '.[docs]'")
def test_docs_build_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", tmp_path / "doctrees"]
        + [DOCS, tmp_path / "html"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "html" / "api.html").read_text()
    for target in ("strategies.OpenES", "mpi.MPIEvaluator", "noise.member_seeds", "optim.HybridOptimizer.step"):
        assert f'id="evograd.{target}"' in api, target  # classes, functions and methods have entries
