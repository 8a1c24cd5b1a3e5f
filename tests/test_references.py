"""Every file the package, docs, examples and tests cite is in the repository; none cites a file outside it.

Docstrings and docs point readers at files ("see benchmarks/RESULTS.rst", "docs/design.rst,
contract 2"); a reference that does not resolve sends them nowhere. Files outside the repository
(a team's private design notes) must never be cited at all.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCANNED = ("evograd", "docs", "mpi", "benchmarks", "examples", "tests")
SUFFIXES = (".py", ".rst", ".md", ".sbatch", ".txt", ".toml", ".cfg")
# a path under one of the repository's top-level folders, not part of a longer path or URL
REFERENCE = re.compile(r"(?<![\w./-])((?:evograd|docs|tests|mpi|benchmarks|examples|\.ci)/[\w./*-]*[\w*-])")
OUTSIDE = re.compile(r"DESIGN\.md|\bNOTES\b")


def _sources() -> list[pathlib.Path]:
    found = [ROOT / "README.rst", ROOT / "CHANGELOG.rst"]
    for folder in SCANNED:
        found += sorted(
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and p.suffix in SUFFIXES and ".venv" not in p.parts and p != pathlib.Path(__file__)
        )
    return found


def references(text: str) -> list[str]:
    """The repository paths cited in ``text`` (a glob's fixed part for ``docs/compare/*``).

    Examples:
        >>> references("see ``benchmarks/RESULTS.rst``. Written to docs/compare/*, not https://x.org/docs/a.")
        ['benchmarks/RESULTS.rst', 'docs/compare/']
    """
    return [m.group(1).rstrip(".").split("*")[0] for m in REFERENCE.finditer(text)]


def test_the_scan_sees_the_references_it_should():
    """Guard against a pattern that silently matches nothing: the README cites these files."""
    cited = set(references((ROOT / "README.rst").read_text()))
    assert {"benchmarks/RESULTS.rst", "mpi/README.rst", "docs/compare/curves.png"} <= cited


@pytest.mark.parametrize("source", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_file_exists_and_nothing_outside_is_cited(source):
    text = source.read_text()
    missing = sorted({ref for ref in references(text) if not (ROOT / ref).exists()})
    assert not missing, f"{source.relative_to(ROOT)} cites files not in the repository: {missing}"
    outside = sorted({m.group(0) for m in OUTSIDE.finditer(text)})
    assert not outside, f"{source.relative_to(ROOT)} cites {outside}, which the repository does not contain"
