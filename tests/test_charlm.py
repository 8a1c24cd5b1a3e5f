"""Tests of the charlm task: the standard-library corpus and its split, the byte transformer under the
evaluators, and compare on it (full-rank and low-rank ES, Adam)."""

import copy
import math
import pathlib
import sys

import pytest
import torch

from evograd import LowRankEvaluator, Mutation, VmapEvaluator, compare, flat, noise, tasks
from evograd.tasks import text

DT = torch.float64


@pytest.fixture(scope="module")
def corpus():
    return text.stdlib_corpus()


# ----------------------------------------------------------------------------------------------
# the corpus


def test_the_corpus_is_the_same_text_on_every_call_and_split_by_file(corpus):
    again = text.stdlib_corpus()
    assert again.digest == corpus.digest and len(corpus.digest) == 64
    assert torch.equal(again.train, corpus.train) and torch.equal(again.validation, corpus.validation)
    assert corpus.python == sys.version.split()[0]
    assert not text.EXCLUDED.intersection(part for name in corpus.files for part in name.split("/")[:-1])
    assert list(corpus.files) == sorted(corpus.files) and all(name.endswith(".py") for name in corpus.files)
    # the independent reference: the files' own bytes, concatenated in path order, validation set by path hash
    root = pathlib.Path(corpus.root)
    held_out = [name for name in corpus.files if text.in_validation(name, 0.1)]
    assert list(corpus.validation_files) == held_out and 0.05 < len(held_out) / len(corpus.files) < 0.2
    assert bytes(corpus.validation.numpy()) == b"".join((root / name).read_bytes() for name in held_out)
    train = [name for name in corpus.files if name not in set(held_out)]
    assert bytes(corpus.train.numpy()) == b"".join((root / name).read_bytes() for name in train)


def _write(root, files):
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)


def test_excluded_folders_are_skipped_and_a_new_file_moves_no_other_between_sets(tmp_path):
    files = {f"pkg{i}/mod{j}.py": f"x = {i * 10 + j}\n".encode() for i in range(5) for j in range(8)}
    _write(tmp_path, {**files, "test/test_a.py": b"t", "site-packages/lib.py": b"s", "pkg0/data.txt": b"d"})
    assert text.stdlib_files(tmp_path) == tuple(sorted(files))
    before = text.stdlib_corpus(root=tmp_path, validation_fraction=0.3)
    assert 0 < len(before.validation_files) < len(files)
    _write(tmp_path, {"pkg9/new.py": b"y = 1\n"})
    after = text.stdlib_corpus(root=tmp_path, validation_fraction=0.3)
    assert set(after.validation_files) - {"pkg9/new.py"} == set(before.validation_files)
    assert after.digest != before.digest


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"validation_fraction": 1.0}, ValueError, "validation_fraction=1.0 is out of range"),
        ({"validation_fraction": "a"}, TypeError, "validation_fraction"),
    ],
)
def test_bad_corpus_settings_name_the_parameter(kwargs, error, message):
    with pytest.raises(error, match=message):
        text.stdlib_corpus(**kwargs)


def test_an_empty_root_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no"):
        text.stdlib_corpus(root=tmp_path)


def test_windows_tile_the_text_so_every_byte_after_the_first_is_a_target_once(corpus):
    x, y = text.windows(corpus.validation, context=64)
    assert x.shape == y.shape == (len(corpus.validation) // 64 - (len(corpus.validation) % 64 == 0), 64)
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x[1:, 0], y[:-1, -1])
    assert torch.equal(y.reshape(-1), corpus.validation[1 : 1 + y.numel()])
    assert x.data_ptr() == corpus.validation.data_ptr(), "a view, not a copy"
    split = text.char_split(corpus, context=64, validation_windows=100)
    step = len(x) // 100
    assert torch.equal(split.test_x, x[::step][:100]) and torch.equal(split.test_y, y[::step][:100])
    with pytest.raises(ValueError, match="validation_windows"):
        text.char_split(corpus, validation_windows=len(x) + 1)


# ----------------------------------------------------------------------------------------------
# the model


def test_the_default_model_is_a_seeded_causal_transformer_of_over_half_a_million_parameters():
    state = torch.random.get_rng_state()
    net, twin = tasks.char_transformer(seed=3), tasks.char_transformer(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state), "no global random numbers"
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), twin.parameters()))
    assert not torch.equal(net.head.weight, tasks.char_transformer(seed=4).head.weight)
    assert sum(p.numel() for p in net.parameters()) == 669_056 >= 500_000
    tokens = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    changed = tokens.clone()
    changed[:, 40:] = 7
    with torch.no_grad():
        logits, other = net(tokens), net(changed)
    assert logits.shape == (2, 64, 256)
    torch.testing.assert_close(logits[:, :40], other[:, :40])  # no position sees a later one
    assert not torch.allclose(logits[:, 40:], other[:, 40:])


@pytest.mark.parametrize(
    "kwargs, message",
    [({"width": 10, "heads": 4}, "width=10 is not a multiple of heads=4"), ({"layers": 0}, "layers=0 is out of range")],
)
def test_bad_model_sizes_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tasks.char_transformer(**kwargs)


def _materialized(model, batch, center, rows):
    """The reference: each candidate loaded into a copy of the module and called as usual."""
    losses = []
    for row in rows:
        clone = copy.deepcopy(model)
        flat.assign(clone, center + row)
        losses.append(text.next_token_loss(clone(batch[0]), batch[1]))
    return torch.stack(losses)


@pytest.mark.parametrize("rank", [None, 2])
def test_the_evaluators_score_the_model_like_a_materialized_forward(corpus, rank):
    model = tasks.char_transformer(context=8, width=16, heads=2, layers=2, seed=0, dtype=DT)
    x, y = text.windows(corpus.validation[:400], context=8)
    batch = (x[:5], y[:5])
    center = flat.flatten(model)
    seeds = torch.cat([torch.tensor([noise.PARENT_SEED]), noise.member_seeds(1, 2, 6, antithetic=True)])
    mutation = Mutation(sigma=0.05, rank=rank, antithetic=True).resolve(model)
    rows = noise.sample(mutation, seeds, center.numel(), dtype=DT)
    with torch.no_grad():
        expected = _materialized(model, batch, center, rows)
    evaluators = [VmapEvaluator(model, text.next_token_loss, batch, chunk_size=3)]
    if rank is not None:
        evaluators.append(LowRankEvaluator(model, text.next_token_loss, batch, chunk_size=3))
    for evaluator in evaluators:
        torch.testing.assert_close(evaluator(center, seeds, mutation), expected, rtol=1e-10, atol=1e-12)
    assert len(set(expected.tolist())) == len(seeds)
    assert abs(float(expected[0]) - math.log(256)) < 1.0  # an untrained byte model is near uniform


# ----------------------------------------------------------------------------------------------
# the task under compare


@pytest.fixture(scope="module")
def task():
    return tasks.charlm(validation_windows=4)


def test_the_task_reports_validation_loss_lower_is_better(task, corpus):
    assert task.name == "charlm" and task.metric_name == "validation loss" and not task.higher_is_better
    model = task.make_model(0)
    with torch.no_grad():
        expected = float(text.next_token_loss(model(task.split.test_x), task.split.test_y))
    assert task.metric(model) == pytest.approx(expected, rel=1e-6)
    assert tasks.get("charlm", validation_windows=4).split.test_x.shape == (4, 64)


@pytest.mark.parametrize(
    "method, overrides, error, message",
    [
        ("openes", {"rank": "two"}, TypeError, "openes.rank='two' must be an integer"),
        ("openes", {"rank": 0}, ValueError, "openes settings: rank=0 is out of range"),
        ("openes", {"rank": 65}, ValueError, "rank=65 is larger than the smaller side of parameter 'position'"),
        ("rolling", {"rank": 1}, ValueError, "kind='cauchy' is not allowed with rank=1"),
        ("adam", {"rank": 1}, ValueError, "adam has no setting 'rank'"),
    ],
)
def test_bad_rank_settings_are_refused_naming_the_field(task, method, overrides, error, message):
    with pytest.raises(error, match=message):
        compare.check_method(task, method, overrides)


def test_a_rank_setting_scores_members_with_the_low_rank_evaluator(task, monkeypatch):
    """openes with rank=1 trains through LowRankEvaluator, without it through VmapEvaluator; both learn
    on the same minibatches, and Adam runs on the task too."""
    built = []

    class Recording(LowRankEvaluator):
        def __init__(self, *args, **kwargs):
            built.append(type(self).__name__)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(compare, "LowRankEvaluator", Recording)
    budget = compare.Budget(fe=8, points=1)
    low = compare.run_method(task, "openes", 0, budget, overrides={"rank": 1, "size": 4, "batch_size": 1})
    assert built == ["Recording"] and low.settings["rank"] == 1
    full = compare.run_method(task, "openes", 0, budget, overrides={"size": 4, "batch_size": 1})
    assert built == ["Recording"], "full rank uses VmapEvaluator"
    adam = compare.run_method(task, "adam", 0, compare.Budget(fe=24, points=1), overrides={"batch_size": 4})
    for run in (low, full, adam):
        assert run.fe >= run.curve[-1][0] > 0 and all(math.isfinite(v) for _, _, v in run.curve)
    assert low.curve[0][2] == full.curve[0][2], "the same initial model"
    assert adam.curve[-1][2] < adam.curve[0][2]


@pytest.mark.slow
def test_compare_cli_runs_charlm_with_full_and_low_rank_es(tmp_path):
    import json
    import subprocess

    for name, extra in (("full", []), ("low", ["--set", "openes.rank=1"])):
        out = subprocess.run(
            [sys.executable, "-m", "evograd.cli", "compare", "--task", "charlm", "--methods", "adam", "openes"]
            + ["--seeds", "1", "--budget-fe", "96", "--points", "1", "--out", str(tmp_path / name)]
            + ["--set", "adam.batch_size=8", "--set", "openes.size=8", "--set", "openes.batch_size=2", *extra],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr
        payload = json.loads((tmp_path / name / "results.json").read_text())
        assert payload["metric"] == "validation loss" and payload["higher_is_better"] is False
        assert [row["method"] for row in payload["summary"]] == ["adam", "openes"]
        assert payload["runs"][1]["settings"].get("rank") == (1 if extra else None)
