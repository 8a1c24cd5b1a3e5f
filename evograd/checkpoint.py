"""Atomic, code-free checkpoints of strategy state, optimizer state and the generation.

A checkpoint holds what a run needs to continue exactly where it stopped: the strategy state (a
frozen dataclass with tensors), an optional optimizer ``state_dict()``, the generation, the
strategy's class and configuration (to refuse resuming with a different one) and user metadata.
No random-generator state is stored: every random number derives from ``(seed, generation,
member)`` (docs/design.rst, contract 2), so a resumed run ends with parameters identical to an
uninterrupted one as long as the loop derives its minibatches the same way.

Safety. Files are read with ``torch.load(weights_only=True)``, which unpickles only tensors and
plain containers, so a checkpoint cannot execute code. States are therefore written as plain data
(:func:`plain`): a dataclass becomes ``{"__dataclass__": name, "fields": {...}}``, and anything
else that is not a tensor, a number, a string, ``None`` or a container of them (a generator, a
module, a numpy array) is refused when saving, naming where it was found. A state is rebuilt from
a *template* (:func:`restore`): a fresh state of the same kind, e.g. ``strategy.init(center,
seed=...)``, whose dataclasses are refilled field by field and validated again. No class is ever
looked up by name, so a new strategy needs nothing here; ``load`` without ``like=`` returns the
state as the plain data it was stored as. The same two functions carry the hybrid optimizer's
source states through its ``state_dict()``.

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

from evograd import tree
from evograd.protocols import State

__all__ = ["Checkpoint", "CheckpointError", "Checkpointer", "latest", "load", "plain", "restore", "save"]

FORMAT = "evograd-checkpoint"
VERSION = 1
DATACLASS = "__dataclass__"  # the key that marks a dataclass in plain data
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
        state: the strategy state rebuilt on ``like``; without ``like``, the plain data it was
            stored as (see :func:`plain`); None when none was saved.
        optimizer: the optimizer ``state_dict()``, or None; apply it with ``opt.load_state_dict``.
        metadata: the user metadata (a dict, empty when none was saved).
        strategy: the saved strategy's class name, or None.
    """

    path: Path
    generation: int
    state: Any
    optimizer: dict | None
    metadata: dict
    strategy: str | None


# ----------------------------------------------------------------------------------------------
# states as plain data


def plain(state: Any, *, root: str = "state") -> Any:
    """A state tree as tensors, numbers, strings, ``None`` and plain containers only.

    A dataclass becomes ``{"__dataclass__": its class name, "fields": {name: plain value}}``;
    tensors are copied (a view would drag its whole base tensor along). The result loads with
    ``torch.load(weights_only=True)``.

    Args:
        state: the tree (strategy state, a mix's dict of named states, an optimizer state dict, ...).
        root: the name errors give the tree.

    Raises:
        CheckpointError: something cannot be stored as plain data, named by where it was found.

    Examples:
        >>> from evograd import Mutation
        >>> plain({"evo": Mutation(sigma=0.5)})["evo"]["fields"]["sigma"]
        0.5
    """

    def leaf(path: tree.Path, obj: Any) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, torch.Tensor):
            return obj.detach().clone()
        raise CheckpointError(
            f"{tree.describe(path, root)}: cannot store an object of type {type(obj).__name__}; allowed are "
            "tensors, numbers, strings, None, and lists, tuples, dicts and dataclasses of them"
        )

    def branch(path: tree.Path, node: Any, values: dict) -> Any:
        if tree.is_dataclass(node):
            return {DATACLASS: type(node).__name__, "fields": values}
        if isinstance(node, dict):
            if DATACLASS in node:
                raise CheckpointError(f"{tree.describe(path, root)}: the key {DATACLASS!r} is reserved")
            for key in node:
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    raise CheckpointError(f"{tree.describe(path, root)}: dict keys must be str or int, got {key!r}")
        return tree.rebuild(node, values)

    return tree.map(leaf, state, branch=branch)


def _record(saved: Any) -> tuple[str, dict] | None:
    """``(class name, fields)`` of a plain dataclass record, or None if ``saved`` is not one."""
    if isinstance(saved, dict) and DATACLASS in saved and isinstance(saved.get("fields"), dict):
        return saved[DATACLASS], saved["fields"]
    return None


_MISSING = object()


def _lookup(saved: Any, path: tree.Path) -> Any:
    """The node of plain data at a template's ``path`` (dataclass fields looked up in their record)."""
    for key in path:
        record = _record(saved)
        if record is not None:
            saved = record[1]
        if isinstance(saved, dict) and key in saved:
            saved = saved[key]
        elif isinstance(saved, (list, tuple)) and isinstance(key, int) and key < len(saved):
            saved = saved[key]
        else:
            return _MISSING
    return saved


def restore(like: Any, saved: Any, *, root: str = "state") -> Any:
    """The inverse of :func:`plain`, guided by a fresh state of the same kind (``like``).

    ``like`` supplies the structure and the classes: its dataclasses are refilled with the saved
    fields and validated again, and a field the saved data lacks (one added to the class since)
    keeps ``like``'s value. Where ``like`` holds ``None`` or an empty container (an optimizer
    state not created yet, a history not begun), the saved plain data is taken as it is. Every
    mismatch is collected and the whole restore refused: a dataclass of another class or with
    unknown fields, a dict with other keys (a mix's states are keyed by source name, so a state
    saved from another mix is refused, not misassigned), a sequence of another length, a tensor of
    another shape or dtype, a container where ``like`` holds a number or a string.

    Args:
        like: the template, e.g. ``strategy.init(center, seed=...)``.
        saved: plain data from :func:`plain`.
        root: the name errors give the tree.

    Raises:
        CheckpointError: the saved data does not fit ``like``; the message lists every difference.

    Examples:
        >>> import torch
        >>> from evograd import Mutation
        >>> like = {"evo": Mutation(), "step": 0}
        >>> restore(like, plain({"evo": Mutation(sigma=0.5), "step": 3}))
        {'evo': Mutation(kind='gaussian', sigma=0.5, alpha=1.5, log_range=5.0, antithetic=False, sparsity=0.0, \
clip=None, rank=None), 'step': 3}
        >>> restore(like, plain({"es": Mutation(), "step": 3}))
        Traceback (most recent call last):
        ...
        evograd.checkpoint.CheckpointError: state has unknown key(s) ['es'] and lacks ['evo']
    """
    problems: list[str] = []

    def leaf(path: tree.Path, template: Any) -> Any:
        found = _lookup(saved, path)
        if found is _MISSING:
            return template
        if isinstance(template, torch.Tensor):
            if not (
                isinstance(found, torch.Tensor) and found.shape == template.shape and found.dtype == template.dtype
            ):
                now = f"{tuple(template.shape)} {template.dtype}"
                was = f"{tuple(found.shape)} {found.dtype}" if isinstance(found, torch.Tensor) else repr(found)
                problems.append(f"{tree.describe(path, root)} (saved {was}, now {now})")
            return found.to(template.device) if isinstance(found, torch.Tensor) else found
        if template is not None and isinstance(found, (dict, list, tuple)):
            problems.append(f"{tree.describe(path, root)} (saved a {type(found).__name__}, now {template!r})")
        return found

    def branch(path: tree.Path, template: Any, values: dict) -> Any:
        found, where = _lookup(saved, path), tree.describe(path, root)
        if found is _MISSING:
            return tree.rebuild(template, values)
        if tree.is_dataclass(template):
            record = _record(found)
            if record is None or record[0] != type(template).__name__:
                was = record[0] if record else type(found).__name__
                problems.append(f"{where} class (saved {was}, now {type(template).__name__})")
                return template
            unknown = sorted(set(record[1]) - set(values))
            if unknown:
                problems.append(f"{where}: {record[0]} has no field(s) {unknown} in this version of evograd")
        elif not tree.children(template):  # an empty dict, list or tuple grows as a run goes: take what it became
            return found
        elif isinstance(template, dict):
            if not isinstance(found, dict) or set(found) != set(template):
                keys = set(found) if isinstance(found, dict) else set()
                problems.append(
                    f"{where} has unknown key(s) {sorted(keys - set(template), key=str)} and lacks "
                    f"{sorted(set(template) - keys, key=str)}"
                )
        elif not isinstance(found, (list, tuple)) or len(found) != len(template):
            was = f"a {type(found).__name__} of {len(found)}" if isinstance(found, (list, tuple)) else repr(found)
            problems.append(f"{where} (saved {was}, now a {type(template).__name__} of {len(template)})")
        try:
            return tree.rebuild(template, values)
        except (TypeError, ValueError) as err:  # a dataclass's own validation
            problems.append(f"{where}: invalid {type(template).__name__}: {err}")
            return template

    restored = tree.map(leaf, like, branch=branch)
    if problems:
        raise CheckpointError("; ".join(problems))
    return restored


def _config(strategy: Any) -> dict:
    """A strategy's configuration as plain data; classes and functions by qualified name.

    Settings outside a dataclass's equality (``compare=False``, e.g. a strategy's ``update``, where
    its sum is formed, which gives the same bits either way) are not part of it: a run may resume
    sharded what it began whole.
    """

    def name(value: Any) -> Any:
        return f"{value.__module__}.{value.__qualname__}" if callable(value) else value

    outside = set()
    if dataclasses.is_dataclass(strategy):
        outside = {field.name for field in dataclasses.fields(strategy) if not field.compare}
    settings = {key: name(value) for key, value in sorted(vars(strategy).items()) if key not in outside}
    return plain(settings, root="strategy")


def _differences(saved: Any, current: Any, root: str) -> list[str]:
    """Where two plain-data trees differ (tensors by dtype, shape and value), path by path."""
    saved, current = tree.flatten(saved), tree.flatten(current)
    found = []
    for path in sorted(saved.keys() | current.keys(), key=str):
        a, b = saved.get(path, _MISSING), current.get(path, _MISSING)
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            same = (
                isinstance(a, torch.Tensor)
                and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype
                and a.shape == b.shape
                and torch.equal(a.cpu(), b.cpu())
            )
            if not same:
                found.append(tree.describe(path, root))
        elif not (a == b and type(a) is type(b)):
            show = lambda v: "nothing" if v is _MISSING else repr(v)  # noqa: E731
            found.append(f"{tree.describe(path, root)} (saved {show(a)}, now {show(b)})")
    return found


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
    state: Any = None,
    strategy: Any = None,
    optimizer: Any = None,
    metadata: Mapping | None = None,
) -> Path:
    """Write a checkpoint atomically: ``path`` ends up either untouched or holding the complete new file.

    Args:
        path: the file to write; its directory must exist.
        generation: the generation reached, >= 0.
        state: a strategy state, or any tree :func:`plain` can store.
        strategy: the strategy object, whose class and configuration are recorded so that
            :func:`load` can refuse a different one.
        optimizer: a ``torch.optim.Optimizer`` (its ``state_dict()`` is stored) or a state dict of
            tensors and plain values.
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
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.state_dict()
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "generation": generation,
        "state": plain(state, root="state"),
        "strategy": None if strategy is None else {"class": type(strategy).__name__, "config": _config(strategy)},
        "optimizer": plain(optimizer, root="optimizer"),
        "metadata": plain(dict(metadata or {}), root="metadata"),
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


def load(path: PathLike, *, strategy: Any = None, like: State | None = None, map_location: Any = None) -> Checkpoint:
    """Read a checkpoint safely and check it fits this run before anything is used.

    Args:
        path: the file.
        strategy: if given, the saved strategy must have the same class and configuration.
        like: a fresh state of this run (e.g. ``strategy.init(center, seed=...)``): the saved state
            must have its class, seed, and center shape and dtype (the same model), and is rebuilt
            on it (:func:`restore`). Without it, ``Checkpoint.state`` is the plain data stored
            (:func:`plain`).
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
    problems = []
    if strategy is not None:
        saved = payload["strategy"] or {"class": None, "config": None}
        if saved["class"] != type(strategy).__name__:
            problems.append(f"strategy class (saved {saved['class']}, now {type(strategy).__name__})")
        else:
            problems += _differences(saved["config"], _config(strategy), "strategy")
    state = payload["state"]
    if like is not None:
        problems += _identity(state, like)
        if not problems:
            try:
                state = restore(like, state)
            except CheckpointError as err:
                problems.append(str(err))
    if problems:
        raise CheckpointError(f"{path} does not match this run: " + "; ".join(problems))
    return Checkpoint(
        path=path,
        generation=payload["generation"],
        state=state,
        optimizer=payload["optimizer"],
        metadata=payload["metadata"],
        strategy=(payload["strategy"] or {}).get("class"),
    )


def _identity(saved: Any, like: State) -> list[str]:
    """What makes a saved state another run's: its class, its seed, its model (center shape and dtype)."""
    record = _record(saved)
    if record is None or record[0] != type(like).__name__:
        return [f"state class (saved {record[0] if record else type(saved).__name__}, now {type(like).__name__})"]
    center, seed = record[1].get("center"), record[1].get("seed")
    problems = []
    if not isinstance(center, torch.Tensor) or center.shape != like.center.shape or center.dtype != like.center.dtype:
        was = f"{tuple(center.shape)} {center.dtype}" if isinstance(center, torch.Tensor) else repr(center)
        problems.append(f"model (saved center {was}, now {tuple(like.center.shape)} {like.center.dtype})")
    if seed != like.seed:
        problems.append(f"seed (saved {seed}, now {like.seed})")
    return problems


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
