"""The command line as a user lives with it: resume after Ctrl-C, output folders, and a fuzz of every input.

Runs are in-process (``cli.main``) on tiny budgets; the fuzz checks inputs with ``--dry-run``, which
validates everything a real run validates and then stops, so a value that is wrongly accepted shows
up as exit code 0 instead of training.
"""

import csv
import json
import re
import signal

import pytest

from evograd import cli, compare

pytest.importorskip("sklearn")

TINY = ["--methods", "adam", "rolling", "--seeds", "2", "--budget-fe", "20000"]


def _main(*args: str) -> int:
    """``evograd ARGS`` in this process: its exit code (argparse's own errors exit through SystemExit)."""
    try:
        return cli.main(list(args))
    except SystemExit as stop:
        return stop.code


def _without_wall_time(out) -> tuple:
    """What a comparison in ``out`` found, without the wall-clock seconds (never equal between two runs)."""
    payload = json.loads((out / "results.json").read_text())
    runs = [
        (r["method"], r["seed"], r["settings"], r["fe"], [(p[0], p[2]) for p in r["curve"]]) for r in payload["runs"]
    ]
    table = [re.sub(r"\s+\S+$", "", line) for line in (out / "table.txt").read_text().splitlines()]  # last column
    with open(out / "log.csv", newline="") as handle:
        log = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]
    return runs, table, log


@pytest.mark.slow
def test_an_interrupted_comparison_resumes_to_the_same_table(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    assert _main("compare", *TINY, "--out", str(tmp_path / "whole")) == 0

    calls = []
    real = compare.run_method

    def interrupted_after_two(*args, **kwargs):
        calls.append(args[1:3])
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third run
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "run_method", interrupted_after_two)
    out = tmp_path / "cut"
    capsys.readouterr()
    assert _main("compare", *TINY, "--out", str(out)) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert err.startswith("evograd: interrupted: 2 of 4 runs finished and are kept in ")
    resume = err.split("resume with: ")[1]
    assert resume == f"evograd compare {' '.join(TINY)} --out {out} --resume"
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["adam-seed0.json", "adam-seed1.json"]
    assert not (out / "results.json").exists()

    calls.clear()
    assert _main(*resume.split()[1:]) == 0
    assert calls == [("rolling", 0), ("rolling", 1)], "finished runs are loaded, not run again"
    assert _without_wall_time(out) == _without_wall_time(tmp_path / "whole")


def test_out_must_be_empty_unless_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _main("compare", *TINY, "--out", str(out), "--dry-run") == 2
    assert "is not empty: pass --resume" in capsys.readouterr().err
    assert _main("compare", *TINY, "--out", str(out), "--resume", "--dry-run") == 2
    assert "holds no evograd run to resume" in capsys.readouterr().err
    assert _main("compare", *TINY, "--out", str(out), "--resume", "--overwrite") == 2
    assert "not both" in capsys.readouterr().err
    assert _main("compare", *TINY, "--out", str(out), "--overwrite", "--dry-run") == 0
    assert _main("compare", *TINY, "--out", str(tmp_path / "new"), "--resume", "--dry-run") == 0  # nothing to resume
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and [p.name for p in out.iterdir()] == ["notes.txt"]


def test_resume_refuses_other_inputs_and_overwrite_removes_only_evograds_files(tmp_path, capsys):
    out = tmp_path / "out"
    assert _main("compare", "--methods", "adam", "--seeds", "1", "--budget-fe", "3000", "--out", str(out)) == 0
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert (
        _main("compare", "--methods", "adam", "--seeds", "1", "--budget-fe", "4000", "--out", str(out), "--resume") == 2
    )
    err = capsys.readouterr().err
    assert "has budget {'fe': 3000" in err and "this command {'fe': 4000" in err
    assert (
        _main("compare", "--methods", "sgd", "--seeds", "1", "--budget-fe", "3000", "--out", str(out), "--overwrite")
        == 0
    )
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["sgd-seed0.json"], "the adam run of before is gone"
    assert (out / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------------------------
# fuzz: every flag and config key fed bad values


BAD = ["", " ", "abc", "nan", "inf", "-inf", "-1", "0", "2.7", "1e308", "1" + "0" * 30, "None", "[1]", "True"]
# flags whose values argparse parses, and those of these values that are valid there
FLAGS = {
    "--task": {"compare": set()},
    "--methods": {"compare": set()},
    "--budget-fe": {"compare": {"1" + "0" * 30}},  # a huge budget is valid (it is a long run, not a mistake)
    "--budget-seconds": {"compare": {"2.7", "1e308", "1" + "0" * 30}},
    "--seeds": {"compare": set(), "experiment": set()},
    "--threads": {"compare": set()},
    "--device": {"compare": set(), "experiment": set()},
    "--data-path": {"compare": set()},
    "--out": {"compare": {"abc", "nan", "inf", "-1", "0", "2.7", "1e308", "1" + "0" * 30, "None", "[1]", "True"}},
    "--log": {"compare": set(), "experiment": set()},
}


class _Hang(Exception):
    pass


def _one_line_or_valid(command: list[str], capsys) -> int:
    """``evograd COMMAND --dry-run``: its exit code, after checking that an error is one line, no traceback."""

    def hang(signum, frame):
        raise _Hang(" ".join(command))

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        code = _main(*command, "--dry-run")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert code in (0, 2), (command, code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("usage")]
        assert len(lines) == 1 and "Traceback" not in err, (command, err)
    return code


@pytest.mark.parametrize("flag", sorted(FLAGS))
def test_fuzz_every_flag(flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for command, valid in FLAGS[flag].items():
        prefix = ["compare", "--methods", "adam"] if command == "compare" else ["experiment", "alignment", "--quick"]
        if flag == "--methods":
            prefix = ["compare"]
        if flag == "--data-path":
            prefix += ["--task", "mnist"]
        accepted = {value for value in BAD if _one_line_or_valid([*prefix, flag, value], capsys) == 0}
        assert accepted == valid, (command, flag)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing is created"


@pytest.mark.parametrize("method", list(compare.METHODS))
def test_fuzz_every_setting(method, tmp_path, monkeypatch, capsys):
    """``--set METHOD.KEY=VALUE`` for every key of every method: never a traceback; the always-wrong values refused."""
    monkeypatch.chdir(tmp_path)
    always_wrong = {"", " ", "nan", "inf", "-inf", "[1]"}
    for key, field in compare.settings_schema(method).items():
        wrong = set(always_wrong)
        if str not in field.kinds:
            wrong.add("abc")
        if float not in field.kinds and int in field.kinds:
            wrong |= {"2.7", "1e308", "1" + "0" * 30}  # a float, or beyond 64 bits
        if bool in field.kinds:
            wrong |= {"-1", "0", "2.7"}
        elif float in field.kinds or int in field.kinds:
            wrong.add("True")
        for value in BAD:
            code = _one_line_or_valid(["compare", "--methods", method, "--set", f"{method}.{key}={value}"], capsys)
            assert code == 2 or value not in wrong, (method, key, value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


CONFIG_VALUES = {
    "task": ['""', '"imagenet"', "3", "nan", "[1]", "true"],
    "method": ['""', '"rollng"', "3", "inf", "{a = 1}"],
    "seed": ["2.7", "-1", '"one"', "nan", "true", str(2**63)],
    "budget_fe": ["0", "-5", "2.5", '"many"', "inf"],
    "budget_seconds": ["0", "-1.0", "nan", "inf", '"x"', "true"],
    "out": ['""', "3", "[1]", '"/proc/evograd"'],
    "data_path": ['""', "3", "false"],
    "device": ['"tpu"', '""', "0", "nan"],
    "settings": ['"abc"', "3", "[1, 2]", "{size = 0}", "{size = 2.5}", "{lr = nan}", "{lrr = 0.1}", "{batch_size = 0}"],
}


@pytest.mark.parametrize("key", sorted(CONFIG_VALUES))
def test_fuzz_every_config_key(key, tmp_path, monkeypatch, capsys):
    """``evograd run`` with each key of its TOML config set wrong: exit 2, one line, nothing created."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "run.toml"
    for value in CONFIG_VALUES[key]:
        body = {"method": '"rolling"', "budget_fe": "1000", key: value}
        config.write_text("".join(f"{k} = {v}\n" for k, v in body.items()))
        assert _one_line_or_valid(["run", str(config)], capsys) == 2, (key, value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]


def test_typo_in_a_setting_lists_the_methods_and_keys(capsys):
    assert _main("compare", "--set", "rollng.lr=0.1", "--dry-run") == 2
    assert "method 'rollng' is unknown; allowed sgd, adam" in capsys.readouterr().err
    assert _main("compare", "--set", "rolling.lrr=0.1", "--dry-run") == 2
    assert "rolling has no setting 'lrr'; allowed alpha, antithetic, batch_size, beta" in capsys.readouterr().err
