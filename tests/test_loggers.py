"""Loggers write what they are given, readable back by the tools users read them with; the progress board."""

import csv
import io
import json
import math
import sys

import pytest
import torch
from torch.nn import functional as F

from evograd import harness, loggers, tasks
from evograd.progress import Board

RECORDS = [
    {"method": "adam", "seed": 0, "fe": 0, "loss": 2.5},
    {"method": "adam", "seed": 0, "fe": 100, "loss": 1.25},
    {"method": "sgd", "seed": 1, "fe": 100, "loss": float("nan"), "note": "diverged"},
]


def test_csv_rows_read_back_and_columns_widen(tmp_path):
    with loggers.CSVLogger(tmp_path / "log.csv") as log:
        for record in RECORDS:
            log.log(record)
    with open(tmp_path / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["method", "seed", "fe", "loss", "note"]
    assert [float(r["loss"]) for r in rows[:2]] == [2.5, 1.25] and math.isnan(float(rows[2]["loss"]))
    assert [r["note"] for r in rows] == ["", "", "diverged"]
    with loggers.CSVLogger(tmp_path / "log.csv", append=True) as log:  # a resumed run continues the file
        log.log({"method": "sgd", "seed": 1, "fe": 200, "loss": 0.5})
    with open(tmp_path / "log.csv", newline="") as handle:
        assert [r["fe"] for r in csv.DictReader(handle)] == ["0", "100", "100", "200"]


def test_json_lines_read_back(tmp_path):
    with loggers.JSONLinesLogger(tmp_path / "log.jsonl") as log:
        for record in RECORDS:
            log.log(record)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines[:2] == RECORDS[:2] and lines[2]["loss"] == "nan" and lines[2]["note"] == "diverged"


def test_tensorboard_scalars_read_back_per_run(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    with loggers.TensorBoardLogger(tmp_path, step="fe", run=("method", "seed")) as log:
        for record in RECORDS[:2] + [{"method": "sgd", "seed": 1, "fe": 50, "loss": 3.0}]:
            log.log(record)
    events = EventMultiplexer().AddRunsFromDirectory(str(tmp_path))
    events.Reload()
    assert sorted(events.Runs()) == ["method=adam,seed=0", "method=sgd,seed=1"]
    adam = [(e.step, e.value) for e in events.Scalars("method=adam,seed=0", "loss")]
    assert adam == [(0, 2.5), (100, 1.25)]
    assert [(e.step, e.value) for e in events.Scalars("method=sgd,seed=1", "loss")] == [(50, 3.0)]


def test_tensorboard_missing_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'evograd-torch\[tensorboard\]'"):
        loggers.TensorBoardLogger(tmp_path)
    with pytest.raises(ImportError, match="tensorboard"):
        loggers.require("tensorboard")
    assert list(tmp_path.iterdir()) == []


def test_a_users_loop_streams_each_measurement(tmp_path):
    """The README's example: a Recorder hands every measurement to the logger as it is made."""
    split = tasks.digits()
    model = tasks.mlp((64, 16, 10), seed=0)
    step = harness.optimizer_step(
        torch.optim.Adam(model.parameters(), lr=1e-2),
        model,
        F.cross_entropy,
        harness.Minibatches(split.train_x, split.train_y, 64, seed=0),
    )
    seen, steps = [], [0]

    def counted() -> int:
        steps[0] += 1
        return step()

    class Spy(loggers.JSONLinesLogger):
        def log(self, record):
            seen.append(steps[0])  # how far training was when the record arrived
            super().log(record)

    with Spy(tmp_path / "log.jsonl") as log:
        recorder = harness.Recorder(
            lambda: harness.accuracy(model, split.test_x, split.test_y),
            harness.Budget(fe=20_000, points=4),
            logger=log,
            tags={"run": "adam"},
            label="test accuracy",
        )
        run = harness.train(counted, recorder)
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["fe"], r["seconds"], r["test accuracy"]) for r in logged] == [tuple(p) for p in run.curve]
    assert seen == sorted(seen) and seen[0] == 0 and seen[-2] < steps[0], "streamed as training goes, not at the end"
    assert {r["run"] for r in logged} == {"adam"}


def test_plain_progress_has_no_control_characters_and_counts_runs():
    stream = io.StringIO()
    with Board(3, stream=stream) as board:
        board.skip("adam seed 0")
        for label in ("adam seed 1", "sgd seed 0"):
            progress = board.start(label)
            for k in range(9):
                progress(k / 8, f"loss {1 / (k + 1):.3f}")
    text = stream.getvalue()
    assert not any(ord(c) < 32 and c != "\n" for c in text), "no escape codes or carriage returns in a log"
    lines = text.splitlines()
    assert len(lines) == 2 * 5  # a line at 0%, 25%, 50%, 75% and 100% of each run
    assert lines[0].startswith("run 2 of 3  adam seed 1") and lines[-1].startswith("run 3 of 3  sgd seed 0")
    assert all("ETA all" in line for line in lines)


def test_interactive_progress_draws_with_rich():
    stream = io.StringIO()
    with Board(2, stream=stream, interactive=True) as board:
        progress = board.start("adam seed 0")
        progress(0.5, "half")
        progress(1.0, "done")
    assert "run 1 of 2  adam seed 0" in stream.getvalue()
