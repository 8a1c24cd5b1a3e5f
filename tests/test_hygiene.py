"""No module of evograd reaches for another module's private names (docs/design.rst, contract 9).

Each module of ``evograd/`` is parsed with ``ast`` and checked for:

* importing an underscore name (``from evograd.noise import _table``, ``from torch.x import _Y``),
  or from a private module outside its own package (a package's ``_common`` serves its siblings);
* ``name._private`` where ``name`` was bound by an import (a module or a class of another module);
* ``obj._private`` where the module itself never defines ``_private`` (as a function, class,
  assignment or attribute): a private attribute of an object that belongs to someone else, such as
  a torch layer's ``_reversed_padding_repeated_twice``.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = sorted((ROOT / "evograd").rglob("*.py"))


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def violations(source: str, module: str) -> list[str]:
    """What ``source``, the text of the dotted ``module``, takes from other modules' privates."""
    tree = ast.parse(source)
    package = module.rpartition(".")[0]  # a private module of this package is its siblings' to use
    imported, defined = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            defined.add(node.attr)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imported.update((alias.asname or alias.name).split(".")[0] for alias in node.names)

    found = []
    for node in ast.walk(tree):
        where = f"{module}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom):
            source_module = node.module or ""
            for alias in node.names:
                if private(alias.name):
                    found.append(f"{where}: imports the private name {alias.name} from {source_module}")
            parts = source_module.split(".")
            for i, part in enumerate(parts):
                if private(part) and ".".join(parts[:i]) != package:
                    found.append(f"{where}: imports from the private module {source_module}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if any(private(part) and ".".join(parts[:i]) != package for i, part in enumerate(parts)):
                    found.append(f"{where}: imports the private module {alias.name}")
        elif isinstance(node, ast.Attribute) and private(node.attr):
            text = ast.unparse(node)
            if isinstance(node.value, ast.Name) and node.value.id in imported:
                found.append(f"{where}: {text} is private to the module it was imported from")
            elif node.attr not in defined:
                found.append(f"{where}: {text} is a private attribute this module does not define")
    return found


def test_the_check_finds_each_kind_of_reach():
    source = (
        "import torch\n"
        "from evograd import noise\n"
        "from evograd.noise import _table\n"
        "from evograd.experiments._common import train\n"
        "class Mine:\n"
        "    def __init__(self):\n"
        "        self._own = 1\n"
        "    def use(self, conv, other):\n"
        "        return self._own, other._own, noise._seed, torch._C, conv._padding\n"
    )
    found = violations(source, "evograd.example")
    assert sorted(line.split(": ", 1)[1] for line in found) == [
        "conv._padding is a private attribute this module does not define",
        "imports from the private module evograd.experiments._common",
        "imports the private name _table from evograd.noise",
        "noise._seed is private to the module it was imported from",
        "torch._C is private to the module it was imported from",
    ], found
    assert violations("from evograd.experiments._common import train\n", "evograd.experiments.layers") == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_reaches_for_another_modules_private_names(path):
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    assert violations(path.read_text(), module) == []
