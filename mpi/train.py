"""Train a network with evograd on MPI ranks. Every rank runs this same loop (SPMD).

    mpiexec -n 2 python -m mpi4py mpi/train.py --task digits --strategy rolling --generations 600
    srun python -m mpi4py mpi/train.py ...        (a Slurm job: see mpi/slurm.sbatch)

Each generation every rank derives the same seeds and minibatch from ``(seed, generation)``, scores
its share of the population, all-gathers the fitness values and applies the same deterministic
update, so parameters never cross the wire and the result does not depend on the number of ranks.
Rank 0 prints progress and writes checkpoints; ``--resume`` continues from the newest one with a
result identical to an uninterrupted run. Always launch with ``python -m mpi4py``: an exception on
any rank then aborts the whole job instead of leaving the other ranks waiting.

Every collective has a deadline (``--timeout``, default ``$EVOGRAD_MPI_TIMEOUT`` or 300 s): a rank
that stops, exits early or reaches another generation ends the job with a message naming it and
the generation (see evograd/collectives.py). Before training the ranks compare their settings and a
fingerprint of their data; any difference ends the job, naming the field and the ranks.

Tasks: ``digits`` (scikit-learn's 8x8 digits, an MLP classifier, needs the ``data`` extra) and
``teacher`` (regress the outputs of a fixed random MLP; synthetic, needs nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

import evograd
from evograd import checkpoint, flat, loggers, noise, tasks
from evograd.mpi import MPIEvaluator, ShardedUpdate, check_settings, state_digest

BATCH_SALT = 0xBA7C4  # minibatch indices use their own stream of (seed, generation)


@dataclasses.dataclass(frozen=True)
class Task:
    model: torch.nn.Module
    loss: Callable
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    metric: str  # name of what ``score`` reports on the test set

    def score(self) -> float:
        inputs, targets = self.test
        with torch.no_grad():
            output = self.model(inputs)
        if self.metric == "test accuracy":
            return float((output.argmax(1) == targets).double().mean())
        return float(self.loss(output, targets))

    def batch(self, seed: int, generation: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The minibatch of one generation: a function of ``(seed, generation)`` alone."""
        inputs, targets = self.train
        gen = torch.Generator().manual_seed(int(noise.member_seeds(seed ^ BATCH_SALT, generation, 1)[0]))
        index = torch.randint(0, len(inputs), (size,), generator=gen)
        return inputs[index], targets[index]


def make_task(name: str, hidden: int, seed: int) -> Task:
    if name == "digits":
        data = tasks.digits(seed=seed)
        return Task(
            tasks.mlp((64, hidden, 10), seed=seed),
            F.cross_entropy,
            (data.train_x, data.train_y),
            (data.test_x, data.test_y),
            "test accuracy",
        )
    gen = torch.Generator().manual_seed(seed)
    teacher = tasks.mlp((16, 32, 1), seed=seed + 1)
    inputs = torch.randn(4096, 16, generator=gen)  # (4096, 16)
    with torch.no_grad():
        targets = teacher(inputs)  # (4096, 1)
    return Task(
        tasks.mlp((16, hidden, 1), seed=seed),
        F.mse_loss,
        (inputs[:3072], targets[:3072]),
        (inputs[3072:], targets[3072:]),
        "test mse",
    )


def make_strategy(name: str, population: int, sigma: float | None, lr: float | None, chunk_size: int):
    if name == "rolling":
        mutation = evograd.Mutation(kind="cauchy", sigma=sigma or 0.01, clip=3.0, antithetic=True)
        return evograd.RollingImprovement(
            size=population, mutation=mutation, lr=lr or 0.08, lr_decay=0.9995, chunk_size=chunk_size
        )
    if name == "openes":
        mutation = evograd.Mutation(kind="gaussian", sigma=sigma or 0.02, antithetic=True)
        return evograd.OpenES(size=population, mutation=mutation, lr=lr or 0.01, chunk_size=chunk_size)
    mutation = evograd.Mutation(kind="cauchy", sigma=sigma or 0.01)
    return evograd.ScaleFreeEvolution(size=population, mutation=mutation, chunk_size=chunk_size)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("digits", "teacher"), default="teacher")
    parser.add_argument("--strategy", choices=("rolling", "openes", "evolution"), default="rolling")
    parser.add_argument("--population", type=int, default=64, help="mutations per generation")
    parser.add_argument("--generations", type=int, default=300, help="train until this generation")
    parser.add_argument("--seed", type=int, default=0, help="the run's only seed")
    parser.add_argument("--sigma", type=float, default=None, help="mutation scale (default per strategy)")
    parser.add_argument("--lr", type=float, default=None, help="step size (default per strategy)")
    parser.add_argument("--hidden", type=int, default=32, help="hidden units of the MLP")
    parser.add_argument("--batch-size", type=int, default=128, help="minibatch shared by a generation's members")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=16,
        help="members evaluated at once; ranks get whole chunks, so keep it <= population/ranks",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument(
        "--ranks",
        type=int,
        default=None,
        help="stop unless the job has this many MPI ranks (catches a launcher that started one-rank jobs)",
    )
    parser.add_argument(
        "--shard-update",
        action="store_true",
        help="each rank regenerates only its coordinates of the update (evograd.mpi.ShardedUpdate); same bits",
    )
    parser.add_argument("--checkpoint-dir", default=None, help="directory for checkpoints (shared by all ranks)")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint, if any")
    parser.add_argument("--sync-every", type=int, default=100, help="compare the ranks' states this often")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds a collective waits for the other ranks before aborting"
    )
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument(
        "--log", nargs="+", default=[], choices=list(loggers.KINDS), help="loggers of the progress lines (rank 0)"
    )
    parser.add_argument("--log-dir", default=None, help="folder of the --log files (default: --checkpoint-dir)")
    args = parser.parse_args(argv)
    if args.ranks is not None and args.ranks < 1:
        parser.error(f"--ranks must be a positive integer, got {args.ranks}")
    if args.resume and not args.checkpoint_dir:
        parser.error("--resume needs --checkpoint-dir")
    if args.checkpoint_dir and not args.resume and checkpoint.latest(args.checkpoint_dir) is not None:
        parser.error(f"{args.checkpoint_dir} already holds checkpoints: pass --resume or use another directory")
    args.log_dir = args.log_dir or args.checkpoint_dir
    if args.log and not args.log_dir:
        parser.error("--log needs --log-dir (or --checkpoint-dir)")
    try:
        for kind in args.log:
            loggers.require(kind)
    except ImportError as err:
        parser.error(str(err))
    return args


#: Arguments that may differ between ranks: they change nothing any other rank computes.
LOCAL_ARGS = ("threads", "log", "log_dir", "log_every")
#: Settings an exact resume depends on (the data, the minibatches, the model, the strategy); a
#: checkpoint records them and a resume with different ones is refused, naming the difference.
RESUME_SETTINGS = (
    "task",
    "data",
    "strategy",
    "population",
    "seed",
    "sigma",
    "lr",
    "hidden",
    "batch_size",
    "chunk_size",
)


def run_settings(args: argparse.Namespace, task: Task) -> dict:
    """What every rank must share: the arguments (except :data:`LOCAL_ARGS`) and the data's fingerprint.

    The fingerprint covers the training and test tensors, so ranks holding different data (another
    file, another split) are told apart even under the same arguments. It also goes into the
    checkpoints, and a resume with different settings is refused.
    """
    settings = {key: value for key, value in vars(args).items() if key not in LOCAL_ARGS}
    settings.pop("resume")
    settings["data"] = f"{state_digest([task.train, task.test]):016x}"
    return settings


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals slow over-fitted minibatches; the same on every rank and run
    task = make_task(args.task, args.hidden, args.seed)
    strategy = make_strategy(args.strategy, args.population, args.sigma, args.lr, args.chunk_size)
    if args.shard_update:  # opt-in: worth it when the repeated update is a visible share of a generation
        strategy = strategy.replace(update=ShardedUpdate(timeout=args.timeout))
    evaluate = MPIEvaluator(
        evograd.VmapEvaluator(task.model, task.loss, chunk_size=args.chunk_size),
        sync_every=args.sync_every,
        timeout=args.timeout,
    )
    if args.ranks is not None and evaluate.size != args.ranks:
        raise SystemExit(
            f"--ranks {args.ranks}: this process sees {evaluate.size} MPI rank(s); the launcher and the MPI "
            "library disagree on the process manager interface (srun --mpi=..., see mpi/README.rst)"
        )
    settings = run_settings(args, task)
    check_settings(settings, timeout=args.timeout)
    resume_settings = {key: settings[key] for key in RESUME_SETTINGS}
    state = strategy.init(flat.flatten(task.model), seed=args.seed)
    saver = (
        None
        if args.checkpoint_dir is None
        else checkpoint.Checkpointer(
            args.checkpoint_dir, every=args.checkpoint_every, keep=args.keep, rank=evaluate.rank
        )
    )
    spent = 0  # forward passes of the generations before a resume
    if args.resume:
        resumed = saver.resume(strategy=strategy, like=state, settings=resume_settings)
        if resumed is not None:
            # "forward_passes" is the key checkpoints written before the counter was renamed "fe" carry
            state, spent = resumed.state, resumed.metadata.get("fe", resumed.metadata.get("forward_passes", 0))
    log = print if evaluate.rank == 0 else (lambda *a, **k: None)
    records = loggers.Fanout()  # rank 0 streams its progress lines to the --log files; a resumed run appends
    if evaluate.rank == 0 and args.log:
        pathlib.Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        records = loggers.open_loggers(args.log, args.log_dir, step="generation", append=args.resume)
    log(
        f"{args.task}/{args.strategy}: {evaluate.size} ranks, {strategy.population} members x {state.center.numel()} "
        f"parameters, from generation {state.generation}",
        flush=True,
    )

    start = time.perf_counter()
    while state.generation < args.generations:
        try:
            state, metrics = generation(args, task, strategy, evaluate, state)
        except Exception as err:  # name the rank and generation; -m mpi4py then aborts the job
            print(f"rank {evaluate.rank} failed at generation {state.generation}: {err!r}", file=sys.stderr, flush=True)
            raise
        fe = spent + evaluate.fe
        if saver is not None:
            saver.step(
                state.generation,
                state=state,
                strategy=strategy,
                metadata={"fe": fe},
                settings=resume_settings,
            )
        if state.generation % args.log_every == 0 or state.generation == args.generations:
            flat.assign(task.model, state.center)
            score, seconds = task.score(), time.perf_counter() - start
            log(
                f"generation {state.generation:6d}  mean loss {metrics['mean']:.4f}  {task.metric} {score:.4f}  "
                f"{fe / 1e6:7.2f}M FE  {seconds:6.1f}s",
                flush=True,
            )
            records.log(
                {
                    "generation": state.generation,
                    "mean loss": metrics["mean"],
                    task.metric: score,
                    "fe": fe,
                    "seconds": seconds,
                }
            )

    digest = evaluate.check_sync(state, state.generation, final=True)
    if saver is not None:
        saver.step(
            state.generation,
            state=state,
            strategy=strategy,
            metadata={"fe": spent + evaluate.fe},
            settings=resume_settings,
            final=True,
        )
    records.close()
    flat.assign(task.model, state.center)
    log(
        f"final {task.metric}: {task.score():.4f}  ranks in sync at generation {state.generation} "
        f"(state digest {digest:016x})",
        flush=True,
    )


def generation(args: argparse.Namespace, task: Task, strategy, evaluate: MPIEvaluator, state):
    """One generation of every rank: check the ranks agree (when due), score the population, tell."""
    evaluate.check_sync(state, state.generation)
    evaluate.local.set_batch(task.batch(args.seed, state.generation, args.batch_size))
    seeds = strategy.ask(state)
    return strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))


if __name__ == "__main__":
    main()
