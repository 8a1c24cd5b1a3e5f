"""Loggers: stream measurements to files as a run goes, one record (a flat dict) at a time.

A :class:`Logger` is anything with ``log(record)`` and ``close()``; ``evograd compare``, ``evograd
run``, ``evograd experiment`` and ``mpi/train.py`` call one at every measurement, and so can your
own loop. Three are built in, each flushed after every record so a crash loses nothing written:

* :class:`CSVLogger`: one row per record, a column per key;
* :class:`JSONLinesLogger`: one JSON object per line;
* :class:`TensorBoardLogger`: each numeric field a scalar curve against a step field, one
  TensorBoard run per value of the run fields (``torch.utils.tensorboard``, the ``tensorboard``
  extra, imported only when one is made).

:class:`Fanout` sends each record to several loggers, and :func:`open_loggers` opens the kinds the
command line names in one folder. Every logger is a context manager that closes itself.

Examples:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with CSVLogger(folder / "log.csv") as log:
    ...     for step in range(3):
    ...         log.log({"step": step, "loss": 1.0 / (step + 1)})
    >>> print((folder / "log.csv").read_text().strip())
    step,loss
    0,1.0
    1,0.5
    2,0.3333333333333333
"""

from __future__ import annotations

import abc
import csv
import json
import math
import numbers
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "Logger",
    "CSVLogger",
    "JSONLinesLogger",
    "TensorBoardLogger",
    "Fanout",
    "KINDS",
    "open_loggers",
    "require",
]

Record = Mapping[str, Any]

#: The logger kinds :func:`open_loggers` knows, with the file or folder each writes in its folder.
KINDS = {"csv": "log.csv", "jsonl": "log.jsonl", "tensorboard": "tensorboard"}
TENSORBOARD_HINT = "pip install 'evograd-torch[tensorboard]'"


class Logger(Protocol):
    """Receives one record per measurement; ``close`` flushes and releases what it holds."""

    def log(self, record: Record) -> None:
        """Take one record: a flat dict of names to numbers or strings."""

    def close(self) -> None:
        """Flush and release files; no record is logged after it."""


class _Closing(abc.ABC):
    """A logger that ``with logger:`` closes at the end of the block."""

    @abc.abstractmethod
    def log(self, record: Record) -> None:
        """Take one record."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release files."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _mode(append: bool) -> str:
    return "a" if append else "w"


class CSVLogger(_Closing):
    """Rows of a CSV file, one per record.

    The columns are the keys of the records in the order they first appear; a record with a key
    no earlier record had widens the table (the file is rewritten with the wider header once per
    new key, earlier rows left empty there), and a missing key is left empty.

    Args:
        path: the file (its folder must exist).
        append: add to an existing file (e.g. a resumed run) instead of replacing it; its header
            gives the first columns.
    """

    def __init__(self, path: str | pathlib.Path, *, append: bool = False) -> None:
        self.path = pathlib.Path(path)
        self.columns: list[str] = []
        if append and self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as handle:
                self.columns = next(csv.reader(handle))
        self._handle = open(self.path, _mode(append), newline="")

    def log(self, record: Record) -> None:
        new = [key for key in record if key not in self.columns]
        if new:
            self._widen(self.columns + new)
        csv.DictWriter(self._handle, fieldnames=self.columns, restval="").writerow(record)
        self._handle.flush()

    def _widen(self, columns: list[str]) -> None:
        """Rewrite the file with the header ``columns``, keeping its rows."""
        self._handle.close()
        with open(self.path, newline="") as handle:
            rows = list(csv.DictReader(handle)) if self.columns else []
        self._handle = open(self.path, "w", newline="")
        writer = csv.DictWriter(self._handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        self.columns = columns

    def close(self) -> None:
        self._handle.close()


class JSONLinesLogger(_Closing):
    """One JSON object per line (NaN and infinities written as the strings ``"nan"``, ``"inf"``, ``"-inf"``).

    Args:
        path: the file (its folder must exist).
        append: add to an existing file instead of replacing it.
    """

    def __init__(self, path: str | pathlib.Path, *, append: bool = False) -> None:
        self.path = pathlib.Path(path)
        self._handle = open(self.path, _mode(append))

    def log(self, record: Record) -> None:
        plain = {k: str(v) if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        self._handle.write(json.dumps(plain, default=str) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def require(kind: str) -> None:
    """Check that logger ``kind`` can be made, before anything is created.

    Raises:
        ValueError: an unknown kind.
        ImportError: TensorBoard is missing (the message names the extra to install).
    """
    if kind not in KINDS:
        raise ValueError(f"logger {kind!r} is unknown; allowed {', '.join(KINDS)}")
    if kind == "tensorboard":
        _summary_writer()


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(f"TensorBoard logging needs the tensorboard package: {TENSORBOARD_HINT}") from err
    return SummaryWriter


class TensorBoardLogger(_Closing):
    """Scalars for TensorBoard (``tensorboard --logdir DIR``): every numeric field against ``step``.

    Records that differ in their ``run`` fields go to separate TensorBoard runs (subfolders named
    ``method=adam,seed=0``), so TensorBoard overlays them on one chart per field.

    Args:
        log_dir: the folder of the event files.
        step: the field that is the x axis (e.g. ``"fe"`` or ``"generation"``); a record without it
            is placed at its run's count of records so far.
        run: the fields that name a run (e.g. ``("method", "seed")``); none: one run.

    Raises:
        ImportError: TensorBoard is missing: ``pip install 'evograd-torch[tensorboard]'``.
    """

    def __init__(self, log_dir: str | pathlib.Path, *, step: str = "step", run: Sequence[str] = ()) -> None:
        self._writer_class = _summary_writer()
        self.log_dir, self.step, self.run = pathlib.Path(log_dir), step, tuple(run)
        self._writers: dict[str, Any] = {}
        self._counts: dict[str, int] = {}

    def log(self, record: Record) -> None:
        name = ",".join(f"{key}={record.get(key)}" for key in self.run)
        if name not in self._writers:
            self._writers[name] = self._writer_class(log_dir=str(self.log_dir / name if name else self.log_dir))
            self._counts[name] = 0
        writer, step = self._writers[name], int(record.get(self.step, self._counts[name]))
        self._counts[name] += 1
        for key, value in record.items():
            if key != self.step and key not in self.run and _number(value):
                writer.add_scalar(key, float(value), global_step=step)
        writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Fanout(_Closing):
    """Several loggers as one: each record goes to each, in order; ``close`` closes them all."""

    def __init__(self, *loggers: Logger) -> None:
        self.loggers = loggers

    def log(self, record: Record) -> None:
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def open_loggers(
    kinds: Sequence[str],
    folder: str | pathlib.Path,
    *,
    step: str,
    run: Sequence[str] = (),
    append: bool = False,
    prefix: str = "",
) -> Fanout:
    """The loggers ``kinds`` (keys of :data:`KINDS`) writing into ``folder`` (which must exist), as one.

    Args:
        kinds: e.g. ``["csv", "tensorboard"]``; none gives a logger that drops every record.
        folder: where ``log.csv``, ``log.jsonl`` and ``tensorboard/`` go.
        step, run: the TensorBoard logger's step and run fields.
        append: CSV and JSON-lines files are continued instead of replaced.
        prefix: put before each file or folder name (``"probes-"`` gives ``probes-log.csv``).

    Raises:
        ValueError: an unknown kind.
        ImportError: TensorBoard is asked for and missing.
    """
    folder = pathlib.Path(folder)
    for kind in kinds:
        require(kind)
    made: list[Logger] = []
    for kind in dict.fromkeys(kinds):
        path = folder / (prefix + KINDS[kind])
        if kind == "csv":
            made.append(CSVLogger(path, append=append))
        elif kind == "jsonl":
            made.append(JSONLinesLogger(path, append=append))
        else:
            made.append(TensorBoardLogger(path, step=step, run=run))
    return Fanout(*made)
