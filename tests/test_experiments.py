"""The ``evograd experiment`` commands: quick runs end to end, output structure, and the verdict rules."""

import contextlib
import io
import json

import pytest
import torch

from evograd import cli, experiments
from evograd.experiments import alignment, layers, probes, random_labels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Every experiment run once through the CLI in quick mode: name -> (exit code, stdout, out dir)."""
    found = {}
    for name in experiments.EXPERIMENTS:
        out = tmp_path_factory.mktemp(name.replace("-", "_"))
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = cli.main(["experiment", name, "--quick", "--out", str(out)])
        found[name] = (code, buffer.getvalue(), out)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("name", list(experiments.EXPERIMENTS))
def test_quick_run_writes_json_table_png_and_verdict(quick_runs, name):
    code, stdout, out = quick_runs[name]
    assert code == 0
    record = json.loads((out / f"{name}.json").read_text())
    assert set(record) >= {"experiment", "claim", "command", "config", "seeds", "seconds", "numbers", "verdict"}
    assert record["experiment"] == name and record["quick"] is True
    assert record["command"].startswith(f"evograd experiment {name} --quick")
    line = record["verdict"]["line"]
    assert line.startswith("claim holds" if record["verdict"]["holds"] else "claim does not hold")
    assert line in stdout and line in (out / f"{name}.txt").read_text()
    png = (out / f"{name}.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 5_000
    # the stored verdict is the rule applied to the stored numbers
    assert experiments.EXPERIMENTS[name].verdict(record["numbers"]) == (record["verdict"]["holds"], line)


@pytest.mark.slow
def test_probes_numbers_cover_every_kind_weighting_and_n(quick_runs):
    numbers = json.loads((quick_runs["probes"][2] / "probes.json").read_text())["numbers"]
    assert {(r["kind"], r["weighting"]) for r in numbers["cosines"]} == {
        (k, w) for k in probes.KINDS for w in probes.WEIGHTINGS
    }
    assert all(
        len(r["cosine"]) == len(numbers["ns"]) and all(-1 <= c <= 1 for c in r["cosine"]) for r in numbers["cosines"]
    )


@pytest.mark.slow
def test_alignment_backprop_has_zero_angle(quick_runs):
    numbers = json.loads((quick_runs["alignment"][2] / "alignment.json").read_text())["numbers"]
    bp = [a for r in numbers["runs"] if r["rule"] == "bp" for layer in r["angles"].values() for a in layer]
    assert bp and max(bp) < 1e-3


def test_bad_seed_count_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys):
    assert cli.main(["experiment", "layers", "--seeds", "0", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seeds=0 is out of range" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error given where torch sees no CUDA device")
def test_cuda_without_a_gpu_is_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["experiment", "alignment", "--quick", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err
    with pytest.raises(ValueError, match="device='cuda'.*no CUDA device"):
        experiments.run("alignment", quick=True, out=tmp_path, device="cuda")


# --- verdict rules on synthetic numbers, both outcomes


def _probes_numbers(gauss_cos, best_cos, gauss_acc, best_acc):
    cos = [
        {"kind": k, "weighting": w, "depth": 4, "cosine": [c]}
        for k, c in (("gaussian", gauss_cos), ("loguniform", best_cos), ("cauchy", 0.0))
        for w in probes.WEIGHTINGS
    ]
    acc = [
        {"kind": k, "weighting": w, "train_accuracy": a}
        for k, a in (("gaussian", gauss_acc), ("loguniform", best_acc), ("cauchy", 0.1))
        for w in probes.WEIGHTINGS
    ]
    return {"ns": [256], "verdict_n": 256, "depths": [4], "seeds": 3, "cosines": cos, "training": acc}


def test_verdict_probes_both_outcomes():
    holds, line = probes.verdict_probes(_probes_numbers(0.22, 0.31, 0.8, 0.85))
    assert holds and "loguniform" in line and "0.310 vs Gaussian 0.220" in line
    assert not probes.verdict_probes(_probes_numbers(0.22, 0.23, 0.8, 0.85))[0]  # under +10%
    assert not probes.verdict_probes(_probes_numbers(0.22, 0.31, 0.8, 0.75))[0]  # trains worse


def _alignment_numbers(fa_acc, noise_acc, fa_angle=45.0, noise_angle=89.0):
    runs = [
        {
            "rule": rule,
            "depth": d,
            "seed": 0,
            "test_accuracy": acc,
            "epochs": [0, 1],
            "angles": {"0.weight": [90.0, angle], "2.weight": [90.0, angle]},
        }
        for rule, acc, angle in (("fa", fa_acc, fa_angle), ("noise", noise_acc, noise_angle))
        for d in (2, 4)
    ]
    return {"depths": [2, 4], "seeds": 1, "runs": runs}


def test_verdict_alignment_both_outcomes():
    holds, line = alignment.verdict_alignment(_alignment_numbers(0.95, 0.70))
    assert holds and "+25.0 points" in line
    assert not alignment.verdict_alignment(_alignment_numbers(0.95, 0.93))[0]
    assert not alignment.verdict_alignment(_alignment_numbers(0.95, 0.70, fa_angle=95.0))[0]


def _random_label_numbers(shuffled_fe, reached=True):
    runs = []
    for m in random_labels.METHODS:
        runs.append({"method": m, "labels": "true", "seed": 0, "fe": 1000, "seconds": 1.0, "reached": True})
        runs.append(
            {
                "method": m,
                "labels": "shuffled",
                "seed": 0,
                "fe": shuffled_fe,
                "seconds": 2.0,
                "reached": reached or m != "evolution",
            }
        )
    return {"n_train": 256, "caps": {m: 10_000 for m in random_labels.METHODS}, "seeds": 1, "runs": runs}


def test_verdict_random_labels_both_outcomes():
    holds, line = random_labels.verdict_random_labels(_random_label_numbers(2_500))
    assert holds and "adam 2.5x" in line
    assert not random_labels.verdict_random_labels(_random_label_numbers(8_000))[0]  # ratio 8 > 5
    holds, line = random_labels.verdict_random_labels(_random_label_numbers(10_000, reached=False))
    assert not holds and "evolution >10.0x" in line


def test_random_labels_ratio_is_undefined_when_true_labels_are_not_fitted():
    numbers = _random_label_numbers(2_000)
    numbers["runs"][0]["reached"] = False
    value, status = random_labels.ratio(numbers, "adam")
    assert status == "undefined" and value != value
    assert "adam undefined" in random_labels.verdict_random_labels(numbers)[1]


def _layers_numbers(**accs):
    base = dict.fromkeys(layers.ARMS, 0.8)
    base.update({k.replace("_", "-"): v for k, v in accs.items()})
    return {
        "depth": 4,
        "fe": 1000,
        "ratio": 4.0,
        "seeds": 1,
        "runs": [{"arm": a, "seed": 0, "test_accuracy": v} for a, v in base.items()],
    }


def test_verdict_layers_both_outcomes():
    good = {"bottom_heavy": 0.9, layers.SPLITS[0]: 0.9}
    assert layers.verdict_layers(_layers_numbers(**good))[0]
    assert not layers.verdict_layers(_layers_numbers(bottom_heavy=0.9))[0]  # placement arm tied
    assert not layers.verdict_layers(_layers_numbers(**{layers.SPLITS[0]: 0.9}))[0]  # scales tied


def test_layer_factors_keep_the_mean_square_and_order():
    from evograd import tasks

    model = tasks.mlp((8, 6, 6, 3), seed=0)
    for arm in layers.SCALES:
        factors = layers.layer_factors(model, arm, 4.0)
        sizes = {n: sum(p.numel() for p in model.get_submodule(n).parameters()) for n in factors}
        assert sum(sizes[n] * f**2 for n, f in factors.items()) / sum(sizes.values()) == pytest.approx(1.0)
    bottom = list(layers.layer_factors(model, "bottom-heavy", 4.0).values())
    assert bottom == sorted(bottom, reverse=True) and bottom[0] / bottom[-1] == pytest.approx(4.0)
