"""The README's promises: its test command is what CI runs, and its code runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.rst").read_text()


def _blocks(language: str) -> list[str]:
    pattern = rf"\.\. code-block:: {language}\n\n((?:    .*\n|\n)+)"
    return [re.sub(r"^    ", "", block, flags=re.M).strip() for block in re.findall(pattern, README)]


def test_ci_runs_exactly_the_readme_test_command():
    commands = _blocks("bash")
    test_command = next(c for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()


def test_readme_main_command_installs_cpu_torch_first():
    main = _blocks("bash")[0]
    assert main.index("torch==2.13.0") < main.index("pip install -e")


def test_readme_python_example_runs():
    for block in _blocks("python"):
        exec(compile(block, "README.rst", "exec"), {})
