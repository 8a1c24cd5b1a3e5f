"""Fuzz every public constructor with wrong types, NaN, inf, negatives, zero, huge values and empty tensors.

Each case replaces one argument of a valid call by one bad value. The call must either succeed
(the value happens to be allowed there) or raise ``TypeError``/``ValueError`` naming the argument;
any other exception is a raw traceback, and a call that runs past a few seconds is a hang. A value
that can never be right for the argument (NaN, inf, a string where a number goes, ...) must not
be accepted. The command line's flags and settings are fuzzed in tests/test_cli.py.
"""

import math
import signal

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import evograd
from evograd import (
    PGPE,
    SNES,
    ClipUp,
    FunctionEvaluator,
    HybridOptimizer,
    LowRankEvaluator,
    Mutation,
    ObservationNorm,
    OpenES,
    RollingImprovement,
    ScaleFreeEvolution,
    SepCMAES,
    SerialEvaluator,
    VmapEvaluator,
    directions,
)
from evograd.checkpoint import Checkpointer
from evograd.harness import Budget
from evograd.mpi import MPIEvaluator

BAD = {
    "str": "abc",
    "none": None,
    "list": [],
    "dict": {},
    "bool": True,
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "negative": -1,
    "negative float": -0.5,
    "zero": 0,
    "zero float": 0.0,
    "fraction": 2.5,
    "huge int": 10**30,
    "huge float": 1e300,
    "empty tensor": torch.empty(0),
    "nan tensor": torch.tensor([math.nan]),
    "object": object(),
}
#: (value, argument) pairs that are right: a dict of factors or keywords, even an empty one; data
#: holding NaN (it scores NaN, which tell ranks worst: data is not a setting); an empty batch, which
#: the call refuses (tests/test_evaluate.py), as it must for a callable's batch too
ALLOWED = {("dict", "scale"), ("dict", "optimizer_kw"), ("nan tensor", "batch"), ("empty tensor", "batch")}
NEVER = {"str", "list", "dict", "nan", "inf", "-inf", "empty tensor", "nan tensor", "object"}


class _OneRank:
    """A communicator of one rank (no MPI library needed)."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1


def _model():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))


def _sphere(x):
    return (x**2).sum(1)


BATCH = (torch.randn(8, 3), torch.randn(8, 1))

# constructor name -> (call, valid keyword arguments, names fuzzed, names that may also be None)
CASES = {
    "Mutation": (
        Mutation,
        {},
        ["kind", "sigma", "alpha", "log_range", "antithetic", "sparsity", "clip", "scale", "rank", "layout"],
        {"clip", "scale", "rank", "layout"},
    ),
    "OpenES": (
        OpenES,
        {},
        ["size", "mutation", "chunk_size", "update", "lr", "lr_decay", "optimizer", "optimizer_kw", "sigma_adapt"],
        {"chunk_size", "update", "optimizer_kw", "sigma_adapt"},
    ),
    "PGPE": (
        PGPE,
        {},
        ["size", "mutation", "lr", "lr_decay", "optimizer_kw", "ranking", "sigma_lr", "sigma_max_change"],
        {"optimizer_kw", "sigma_lr"},
    ),
    "SNES": (SNES, {}, ["size", "mutation", "lr", "sigma_lr"], {"sigma_lr"}),
    "SepCMAES": (SepCMAES, {}, ["size", "mutation", "chunk_size"], {"chunk_size"}),
    "ClipUp": (
        lambda **kw: ClipUp(**kw),
        {"params": _model().parameters, "lr": 0.1},
        ["lr", "max_speed", "momentum"],
        {"max_speed"},
    ),
    "RollingImprovement": (
        RollingImprovement,
        {},
        ["size", "mutation", "chunk_size", "beta", "lr", "lr_decay", "weighting", "use_worse", "normalize_step"],
        {"chunk_size"},
    ),
    "ScaleFreeEvolution": (
        ScaleFreeEvolution,
        {},
        ["size", "mutation", "selection", "mu", "adapt_sigma", "success_target", "damping", "sigma_bounds"],
        {"chunk_size"},
    ),
    "FunctionEvaluator": (FunctionEvaluator, {"fn": _sphere}, ["fn", "chunk_size"], set()),
    "VmapEvaluator": (
        VmapEvaluator,
        {"model": _model(), "loss_fn": F.mse_loss, "batch": BATCH},
        ["model", "loss_fn", "batch", "chunk_size", "per_pair", "dropout", "compile"],
        {"batch", "chunk_size"},
    ),
    "LowRankEvaluator": (
        LowRankEvaluator,
        {"model": _model(), "loss_fn": F.mse_loss, "batch": BATCH},
        ["model", "loss_fn", "batch", "chunk_size", "dropout"],
        {"batch", "chunk_size"},
    ),
    "SerialEvaluator": (
        SerialEvaluator,
        {"model": _model(), "loss_fn": F.mse_loss, "batch": BATCH},
        ["model", "loss_fn", "batch", "chunk_size"],
        {"batch", "loss_fn"},
    ),
    "ObservationNorm": (ObservationNorm, {"dim": 3}, ["dim", "clip", "eps"], set()),
    "MPIEvaluator": (
        lambda **kw: MPIEvaluator(**kw),
        {"local": FunctionEvaluator(_sphere), "comm": _OneRank()},
        ["local", "block", "sync_every", "timeout"],
        {"block", "timeout"},
    ),
    "ShardedUpdate": (
        lambda **kw: evograd.ShardedUpdate(**kw),
        {"comm": _OneRank()},
        ["block", "timeout"],
        {"timeout"},
    ),
    "Checkpointer": (Checkpointer, {"directory": "unused", "every": 1}, ["every", "keep", "rank"], set()),
    "Budget": (Budget, {"fe": 100}, ["fe", "points"], set()),
    "HybridOptimizer": (
        lambda **kw: HybridOptimizer(**kw),
        {"params": _model().parameters, "direction": directions.backprop(), "lr": 0.1},
        ["direction", "lr", "log_alignment_every"],
        set(),
    ),
}


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


def call(make, kwargs, seconds=10):
    """``make(**kwargs)`` with a deadline: a call that runs past it raises Hang."""
    kwargs = {k: (v() if k == "params" else v) for k, v in kwargs.items()}
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return make(**kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(make, kwargs, name):
    """'ok', or 'error' (TypeError/ValueError naming ``name``), or a description of what went wrong."""
    try:
        call(make, kwargs)
    except Hang:
        return "hang"
    except (TypeError, ValueError) as err:
        message = str(err)
        return "error" if name in message and "\n" not in message.strip() else f"unnamed: {message!r}"
    except Exception as err:  # a raw traceback: what this test hunts
        return f"raw {type(err).__name__}: {err}"
    return "ok"


PARAMS = [(case, name) for case, (_, _, names, _) in CASES.items() for name in names]


@pytest.mark.parametrize("case, name", PARAMS, ids=[f"{c}.{n}" for c, n in PARAMS])
def test_every_bad_value_is_a_one_line_error_naming_the_argument(case, name):
    make, valid, _, optional = CASES[case]
    assert outcome(make, valid, name) == "ok", "the valid call itself must work"
    wrong = {}
    for label, value in BAD.items():
        got = outcome(make, {**valid, name: value}, name)
        if got not in ("ok", "error"):
            wrong[label] = got
        elif got == "ok" and label in NEVER and (label, name) not in ALLOWED:
            wrong[label] = "accepted"
        elif got == "ok" and label == "none" and name not in optional:
            wrong[label] = "accepted None"
    assert not wrong, f"{case}({name}=...): {wrong}"


@pytest.mark.parametrize("strategy", [OpenES(), RollingImprovement(), ScaleFreeEvolution()], ids=type)
@pytest.mark.parametrize(
    "center, seed, name",
    [
        (torch.empty(0), 0, "center"),
        (torch.tensor([math.nan, 1.0]), 0, "center"),
        (torch.tensor([math.inf, 1.0]), 0, "center"),
        (torch.ones(2, 2), 0, "center"),
        (torch.ones(2, dtype=torch.int64), 0, "center"),
        ([1.0, 2.0], 0, "center"),
        (torch.ones(2), -1, "seed"),
        (torch.ones(2), 2**63, "seed"),
        (torch.ones(2), 2.5, "seed"),
        (torch.ones(2), "0", "seed"),
        (torch.ones(2), None, "seed"),
    ],
)
def test_init_refuses_bad_centers_and_seeds_naming_them(strategy, center, seed, name):
    assert outcome(lambda **kw: strategy.init(**kw), {"center": center, "seed": seed}, name) == "error"


def test_numpy_integers_are_accepted_where_integers_are():
    np = pytest.importorskip("numpy")
    assert OpenES(size=np.int64(8)).size == 8 and isinstance(OpenES(size=np.int64(8)).size, int)
    state = OpenES(size=8).init(torch.ones(2), seed=np.int64(3))
    assert state.seed == 3 and isinstance(state.seed, int)


def test_every_public_class_with_settings_is_fuzzed():
    """A class added to evograd.__all__ that takes settings must be added here (protocols and states excluded)."""
    skipped = {
        "ChunkedEvaluator": "a base class",
        "CupyEvaluator": "needs CuPy (tests/test_cupy_bridge.py)",
        "EpisodeEvaluator": "needs an environment; its settings are fuzzed in tests/test_rl.py",
        "MPIModelEvaluator": "chosen by MPIEvaluator",
        "MPIVectorEvaluator": "chosen by MPIEvaluator",
    }
    public = {
        name
        for name in evograd.__all__
        if isinstance(getattr(evograd, name), type)
        and not name.endswith("State")
        and name not in {"State", "Strategy", "Evaluator", "ModelEvaluator", "VectorEvaluator"}
        and name not in {"StatisticsEvaluator", "GradientEstimator", "WeightedSum"}
    }
    assert public - set(CASES) - set(skipped) == set()
