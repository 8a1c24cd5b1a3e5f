"""Atomic, code-free checkpoints of strategy state, optimizer state and the generation.

A checkpoint holds what a run needs to continue exactly where it stopped: the strategy state (a
frozen dataclass with tensors), an optional optimizer ``state_dict()``, the generation, the
strategy's class and configuration (to refuse resuming with a different one) and user metadata.
No random-generator state is stored: every random number derives from ``(seed, generation,
member)`` (docs/design.rst, contract 2), so a resumed run ends with parameters identical to an
uninterrupted one as long as the loop derives its minibatches the same way.

Safety. Files are read with ``torch.load(weights_only=True)``, which unpickles only tensors and
plain containers, so a checkpoint cannot execute code. States are therefore written as plain data:
a dataclass becomes ``{"__dataclass__": name, "fields": {...}}`` and is rebuilt by name from the
explicit registry :data:`STATE_TYPES`, never by unpickling a class. Anything else (a generator, a
module, a numpy array) is refused when saving, naming where it was found.

Atomicity. :func:`save` writes a temporary file in the target directory, flushes and fsyncs it,
renames it over the target with ``os.replace`` and fsyncs the directory: after a crash at any point
the target is either the previous complete checkpoint or the new complete one. :class:`Checkpointer`
names files by generation (``ckpt-000000120.pt``), keeps the newest ``keep``, deletes only files of
that pattern, and refuses to write where it would replace or prune another run's checkpoints.

Example of a loop (every rank runs it; only rank 0 writes)::

    checkpointer = Checkpointer("runs/a", every=50, keep=3, rank=rank)
    state = strategy.init(center, seed=0)
    resumed = checkpointer.resume(strategy=strategy, like=state)   # None on a fresh directory
    if resumed is not None:
        state = resumed.state
    while state.generation < generations:
        seeds = strategy.ask(state)
        state, _ = strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        checkpointer.step(state.generation, state=state, strategy=strategy)
    checkpointer.step(state.generation, state=state, strategy=strategy, final=True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from evograd.noise import Mutation
from evograd.strategies import ESState, EvolutionState, RollingState, StrategyState

__all__ = ["STATE_TYPES", "Checkpoint", "CheckpointError", "Checkpointer", "latest", "load", "save"]

FORMAT = "evograd-checkpoint"
VERSION = 1
#: The dataclasses a checkpoint may contain, rebuilt by class name. A new state class is added here.
STATE_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (Mutation, StrategyState, EvolutionState, RollingState, ESState)
}
_DATACLASS = "__dataclass__"
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")

PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A checkpoint that cannot be written, read, or used for this run; nothing was applied."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What :func:`load` returns.

    Attributes:
        path: the file read.
        generation: the generation saved.
        state: the strategy state, or None.
        optimizer: the optimizer ``state_dict()``, or None; apply it with ``opt.load_state_dict``.
        metadata: the user metadata (a dict, empty when none was saved).
        strategy: the saved strategy's class name, or None.
    """

    path: Path
    generation: int
    state: StrategyState | None
    optimizer: dict | None
    metadata: dict
    strategy: str | None


# ----------------------------------------------------------------------------------------------
# plain-data encoding


def _encode(obj: Any, where: str) -> Any:
    """``obj`` as tensors and plain containers only; CheckpointError naming ``where`` otherwise."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()  # own storage: a view would drag its whole base tensor along
    if type(obj) in STATE_TYPES.values():
        return {
            _DATACLASS: type(obj).__name__,
            "fields": {f.name: _encode(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)},
        }
    if isinstance(obj, Mapping):
        if _DATACLASS in obj:
            raise CheckpointError(f"{where}: the key {_DATACLASS!r} is reserved")
        out = {}
        for key, value in obj.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise CheckpointError(f"{where}: dict keys must be str or int, got {key!r}")
            out[key] = _encode(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [_encode(item, f"{where}[{i}]") for i, item in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise CheckpointError(
        f"{where}: cannot store an object of type {type(obj).__name__}; allowed are tensors, "
        f"numbers, strings, None, lists, tuples, dicts and {sorted(STATE_TYPES)}"
    )


def _decode(obj: Any, where: str) -> Any:
    """Inverse of :func:`_encode`."""
    if isinstance(obj, dict) and _DATACLASS in obj:
        name = obj[_DATACLASS]
        cls = STATE_TYPES.get(name)
        if cls is None:
            raise CheckpointError(f"{where}: unknown state class {name!r}; known: {sorted(STATE_TYPES)}")
        fields = obj.get("fields", {})
        unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise CheckpointError(f"{where}: {name} has no field(s) {sorted(unknown)} in this version of evograd")
        try:  # a field added since the checkpoint was written takes its default; a missing required one raises
            return cls(**{key: _decode(value, f"{where}.{key}") for key, value in fields.items()})
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{where}: invalid {name}: {err}") from err
    if isinstance(obj, dict):
        return {key: _decode(value, f"{where}[{key!r}]") for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_decode(item, f"{where}[{i}]") for i, item in enumerate(obj))
    return obj


def _config(strategy: Any) -> dict:
    """A strategy's configuration as plain data; classes and functions by qualified name."""

    def plain(value: Any) -> Any:
        return f"{value.__module__}.{value.__qualname__}" if callable(value) else value

    return _encode({key: plain(value) for key, value in sorted(vars(strategy).items())}, "strategy")


def _differences(saved: Any, current: Any, where: str) -> list[str]:
    """Where two plain-data trees differ (tensors by dtype, shape and value)."""
    if isinstance(saved, torch.Tensor) or isinstance(current, torch.Tensor):
        same = (
            isinstance(saved, torch.Tensor)
            and isinstance(current, torch.Tensor)
            and saved.dtype == current.dtype
            and saved.shape == current.shape
            and torch.equal(saved.cpu(), current.cpu())
        )
        return [] if same else [where]
    if isinstance(saved, dict) and isinstance(current, dict):
        return [
            d
            for key in sorted(set(saved) | set(current), key=str)
            for d in _differences(saved.get(key), current.get(key), f"{where}.{key}")
        ]
    if isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple)) and len(saved) == len(current):
        return [d for i, (a, b) in enumerate(zip(saved, current)) for d in _differences(a, b, f"{where}[{i}]")]
    return [] if saved == current and type(saved) is type(current) else [f"{where} (saved {saved!r}, now {current!r})"]


# ----------------------------------------------------------------------------------------------
# files


def _check_generation(generation: int) -> None:
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise ValueError(f"generation={generation!r} is out of range; allowed integers in [0, inf)")


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; elsewhere the rename is all there is)."""
    if os.name != "posix":  # pragma: no cover - Windows cannot open a directory
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(
    path: PathLike,
    *,
    generation: int,
    state: StrategyState | None = None,
    strategy: Any = None,
    optimizer: Any = None,
    metadata: Mapping | None = None,
) -> Path:
    """Write a checkpoint atomically: ``path`` ends up either untouched or holding the complete new file.

    Args:
        path: the file to write; its directory must exist.
        generation: the generation reached, >= 0.
        state: a strategy state (any class of :data:`STATE_TYPES`).
        strategy: the strategy object, whose class and configuration are recorded so that
            :func:`load` can refuse a different one.
        optimizer: an optimizer (anything with ``state_dict()``) or a state dict of tensors and plain
            values.
        metadata: plain user data (numbers, strings, tensors, containers), e.g. the command line.

    Returns:
        ``path`` as a Path.

    Raises:
        CheckpointError: something cannot be stored as plain data (nothing is written).
        ValueError: ``generation`` out of range.

    Examples:
        >>> import tempfile, torch
        >>> from evograd import OpenES
        >>> es = OpenES(size=4)
        >>> state = es.init(torch.zeros(3), seed=0)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = save(f"{d}/a.pt", generation=0, state=state, strategy=es, metadata={"task": "demo"})
        ...     back = load(f"{d}/a.pt", strategy=es, like=state)
        >>> back.generation, torch.equal(back.state.center, state.center), back.metadata
        (0, True, {'task': 'demo'})
    """
    _check_generation(generation)
    if state is not None and type(state) not in STATE_TYPES.values():
        raise CheckpointError(f"state: {type(state).__name__} is not a known state class {sorted(STATE_TYPES)}")
    if optimizer is not None and hasattr(optimizer, "state_dict"):
        optimizer = optimizer.state_dict()
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "generation": generation,
        "state": _encode(state, "state"),
        "strategy": None if strategy is None else {"class": type(strategy).__name__, "config": _config(strategy)},
        "optimizer": _encode(optimizer, "optimizer"),
        "metadata": _encode(dict(metadata or {}), "metadata"),
    }
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)
    return path


def load(
    path: PathLike, *, strategy: Any = None, like: StrategyState | None = None, map_location: Any = None
) -> Checkpoint:
    """Read a checkpoint safely and check it fits this run before anything is used.

    Args:
        path: the file.
        strategy: if given, the saved strategy must have the same class and configuration.
        like: if given (e.g. ``strategy.init(center, seed=...)``), the saved state must have the
            same class, seed, and center shape and dtype (the same model).
        map_location: as for ``torch.load`` (e.g. ``"cpu"`` for a checkpoint written on a GPU); by
            default the device of ``like``'s center when ``like`` is given, so a run resumes on its
            own device whichever device wrote the file.

    Returns:
        The :class:`Checkpoint`; ``load`` changes nothing itself.

    Raises:
        CheckpointError: the file is truncated, corrupt, not a checkpoint, would need unpickling
            code, or does not match ``strategy``/``like`` (the message lists what differs).
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if map_location is None and like is not None:
        map_location = like.center.device
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # zip, unpickling and weights_only errors all mean: not usable
        raise CheckpointError(
            f"{path} cannot be read: it is truncated, corrupt, or holds more than plain data "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Delete it "
            "to fall back to the previous checkpoint."
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an evograd checkpoint")
    if not isinstance(payload.get("version"), int) or payload["version"] > VERSION:
        raise CheckpointError(
            f"{path} has format version {payload.get('version')!r}; this evograd reads up to {VERSION}"
        )
    checkpoint = Checkpoint(
        path=path,
        generation=payload["generation"],
        state=_decode(payload["state"], "state"),
        optimizer=_decode(payload["optimizer"], "optimizer"),
        metadata=_decode(payload["metadata"], "metadata"),
        strategy=(payload["strategy"] or {}).get("class"),
    )
    problems = []
    if strategy is not None:
        saved = payload["strategy"] or {"class": None, "config": None}
        if saved["class"] != type(strategy).__name__:
            problems.append(f"strategy class (saved {saved['class']}, now {type(strategy).__name__})")
        else:
            problems += _differences(saved["config"], _config(strategy), "strategy")
    if like is not None:
        state = checkpoint.state
        if type(state) is not type(like):
            problems.append(f"state class (saved {type(state).__name__}, now {type(like).__name__})")
        else:
            if state.center.shape != like.center.shape or state.center.dtype != like.center.dtype:
                problems.append(
                    f"model (saved center {tuple(state.center.shape)} {state.center.dtype}, now "
                    f"{tuple(like.center.shape)} {like.center.dtype})"
                )
            if state.seed != like.seed:
                problems.append(f"seed (saved {state.seed}, now {like.seed})")
    if problems:
        raise CheckpointError(f"{path} does not match this run: " + "; ".join(problems))
    return checkpoint


def _generations(directory: Path) -> dict[int, Path]:
    """Checkpoint files of ``directory`` by generation (temporary and foreign files ignored)."""
    if not directory.is_dir():
        return {}
    found = {}
    for entry in directory.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found[int(match.group(1))] = entry
    return found


def latest(directory: PathLike) -> Path | None:
    """The checkpoint of the highest generation in ``directory`` (``ckpt-<generation>.pt``), or None."""
    found = _generations(Path(directory))
    return found[max(found)] if found else None


class Checkpointer:
    """Save every ``every`` generations into one directory, keep the newest ``keep``, resume from the newest.

    Only the process whose ``rank`` is 0 writes or deletes; every rank can :meth:`resume` (the
    directory must then be visible to every rank, like a cluster's shared scratch space).

    A Checkpointer refuses to write into a directory holding checkpoints newer than the one it
    resumed from (or any checkpoint, if it did not resume): checkpoints of another run are never
    replaced or pruned.

    Args:
        directory: where checkpoints go (created if missing, by rank 0).
        every: save when the generation is a multiple of it, >= 1.
        keep: how many of the newest checkpoints to keep, >= 1.
        rank: this process's MPI rank (``comm.Get_rank()``); 0 without MPI.

    Raises:
        ValueError: ``every``, ``keep`` or ``rank`` out of range.
    """

    def __init__(self, directory: PathLike, *, every: int, keep: int = 3, rank: int = 0) -> None:
        for name, value, low in (("every", every, 1), ("keep", keep, 1), ("rank", rank, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}={value!r} is out of range; allowed integers in [{low}, inf)")
        self.directory, self.every, self.keep, self.rank = Path(directory), every, keep, rank
        self._owned_until: int | None = None  # checkpoints up to this generation belong to this run

    def latest(self) -> Path | None:
        """The newest checkpoint of the directory, or None."""
        return latest(self.directory)

    def resume(self, **load_kw: Any) -> Checkpoint | None:
        """Load the newest checkpoint (keywords as for :func:`load`), or return None if there is none.

        Raises:
            CheckpointError: the newest checkpoint is unreadable or does not match (see :func:`load`);
                this Checkpointer then still refuses to write over the directory.
        """
        path = self.latest()
        if path is None:
            self._owned_until = -1
            return None
        checkpoint = load(path, **load_kw)
        self._owned_until = checkpoint.generation
        return checkpoint

    def step(self, generation: int, *, final: bool = False, **what: Any) -> Path | None:
        """Save (``what`` as for :func:`save`) if ``generation`` is a multiple of ``every`` or ``final``.

        Returns:
            The file written, or None (not due, already written, or not rank 0).

        Raises:
            CheckpointError: the directory holds checkpoints this run does not own.
        """
        _check_generation(generation)
        due = final or generation % self.every == 0
        if self.rank != 0 or not due or generation == self._owned_until:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        found = _generations(self.directory)
        foreign = sorted(g for g in found if self._owned_until is None or g > self._owned_until)
        if foreign:
            raise CheckpointError(
                f"{self.directory} already holds checkpoints of generation(s) {foreign} that this "
                "run did not write or resume from; resume from them or use an empty directory"
            )
        path = save(self.directory / f"ckpt-{generation:09d}.pt", generation=generation, **what)
        self._owned_until = generation
        found[generation] = path
        for old in sorted(found)[: -self.keep]:
            found[old].unlink()
        _fsync_directory(self.directory)
        return path
