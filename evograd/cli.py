"""The ``evograd`` command line: ``evograd compare`` (the main job), ``evograd run`` and ``evograd experiment``.

Errors a user can fix (an unknown task or method, a bad budget, an unwritable directory, a missing
extra) end the program with exit code 2 and one line saying what was wrong and how to fix it,
never a traceback. Every command checks all of its inputs before it trains or creates anything:
each handler validates and returns the job to run, and the output directory is made only when the
results are written.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

__all__ = ["main"]

DEFAULT_BUDGET_FE = 5_000_000


class UsageError(Exception):
    """A mistake in the command line: reported as one line, exit code 2."""


def _progress_factory(stream=sys.stderr):
    """A one-line progress bar per run: redrawn in place on a terminal, a line per quarter otherwise."""
    interactive = stream.isatty()

    def factory(label: str):
        start, shown = time.perf_counter(), [-1]

        def update(fraction: float, status: str) -> None:
            quarter = int(fraction * 4)
            if not interactive and quarter == shown[0]:
                return
            shown[0] = quarter
            bar = "#" * int(fraction * 24)
            line = f"{label:<18} [{bar:<24}] {fraction:4.0%} {time.perf_counter() - start:6.1f}s  {status}"
            stream.write(("\r" + line + ("\n" if fraction >= 1 else "")) if interactive else line + "\n")
            stream.flush()

        return update

    return factory


def _check_out(path: str) -> pathlib.Path:
    """``path`` as the output directory, checked to be creatable and writable without creating it.

    The check writes an anonymous temporary file in ``path``, or in its nearest existing ancestor
    if ``path`` does not exist yet; the directory itself is made when the results are written.
    """
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


def _budget(args):
    from evograd.harness import Budget

    if args.budget_fe is not None and args.budget_seconds is not None:
        raise UsageError("give --budget-fe or --budget-seconds, not both")
    if args.budget_seconds is not None:
        return Budget(seconds=args.budget_seconds)
    return Budget(fe=args.budget_fe if args.budget_fe is not None else DEFAULT_BUDGET_FE)


def _task(name: str, path: str | None):
    from evograd import tasks

    if name == "mnist" and path is None:
        raise UsageError("the mnist task needs --data-path DIR holding the four MNIST IDX files")
    return tasks.get(name, **({"path": path} if name == "mnist" else {}))


def _device(name: str) -> str:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return name


Job = Callable[[], None]


def _report(task, budget, results, out: pathlib.Path, title: str) -> None:
    from evograd import compare, plots

    rows = compare.summarize(task, results)
    print(compare.table(task, rows))
    out.mkdir(parents=True, exist_ok=True)
    compare.write_outputs(out, task, budget, results, rows)
    written = ["results.json", "summary.csv", "table.txt"]
    try:
        plots.curves(results, task.metric_name, title, out / "curves.png")
        written.append("curves.png")
    except ImportError as err:
        print(f"note: no plot ({err})")
    print(f"wrote {', '.join(str(out / name) for name in written)}")


def _cmd_compare(args) -> Job:
    from evograd import compare, harness

    methods = args.methods or list(compare.DEFAULT_METHODS)
    for method in methods:
        if method not in compare.METHODS:
            raise UsageError(f"unknown method {method!r}; choose from {', '.join(compare.METHODS)}")
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds} is out of range; allowed 1 or more")
    if args.threads < 1:
        raise UsageError(f"--threads {args.threads} is out of range; allowed 1 or more")
    budget = _budget(args)
    device = _device(args.device)
    overrides = compare.parse_overrides(args.set or [])
    for method in methods:
        compare.settings_for(method, args.task, overrides.get(method))
    task = _task(args.task, args.data_path)
    out = _check_out(args.out)

    def job() -> None:
        harness.torch_threads(args.threads)
        results = compare.compare(
            task,
            methods,
            range(args.seeds),
            budget,
            overrides=overrides,
            device=device,
            progress_factory=_progress_factory(),
        )
        budget_text = f"{budget.fe:,} FE" if budget.fe else f"{budget.seconds:g} s"
        _report(task, budget, results, out, f"{task.name}: {len(methods)} methods, {args.seeds} seeds, {budget_text}")

    return job


_CONFIG_KEYS = ("task", "method", "seed", "budget_fe", "budget_seconds", "out", "data_path", "device", "settings")


def _cmd_run(args) -> Job:
    from evograd import compare, harness, validate

    try:
        import tomllib
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib
        except ImportError:
            raise UsageError("reading a TOML config needs Python 3.11 or: pip install tomli") from None
    try:
        config = tomllib.loads(pathlib.Path(args.config).read_text())
    except OSError as err:
        raise UsageError(f"cannot read config {args.config!r}: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"config {args.config!r} is not valid TOML: {err}") from err
    unknown = set(config) - set(_CONFIG_KEYS)
    if unknown:
        raise UsageError(f"config {args.config!r} has unknown keys {sorted(unknown)}")
    if "method" not in config:
        raise UsageError(f"config {args.config!r} needs method = one of {', '.join(compare.METHODS)}")
    method, task_name = config["method"], config.get("task", "digits")
    compare.settings_for(method, task_name, config.get("settings"))
    seed = validate.seed("seed", config.get("seed", 0))
    args.budget_fe, args.budget_seconds = config.get("budget_fe"), config.get("budget_seconds")
    budget = _budget(args)
    device = _device(config.get("device", "cpu"))
    task = _task(task_name, config.get("data_path"))
    out = _check_out(config.get("out", args.out))

    def job() -> None:
        harness.torch_threads(1)
        result = compare.run_method(
            task,
            method,
            seed,
            budget,
            overrides=config.get("settings"),
            device=device,
            progress=_progress_factory()(f"{method} seed {seed}"),
        )
        _report(task, budget, [result], out, f"{task.name}: {method}")

    return job


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
    from evograd import experiments

    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds} is out of range; allowed 1 or more")
    device = _device(args.device)
    out = _check_out(args.out)

    def job() -> None:
        outcome = experiments.run(
            args.name,
            quick=args.quick,
            seeds=args.seeds,
            out=out,
            progress=_progress_factory()(args.name),
            command=_experiment_command(args),
            device=device,
        )
        print(f"wrote {', '.join(str(path) for path in outcome.files)}")

    return job


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error of this command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from evograd import experiments, tasks

    parser = _Parser(prog="evograd", description="Train networks by mixing evolution with gradients.")
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
    cmp.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3)")
    cmp.add_argument("--out", default="evograd-compare", help="output directory (default ./evograd-compare)")
    cmp.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    cmp.add_argument("--data-path", help="directory of the data files (the mnist task)")
    cmp.add_argument("--set", action="append", metavar="METHOD.KEY=VALUE", help="override a method's setting")
    cmp.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: these small models run fastest on one)"
    )
    cmp.set_defaults(handler=_cmd_compare)
    run = sub.add_parser("run", help="train one method on one task from a TOML config")
    run.add_argument("config", help="TOML file: task, method, seed, budget_fe or budget_seconds, out, [settings]")
    run.add_argument("--out", default="evograd-run", help="output directory when the config names none")
    run.set_defaults(handler=_cmd_run)
    exp = sub.add_parser("experiment", help="test a claim about randomness in learning; prints a verdict")
    exp.add_argument("name", choices=list(experiments.EXPERIMENTS))
    exp.add_argument("--quick", action="store_true", help="a tiny run (under a minute), for smoke tests")
    exp.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the experiment's own)")
    exp.add_argument("--out", default="evograd-experiments", help="output directory (default ./evograd-experiments)")
    exp.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    exp.set_defaults(handler=_cmd_experiment)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``evograd`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        try:
            job = args.handler(args)  # validates every input; creates nothing
        except TypeError as err:  # a wrong type in a config or setting (a TypeError later is a bug: shown in full)
            raise UsageError(str(err)) from err
        job()
    except (UsageError, ValueError, ImportError) as err:
        print(f"evograd: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evograd: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
