"""The ``evograd`` command line: ``evograd compare`` (the main job), ``evograd run`` and ``evograd experiment``.

Errors a user can fix (an unknown task, method or setting, a bad budget, an unwritable or occupied
directory, a missing extra) end the program with exit code 2 and one line saying what was wrong
and how to fix it, never a traceback. Every command checks all of its inputs before it trains or
creates anything: each handler validates and returns the job to run (``--dry-run`` stops there),
and the job makes the output directory. Method settings (``--set`` and a config's ``[settings]``)
are checked against the method's schema (:func:`evograd.compare.settings_schema`) and then by
building the method once (:func:`evograd.compare.check_method`).

``compare`` and ``run`` save every run as it finishes (``OUT/runs/``); Ctrl-C keeps them and prints
the command that resumes (``--resume``), and an output directory that is not empty is refused
unless ``--resume`` or ``--overwrite`` says what to do with it. Every measurement streams to the
loggers of ``--log`` (``log.csv`` by default) while the runs go.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence

__all__ = ["main", "RESULT_FILES", "LOG_FILES"]

DEFAULT_BUDGET_FE = 5_000_000
#: What ``compare`` and ``run`` write into ``--out``; ``--overwrite`` removes these and nothing else.
RESULT_FILES = ("inputs.json", "runs", "results.json", "summary.csv", "table.txt", "curves.png")
#: What the loggers write there (rebuilt by a resumed run, which replays its finished runs into them).
LOG_FILES = ("log.csv", "log.jsonl", "tensorboard")

Job = Callable[[], None]


class UsageError(Exception):
    """A mistake in the command line: reported as one line, exit code 2."""


class Interrupted(Exception):
    """Ctrl-C during a job: one line saying what was kept and how to resume, exit code 130."""


# ----------------------------------------------------------------------------------------------
# checks shared by the commands (each raises before anything is created)


def _writable(path: str) -> pathlib.Path:
    """``path`` as an output directory, checked to be creatable and writable without creating it.

    The check writes an anonymous temporary file in ``path``, or in its nearest existing ancestor
    if ``path`` does not exist yet.
    """
    if not isinstance(path, str) or not path.strip():
        raise UsageError(f"--out {path!r} is not a directory name; give the folder to write into")
    out = pathlib.Path(path)
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(
            f"--out {path!r} is not a writable directory ({existing} is a file); choose another with --out"
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UsageError(
            f"--out {path!r} is not a writable directory ({err.strerror or err}); choose another with --out"
        ) from err
    return out


def _plain(value):
    """``value`` as JSON gives it back (tuples as lists), so recorded and current inputs compare equal."""
    return json.loads(json.dumps(value))


def _check_out(path: str, inputs: dict, *, resume: bool, overwrite: bool) -> tuple[pathlib.Path, bool]:
    """The output directory of ``compare`` or ``run``, and whether the job resumes the run in it.

    A directory that is not empty is refused unless ``--overwrite``, or ``--resume`` and it holds
    a run of the same ``inputs`` (the message names the first difference). ``--resume`` where
    there is nothing to resume starts afresh. Nothing is created.
    """
    out = _writable(path)
    if resume and overwrite:
        raise UsageError("give --resume or --overwrite, not both")
    if overwrite or not out.is_dir() or not any(out.iterdir()):
        return out, False
    if not resume:
        raise UsageError(
            f"--out {path!r} is not empty: pass --resume to continue the run in it, --overwrite to replace "
            "its results, or choose another --out"
        )
    recorded = out / "inputs.json"
    try:
        previous = json.loads(recorded.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(
            f"--resume: {path!r} holds no evograd run to resume ({recorded.name} is missing or damaged); "
            "pass --overwrite or choose another --out"
        ) from err
    now = _plain(inputs)
    for key in sorted(set(previous) | set(now)):
        if previous.get(key) != now.get(key):
            raise UsageError(
                f"--resume: the run in {path!r} has {key} {previous.get(key)!r}, this command {now.get(key)!r}; "
                "repeat the command that started it, or pass --overwrite"
            )
    return out, True


def _clear(out: pathlib.Path, names: Sequence[str]) -> None:
    """Remove ``names`` (files or folders evograd wrote) from ``out``; nothing else."""
    for name in names:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _budget(fe, seconds, points=25):
    from evograd.harness import Budget

    if fe is not None and seconds is not None:
        raise UsageError("give --budget-fe or --budget-seconds, not both")
    if seconds is not None:
        return Budget(seconds=seconds, points=points)
    return Budget(fe=fe if fe is not None else DEFAULT_BUDGET_FE, points=points)


def _budget_text(budget) -> str:
    return f"{budget.fe:,} FE" if budget.fe else f"{budget.seconds:g} s"


def _task(name: str, path: str | None):
    from evograd import tasks

    if name == "mnist" and path is None:
        raise UsageError("the mnist task needs --data-path DIR holding the four MNIST IDX files")
    return tasks.get(name, **({"path": path} if name == "mnist" else {}))


def _device(name: str) -> str:
    import torch

    from evograd import validate

    validate.choice("device", name, ["cpu", "cuda"])
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return name


def _log_kinds(kinds: Sequence[str] | None) -> list[str]:
    """The loggers of ``--log`` (``csv`` by default), each checked to be available (TensorBoard's extra)."""
    from evograd import loggers

    kinds = ["csv"] if kinds is None else list(dict.fromkeys(kinds))
    for kind in kinds:
        loggers.require(kind)
    return kinds


def _resume_command(argv: Sequence[str]) -> str:
    """The command line that resumes ``evograd ARGV``.

    Examples:
        >>> _resume_command(["compare", "--seeds", "2", "--overwrite"])
        'evograd compare --seeds 2 --resume'
    """
    kept = [arg for arg in argv if arg != "--overwrite"]
    return shlex.join(["evograd", *kept, *([] if "--resume" in kept else ["--resume"])])


# ----------------------------------------------------------------------------------------------
# compare and run: every method on every seed, checkpointed run by run


def _report(task, budget, results, out: pathlib.Path, title: str) -> None:
    from evograd import compare, plots

    rows = compare.summarize(task, results)
    print(compare.table(task, rows))
    compare.write_outputs(out, task, budget, results, rows)
    written = ["results.json", "summary.csv", "table.txt"]
    try:
        plots.curves(results, task.metric_name, title, out / "curves.png")
        written.append("curves.png")
    except ImportError as err:
        print(f"note: no plot ({err})")
    print(f"wrote {', '.join(str(out / name) for name in written)}")


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A validated comparison: what ``compare`` and ``run`` train."""

    task: object
    methods: list[str]
    seeds: list[int]
    budget: object
    overrides: dict
    device: str
    threads: int
    title: str


def _comparison(args, plan: _Plan) -> Job:
    """The job of ``compare`` and ``run``, once the output directory and loggers are checked.

    The job creates ``--out``, records the inputs (``inputs.json``, what ``--resume`` compares),
    streams every measurement to the loggers, saves each run as it finishes (``runs/``), loads
    instead of trains the runs a resumed directory holds, and on Ctrl-C says how to resume.
    """
    from evograd import compare, harness, loggers
    from evograd.progress import Board
    from evograd.runstore import RunStore, write_atomic

    kinds = _log_kinds(args.log)
    inputs = {
        "task": plan.task.name,
        "methods": plan.methods,
        "seeds": plan.seeds,
        "budget": dataclasses.asdict(plan.budget),
        "settings": {m: compare.settings_for(m, plan.task.name, plan.overrides.get(m)) for m in plan.methods},
        "device": plan.device,
    }
    out, resuming = _check_out(args.out, inputs, resume=args.resume, overwrite=args.overwrite)
    names = [f"{method}-seed{seed}" for method in plan.methods for seed in plan.seeds]
    if args.dry_run:
        verb = "resume" if resuming else "run"
        return lambda: print(f"inputs valid: would {verb} {len(names)} runs on {plan.task.name} into {out}")

    def job() -> None:
        harness.torch_threads(plan.threads)
        out.mkdir(parents=True, exist_ok=True)
        _clear(out, LOG_FILES if resuming else RESULT_FILES + LOG_FILES)  # a resumed run replays into new logs
        write_atomic(out / "inputs.json", json.dumps(_plain(inputs), indent=1) + "\n")
        store = RunStore(out / "runs")
        finished = lambda: sum(store.load(name) is not None for name in names)  # noqa: E731
        if resuming:
            print(f"resuming {out}: {finished()} of {len(names)} runs finished before", flush=True)
        try:
            with (
                loggers.open_loggers(kinds, out, step="fe", run=("method", "seed")) as logger,
                Board(len(names)) as board,
            ):
                results = compare.compare(
                    plan.task,
                    plan.methods,
                    plan.seeds,
                    plan.budget,
                    overrides=plan.overrides,
                    device=plan.device,
                    board=board,
                    logger=logger,
                    store=store,
                )
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted: {finished()} of {len(names)} runs finished and are kept in {out}; "
                f"resume with: {_resume_command(args.argv)}"
            ) from None
        _report(plan.task, plan.budget, results, out, plan.title)

    return job


def _cmd_compare(args) -> Job:
    from evograd import compare, validate

    methods = args.methods or list(compare.DEFAULT_METHODS)
    for method in methods:
        compare.settings_schema(method)  # an unknown method: the message lists the known ones
    repeated = sorted({m for m in methods if methods.count(m) > 1})
    if repeated:
        raise UsageError(f"--methods names {', '.join(repeated)} more than once")
    validate.integer("--seeds", args.seeds, low=1, high=validate.SEED_RANGE[1])
    validate.integer("--threads", args.threads, low=1, high=os.cpu_count() or 1)
    budget = _budget(args.budget_fe, args.budget_seconds, args.points)
    device = _device(args.device)
    overrides = compare.parse_overrides(args.set or [])
    for method, values in overrides.items():
        compare.settings_for(method, args.task, values)
        if method not in methods:
            raise UsageError(f"--set names {method}, which is not among the methods run ({', '.join(methods)})")
    task = _task(args.task, args.data_path)
    for method in methods:
        compare.check_method(task, method, overrides.get(method))
    title = f"{task.name}: {args.seeds} seeds, {_budget_text(budget)} per run"
    plan = _Plan(task, methods, list(range(args.seeds)), budget, overrides, device, args.threads, title)
    return _comparison(args, plan)


#: The keys of a ``run`` config and the type of each value (``settings`` is a table of method settings).
CONFIG_KEYS = {
    "task": str,
    "method": str,
    "seed": int,
    "budget_fe": int,
    "budget_seconds": float,
    "out": str,
    "data_path": str,
    "device": str,
    "settings": dict,
}


def _read_config(path: str) -> dict:
    """The TOML config at ``path``, its keys and the types of its values checked."""
    from evograd import schema

    try:
        import tomllib
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib
        except ImportError:
            raise UsageError("reading a TOML config needs Python 3.11 or: pip install tomli") from None
    try:
        config = tomllib.loads(pathlib.Path(path).read_text())
    except OSError as err:
        raise UsageError(f"cannot read config {path!r}: {err.strerror}") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"config {path!r} is not valid TOML: {err}") from err
    fields = {key: schema.Field(key, frozenset({kind})) for key, kind in CONFIG_KEYS.items() if kind is not dict}
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise UsageError(f"config {path!r} has unknown keys {unknown}; allowed {', '.join(CONFIG_KEYS)}")
    schema.check(fields, {key: value for key, value in config.items() if key != "settings"}, f"config {path!r}")
    if "method" not in config:
        raise UsageError(f"config {path!r} needs method = one of {', '.join(_methods())}")
    return config


def _methods() -> list[str]:
    from evograd import compare

    return list(compare.METHODS)


def _cmd_run(args) -> Job:
    from evograd import compare, validate

    config = _read_config(args.config)
    method, task_name = config["method"], config.get("task", "digits")
    settings = config.get("settings", {})
    compare.settings_for(method, task_name, settings)  # a table of the method's keys, of their types
    seed = validate.seed("seed", config.get("seed", 0))
    budget = _budget(config.get("budget_fe"), config.get("budget_seconds"))
    device = _device(config.get("device", "cpu"))
    task = _task(task_name, config.get("data_path"))
    compare.check_method(task, method, settings)
    args.out = config.get("out", args.out)
    title = f"{task.name}: {method}, seed {seed}, {_budget_text(budget)}"
    return _comparison(args, _Plan(task, [method], [seed], budget, {method: settings}, device, 1, title))


# ----------------------------------------------------------------------------------------------
# experiment


def _experiment_command(args) -> str:
    """The command line of an ``experiment`` run, as recorded with its results."""
    options = [
        args.name,
        "--quick" if args.quick else "",
        f"--seeds {args.seeds}" if args.seeds else "",
        f"--out {args.out}",
        f"--device {args.device}" if args.device != "cpu" else "",
    ]
    return " ".join(["evograd experiment", *filter(None, options)])


def _cmd_experiment(args) -> Job:
    from evograd import experiments, loggers, validate
    from evograd.progress import Board

    if args.seeds is not None:
        validate.integer("--seeds", args.seeds, low=1, high=validate.SEED_RANGE[1])
    device = _device(args.device)
    kinds = _log_kinds(args.log)
    out = _writable(args.out)
    prefix = f"{args.name}-"
    ours = [f"{args.name}.{suffix}" for suffix in ("json", "txt", "png")] + [prefix + n for n in loggers.KINDS.values()]
    found = [name for name in ours if (out / name).exists()]
    if found and not args.overwrite:
        raise UsageError(
            f"--out {args.out!r} already holds {', '.join(found)}: pass --overwrite to replace them, "
            "or choose another --out"
        )
    if args.dry_run:
        return lambda: print(f"inputs valid: would run experiment {args.name} into {out}")

    def job() -> None:
        out.mkdir(parents=True, exist_ok=True)
        _clear(out, ours)
        with (
            loggers.open_loggers(kinds, out, step="fe", run=("run",), prefix=prefix) as logger,
            Board(1) as board,
        ):
            outcome = experiments.run(
                args.name,
                quick=args.quick,
                seeds=args.seeds,
                out=out,
                progress=board.start(args.name),
                command=_experiment_command(args),
                device=device,
                logger=logger,
            )
        print(f"wrote {', '.join(str(path) for path in outcome.files)}")

    return job


# ----------------------------------------------------------------------------------------------
# the parser and the entry point


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error of this command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_output_options(parser: argparse.ArgumentParser, *, resume: bool) -> None:
    from evograd import loggers

    parser.add_argument(
        "--log",
        nargs="+",
        choices=list(loggers.KINDS),
        metavar="KIND",
        help=f"stream every measurement to these loggers in --out: {', '.join(loggers.KINDS)} (default csv)",
    )
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue the run in --out: finished runs are kept")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    parser.add_argument(
        "--dry-run", action="store_true", help="check every input, print what would run, and create nothing"
    )


def _parser() -> argparse.ArgumentParser:
    import evograd
    from evograd import experiments, tasks

    parser = _Parser(prog="evograd", description="Train networks by mixing evolution with gradients.")
    parser.add_argument("--version", action="version", version=f"evograd {evograd.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    cmp = sub.add_parser("compare", help="compare methods against SGD/Adam on one task, same budget")
    cmp.add_argument(
        "--task",
        default="digits",
        metavar="TASK",
        help=f"one of {', '.join(tasks.TASKS)}, or gym:ENV_ID for any gymnasium environment (default digits)",
    )
    cmp.add_argument("--methods", nargs="+", metavar="METHOD", help="default: every method built in")
    cmp.add_argument("--budget-fe", type=int, help=f"forward-pass equivalents per run (default {DEFAULT_BUDGET_FE:,})")
    cmp.add_argument("--budget-seconds", type=float, help="wall seconds per run, instead of --budget-fe")
    cmp.add_argument(
        "--points",
        type=int,
        default=25,
        help="the metric is measured at this many even and this many geometric points of the budget (default 25)",
    )
    cmp.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3)")
    cmp.add_argument("--out", default="evograd-compare", help="output directory (default ./evograd-compare)")
    cmp.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    cmp.add_argument("--data-path", help="directory of the data files (the mnist task)")
    cmp.add_argument("--set", action="append", metavar="METHOD.KEY=VALUE", help="override a method's setting")
    cmp.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: these small models run fastest on one)"
    )
    _add_output_options(cmp, resume=True)
    cmp.set_defaults(handler=_cmd_compare)
    run = sub.add_parser("run", help="train one method on one task from a TOML config")
    run.add_argument("config", help="TOML file: task, method, seed, budget_fe or budget_seconds, out, [settings]")
    run.add_argument("--out", default="evograd-run", help="output directory when the config names none")
    _add_output_options(run, resume=True)
    run.set_defaults(handler=_cmd_run)
    exp = sub.add_parser("experiment", help="test a claim about randomness in learning; prints a verdict")
    exp.add_argument("name", choices=list(experiments.EXPERIMENTS))
    exp.add_argument("--quick", action="store_true", help="a tiny run (under a minute), for smoke tests")
    exp.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the experiment's own)")
    exp.add_argument("--out", default="evograd-experiments", help="output directory (default ./evograd-experiments)")
    exp.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    _add_output_options(exp, resume=False)
    exp.set_defaults(handler=_cmd_experiment)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``evograd`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    try:
        try:
            job = args.handler(args)  # validates every input; creates nothing
        except TypeError as err:  # a wrong type in a config or setting (a TypeError later is a bug: shown in full)
            raise UsageError(str(err)) from err
        job()
    except (UsageError, ValueError, ImportError) as err:
        print(f"evograd: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"evograd: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("evograd: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
