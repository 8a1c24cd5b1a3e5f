"""The ``evograd experiment`` commands: quick runs end to end, output structure, and the verdict rules."""

import contextlib
import io
import json

import pytest
import torch
from torch.nn import functional as F

from evograd import cli, experiments, noise, tasks
from evograd.experiments import alignment, layers, probes, random_labels, rolling_average, structured_noise

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
def test_probes_json_holds_the_full_sigma_sweep_of_every_cell(quick_runs):
    record = json.loads((quick_runs["probes"][2] / "probes.json").read_text())
    numbers = record["numbers"]
    assert len(numbers["sigmas"]) >= 6 and numbers["sigmas"] == sorted(numbers["sigmas"])
    assert {(r["cell"], r["weighting"], r["split"]) for r in numbers["cosines"]} == {
        (c, w, s) for c in probes.CELLS for w in probes.WEIGHTINGS for s in probes.SPLITS
    }
    for r in numbers["cosines"]:
        assert len(r["cosine"]) == len(numbers["sigmas"])
        assert all(len(row) == len(numbers["ns"]) and all(-1 <= c <= 1 for c in row) for row in r["cosine"])
    gauss = numbers["selected"]["gaussian/fixed"]["sigma"]
    assert f"σ={gauss:g}" in record["verdict"]["line"]  # the verdict names the sigma it used
    assert {r["cell"] for r in numbers["training"]} == set(probes.CELLS)


@pytest.mark.slow
def test_layers_and_random_labels_save_the_rule_inputs(quick_runs):
    layers_numbers = json.loads((quick_runs["layers"][2] / "layers.json").read_text())["numbers"]
    assert layers_numbers["evolved"]["bottom"] == layers_numbers["evolved"]["top"]
    assert layers_numbers["ratios"] == list(layers.RATIOS) and set(layers_numbers["probe_sizes"]) == set(
        layers.ALLOCATIONS
    )
    labels = json.loads((quick_runs["random-labels"][2] / "random-labels.json").read_text())["numbers"]
    assert labels["scope"] == ["sgd", "adam"] and set(labels["caps"]) == set(labels["cap_reasons"]) == set(
        random_labels.METHODS
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


def _probes_records(cell, validation, test):
    """Cosine records of one cell: per split, per σ of [0.001, 0.01], one n."""
    return [
        {"cell": cell, "weighting": w, "split": split, "depth": 4, "cosine": [[v] for v in values]}
        for w in probes.WEIGHTINGS
        for split, values in (("validation", validation), ("test", test))
    ]


def _probes_numbers(gauss, heavy, gauss_acc=0.8, heavy_acc=0.85, loguniform=None):
    """Gaussian and Cauchy cells; each value is (validation sweep, test sweep) over two σ."""
    cos = _probes_records("gaussian/fixed", *gauss) + _probes_records("cauchy/fixed", *heavy)
    if loguniform is not None:
        cos += _probes_records("gaussian/loguniform", *loguniform)
    training = [
        {"cell": c, "test_accuracy": a} for c, a in (("gaussian/fixed", gauss_acc), ("cauchy/fixed", heavy_acc))
    ]
    return {
        "ns": [256],
        "verdict_n": 256,
        "sigmas": [0.001, 0.01],
        "depths": [4],
        "seeds": 3,
        "cosines": cos,
        "training": training,
    }


def test_verdict_probes_both_outcomes_at_the_sigma_chosen_on_validation():
    holds, line = probes.verdict_probes(_probes_numbers(([0.2, 0.1], [0.22, 0.1]), ([0.1, 0.3], [0.0, 0.31])))
    assert holds and "cauchy, σ=0.01" in line and "0.310 vs Gaussian 0.220 (σ=0.001" in line
    assert not probes.verdict_probes(_probes_numbers(([0.2, 0.1], [0.22, 0.1]), ([0.1, 0.3], [0.0, 0.23])))[0]
    # trains worse at equal FE
    assert not probes.verdict_probes(
        _probes_numbers(([0.2, 0.1], [0.22, 0.1]), ([0.1, 0.3], [0.0, 0.31]), heavy_acc=0.7)
    )[0]
    # the test set would favour Cauchy's other σ, but validation chose this one: the rule reports it
    holds, line = probes.verdict_probes(_probes_numbers(([0.2, 0.1], [0.22, 0.1]), ([0.3, 0.1], [0.0, 0.9])))
    assert not holds and "σ=0.001" in line and "0.000 vs Gaussian" in line


def test_probes_lengths_help_both_outcomes():
    gauss = ([0.2, 0.1], [0.2, 0.1])
    helped, line = probes.lengths_help(
        _probes_numbers(gauss, gauss, loguniform=([0.1, 0.3], [0.1, 0.25])),
        probes.select(_probes_numbers(gauss, gauss, loguniform=([0.1, 0.3], [0.1, 0.25]))),
    )
    assert helped == ["gaussian"] and "gaussian +25%" in line
    numbers = _probes_numbers(gauss, gauss, loguniform=([0.1, 0.3], [0.1, 0.21]))
    helped, line = probes.lengths_help(numbers, probes.select(numbers))
    assert helped == [] and "gaussian +5%" in line


def test_probe_laws_have_their_distributions():
    seeds = noise.member_seeds(0, 0, 64)
    for law in ("cauchy", "levy1.0"):  # standard Cauchy: median |x| = tan(pi/4) = 1
        assert probes.directions(law, seeds, 1000).abs().median() == pytest.approx(1.0, rel=0.05)
    # Lévy α = 1 is the Cauchy law, drawn from the same uniform stream: the rows agree exactly
    assert torch.equal(probes.directions("cauchy", seeds, 1000), probes.directions("levy1.0", seeds, 1000))
    sphere = probes.directions("sphere", seeds, 400)
    assert torch.allclose(sphere.norm(dim=1), torch.full((64,), 20.0))
    octaves = probes.lengths("loguniform", 20_000, 6.0, seed=0, generation=1).log2()
    # log2 of a log-uniform length over 6 octaves is uniform on [-3, 3]: quartiles -1.5, 0, 1.5
    quartiles = torch.quantile(octaves, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    assert torch.allclose(quartiles, torch.tensor([-1.5, 0.0, 1.5], dtype=torch.float64), atol=0.06)
    rows = probes.probes("gaussian/loguniform", 0.01, 8, 50, seed=0, generation=1, octaves=6.0)
    fixed = probes.probes("gaussian/fixed", 0.01, 8, 50, seed=0, generation=1, octaves=6.0)
    # equal directions: the length law changes only each row's length
    assert torch.allclose(F.normalize(rows, dim=1), F.normalize(fixed, dim=1))


def test_probe_estimate_converges_to_the_gradient_of_a_linear_loss():
    gradient = torch.linspace(-1.0, 1.0, 10, dtype=torch.float64)
    rows = probes.probes("sphere/loguniform", 1e-3, 4000, 10, seed=0, generation=0, octaves=6.0)
    gain = -(rows @ gradient)  # f(θ) - f(θ + ε) for f(x) = g·x
    for weighting in probes.WEIGHTINGS:
        estimate = probes.estimate(rows, gain, weighting)
        assert F.cosine_similarity(estimate, -gradient, dim=0) > 0.95


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


def _random_label_numbers(shuffled_fe, reached=True, evolution_fe=None):
    runs = []
    for m in random_labels.METHODS:
        fe = evolution_fe if m == "evolution" and evolution_fe is not None else shuffled_fe
        runs.append({"method": m, "labels": "true", "seed": 0, "fe": 1000, "seconds": 1.0, "reached": True})
        runs.append(
            {"method": m, "labels": "shuffled", "seed": 0, "fe": fe, "seconds": 2.0, "reached": reached or m != "adam"}
        )
    return {
        "n_train": 256,
        "caps": dict.fromkeys(random_labels.METHODS, 10_000),
        "scope": list(random_labels.SCOPE),
        "factor": 5.0,
        "seeds": 1,
        "runs": runs,
    }


def test_verdict_random_labels_both_outcomes_decided_by_the_claims_scope():
    holds, line = random_labels.verdict_random_labels(_random_label_numbers(2_500, evolution_fe=10_000))
    assert holds and "sgd 2.5x, adam 2.5x" in line and "outside the claim: hybrid 2.5x, evolution 10.0x" in line
    assert not random_labels.verdict_random_labels(_random_label_numbers(8_000))[0]  # ratio 8 > 5
    holds, line = random_labels.verdict_random_labels(_random_label_numbers(10_000, reached=False))
    assert not holds and "adam >10.0x" in line


def test_random_labels_ratio_is_undefined_when_true_labels_are_not_fitted():
    numbers = _random_label_numbers(2_000)
    numbers["runs"][0]["reached"] = False
    value, status = random_labels.ratio(numbers, "sgd")
    assert status == "undefined" and value != value
    holds, line = random_labels.verdict_random_labels(numbers)
    assert not holds and "sgd undefined" in line


def _layers_numbers(scales=None, probe_accs=None, placement=(0.8, 0.8)):
    accs = dict.fromkeys(layers.arms(), 0.8)
    for ratio, acc in (scales or {}).items():
        accs[layers.scale_arm(ratio)] = acc
    for allocation, acc in (probe_accs or {}).items():
        accs[layers.probe_arm(allocation)] = acc
    accs.update(zip(layers.SPLITS, placement))
    frozen = [{"arm": a, "labels": s, "accuracy": 0.5} for a in layers.FROZEN for s in ("shuffled", "true")]
    return {
        "ratios": list(layers.RATIOS),
        "evolved": {"bottom": 100, "top": 100},
        "fe": 1000,
        "seeds": 1,
        "runs": [{"arm": a, "seed": 0, "test_accuracy": v} for a, v in accs.items()],
        "frozen": frozen,
    }


def test_verdict_layers_both_outcomes():
    good = {"scales": {16.0: 0.9}, "probe_accs": {"bottom-heavy": 0.9}, "placement": (0.9, 0.8)}
    holds, line = layers.verdict_layers(_layers_numbers(**good))
    assert holds and "3 of 3" in line and "(best 16)" in line
    holds, line = layers.verdict_layers(_layers_numbers(**(good | {"scales": {1 / 4: 0.9}})))
    assert not holds and "(best 1/4)" in line
    assert not layers.verdict_layers(_layers_numbers(**(good | {"probe_accs": {"uniform": 0.9}})))[0]
    assert not layers.verdict_layers(_layers_numbers(**(good | {"placement": (0.8, 0.9)})))[0]


def test_layer_factors_keep_the_mean_square_and_order():
    model = tasks.mlp((8, 6, 6, 3), seed=0)
    for ratio in layers.RATIOS:
        factors = layers.layer_factors(model, ratio)
        sizes = {n: sum(p.numel() for p in model.get_submodule(n).parameters()) for n in factors}
        assert sum(sizes[n] * f**2 for n, f in factors.items()) / sum(sizes.values()) == pytest.approx(1.0)
        values = list(factors.values())
        assert values[0] / values[-1] == pytest.approx(ratio)
        assert values == sorted(values, reverse=ratio > 1)


def test_layer_halves_are_matched_and_probe_allocations_spend_equal_fe():
    for quick in (True, False):
        config = layers.configure(quick)
        bottom, top = layers.halves(tasks.mlp((64, *config["widths"], 10), seed=0))
        assert sum(p.numel() for p in bottom) == sum(p.numel() for p in top)
    for ratio in (1 / 16, 1 / 4, 1.0, 4.0, 16.0):
        sizes = layers.allocate(64, 4, ratio)
        assert sum(sizes) == 64 and all(s >= 2 and s % 2 == 0 for s in sizes)
        assert sizes == sorted(sizes, reverse=ratio > 1) or ratio == 1.0
    with pytest.raises(ValueError, match="total=6"):
        layers.allocate(6, 4, 1.0)


def _rolling_numbers(cosines, accs):
    """``cosines``/``accs``: β -> value for the improving slope arm; other arms get 0.1 / 0.5."""
    runs = []
    for beta in cosines:
        for e in rolling_average.ESTIMATORS:
            for w in rolling_average.WEIGHTINGS:
                default = (e, w) == ("improving", "slope")
                runs.append(
                    {
                        "beta": beta,
                        "estimator": e,
                        "weighting": w,
                        "seed": 0,
                        "cosine": cosines[beta] if default else 0.1,
                        "test_accuracy": accs[beta] if default else 0.5,
                    }
                )
    return {"betas": list(cosines), "fe": 1000, "seeds": 1, "runs": runs}


def test_verdict_rolling_average_both_outcomes():
    holds, line = rolling_average.verdict_rolling_average(
        _rolling_numbers({0.0: 0.2, 0.5: 0.21, 0.9: 0.3}, {0.0: 0.8, 0.5: 0.8, 0.9: 0.82})
    )
    assert holds and "0.300 at β=0.9" in line and "vs 0.200 without averaging" in line
    # cosine better but accuracy worse at equal FE
    assert not rolling_average.verdict_rolling_average(
        _rolling_numbers({0.0: 0.2, 0.5: 0.21, 0.9: 0.3}, {0.0: 0.8, 0.5: 0.8, 0.9: 0.7})
    )[0]
    # under the +10% margin
    assert not rolling_average.verdict_rolling_average(
        _rolling_numbers({0.0: 0.2, 0.5: 0.21, 0.9: 0.215}, {0.0: 0.8, 0.5: 0.8, 0.9: 0.9})
    )[0]


@pytest.mark.slow
def test_structured_noise_json_holds_the_sigma_sweep_at_equal_fe(quick_runs):
    record = json.loads((quick_runs["structured-noise"][2] / "structured-noise.json").read_text())
    numbers, arms = record["numbers"], list(structured_noise.ARMS)
    sigmas = numbers["sigmas"]
    assert len(sigmas) >= 4 and sigmas == sorted(sigmas)
    ratios = [b / a for a, b in zip(sigmas, sigmas[1:])]
    assert max(ratios) == pytest.approx(min(ratios))  # log-spaced
    assert sorted((r["arm"], r["split"]) for r in numbers["cosines"]) == sorted(
        (a, s) for a in arms for s in structured_noise.SPLITS
    )
    assert all(len(r["cosine"]) == len(sigmas) and all(-1 <= c <= 1 for c in r["cosine"]) for r in numbers["cosines"])
    assert sorted((r["arm"], r["sigma"]) for r in numbers["training"]) == sorted((a, s) for a in arms for s in sigmas)
    fe = {r["fe"] for r in numbers["training"]}
    assert len(fe) == 1 and fe.pop() >= numbers["fe"]  # every arm at every σ spent the same FE
    chosen = structured_noise.select(numbers)
    assert f"σ={chosen['full']['cosine_sigma']:g}" in record["verdict"]["line"]


def _structured_numbers(validation, test, accs):
    """``validation``/``test``: arm -> cosine at the single σ; ``accs``: arm -> accuracy."""
    return {
        "arms": structured_noise.ARMS,
        "sigmas": [0.01],
        "size": 8,
        "fe": 1000,
        "depth": 2,
        "width": 16,
        "dim": 1210,
        "points": [0],
        "seeds": 1,
        "cosines": [
            {"arm": a, "split": s, "cosine": [(validation if s == "validation" else test)[a]]}
            for a in structured_noise.ARMS
            for s in structured_noise.SPLITS
        ],
        "training": [
            {"arm": a, "sigma": 0.01, "validation_accuracy": accs[a], "test_accuracy": accs[a]}
            for a in structured_noise.ARMS
        ],
    }


def test_verdict_structured_noise_both_outcomes():
    cos = {"full": 0.2, "rank1": 0.25, "rank4": 0.22}
    holds, line = structured_noise.verdict_structured_noise(
        _structured_numbers(cos, cos, {"full": 0.8, "rank1": 0.85, "rank4": 0.8})
    )
    assert holds and "(rank1) reaches test cosine 0.250" in line and "vs full-rank 0.200" in line
    assert "equal FE" in line and "chosen on validation" in line and "1,210 parameters" in line
    # better cosine but worse accuracy at equal FE
    assert not structured_noise.verdict_structured_noise(
        _structured_numbers(cos, cos, {"full": 0.8, "rank1": 0.79, "rank4": 0.9})
    )[0]
    # under the +10% margin
    close = {"full": 0.2, "rank1": 0.21, "rank4": 0.19}
    same = dict.fromkeys(close, 0.8)
    assert not structured_noise.verdict_structured_noise(_structured_numbers(close, close, same))[0]
    # the low-rank arm is picked on validation: rank4 wins on test only (it would hold), rank1 decides
    picked = structured_noise.verdict_structured_noise(
        _structured_numbers({"full": 0.2, "rank1": 0.3, "rank4": 0.25}, {"full": 0.2, "rank1": 0.2, "rank4": 0.4}, same)
    )
    assert not picked[0] and "(rank1) reaches test cosine 0.200" in picked[1]
