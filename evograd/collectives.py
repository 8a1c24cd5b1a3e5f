"""MPI collectives with a deadline, a position check, and a notice when a rank dies without a word.

A plain MPI collective waits forever when a rank never arrives: it crashed in a way the launcher
did not notice, it was stopped (``SIGSTOP``), it left the loop early, or it is at another
generation (a different ``--generations`` or ``--sync-every``). On a cluster that burns the whole
allocation. :class:`Collectives` runs every collective of :mod:`evograd.mpi` in two rounds:

1. **Positions.** Each rank sends rank 0 its position, ``(generation, collective, size)``, and rank
   0 broadcasts the table of every rank's position. A rank that does not arrive within the
   deadline is named by rank 0 with the generation it waited at; ranks at different positions
   (one in the fitness all-gather of generation 30, another in the sync check of generation 30)
   raise :class:`PositionError` on every rank, naming each rank's position, instead of pairing
   unrelated collectives.
2. **Data.** The collective itself, started non-blocking (``Iallgatherv``, ``Iallgather``,
   ``Iallreduce``) and polled with ``Test`` until it completes or the deadline passes.

On an expired deadline the rank prints which rank(s) it waited for, at which generation and in
which collective (a sharded update, which cannot see the generation, names its call number), to
stderr, and calls ``MPI_Abort``: the job ends with a non-zero exit code.
Ranks other than 0 wait 10% (and one second) longer than rank 0, so that rank 0, the only one that
knows who is missing, speaks first.

A rank killed by a signal or ended by ``os._exit`` cannot say anything, and the MPICH launcher
then kills the others at once. So each rank of a job of several ranks starts a tiny watcher
process (:func:`start_watcher`) that holds the read end of a pipe and a one-page file where the rank
records its position; when the pipe closes without the rank having marked a clean exit, the
watcher prints ``rank R (pid P) ended abruptly at generation G (...)``. The failing rank's line
comes first; the launcher's own message names the same pid. Set ``EVOGRAD_MPI_WATCHER=0`` to
switch the watcher off (e.g. where forking after ``MPI_Init`` is unsafe).

The deadline is ``timeout=`` when given, else the environment variable ``EVOGRAD_MPI_TIMEOUT``
(seconds), else :data:`DEFAULT_TIMEOUT` (300 s), generous enough for a slow generation on a
loaded cluster node; tests set a few seconds.

Cost: the position round is two small messages per collective, on two ranks measured at well under
3% of a generation of ``mpi/train.py``'s default task (benchmarks/RESULTS.rst).
"""

from __future__ import annotations

import atexit
import mmap
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from evograd import validate

__all__ = ["DEFAULT_TIMEOUT", "TIMEOUT_ENV", "WATCHER_ENV", "Collectives", "PositionError", "resolve_timeout"]

#: Seconds a rank waits in a collective before it aborts the job, unless told otherwise.
DEFAULT_TIMEOUT = 300.0
#: The environment variable that overrides :data:`DEFAULT_TIMEOUT` (seconds).
TIMEOUT_ENV = "EVOGRAD_MPI_TIMEOUT"
#: The environment variable that switches the watcher process off when set to ``0``.
WATCHER_ENV = "EVOGRAD_MPI_WATCHER"

#: The collectives a position names, by code (the code travels, the name is printed).
KINDS = ("evaluation", "sync check", "settings check", "gradient average", "exit", "sharded update", "sharded norms")
#: The collectives whose position number counts calls, not generations (a sharded update cannot see the generation).
COUNTED = ("sharded update", "sharded norms")
_TAG = 0x7E6  # point-to-point tag of the position round
_SPIN = 0.05  # seconds of polling that only yields the core (as MPI's own blocking wait spins) before naps
_NAP = 5e-3  # longest sleep between two polls
_FORWARD = 1.0  # seconds between the message of an expired deadline and MPI_Abort


class PositionError(RuntimeError):
    """Ranks reached different collectives or generations (raised on every rank at once)."""


def resolve_timeout(timeout: float | None) -> float:
    """The deadline in seconds: ``timeout``, else ``$EVOGRAD_MPI_TIMEOUT``, else :data:`DEFAULT_TIMEOUT`.

    Raises:
        TypeError: ``timeout`` is not a real number.
        ValueError: ``timeout`` (or the environment variable) is not a finite number > 0.
    """
    if timeout is None:
        text = os.environ.get(TIMEOUT_ENV)
        if text is None:
            return DEFAULT_TIMEOUT
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{TIMEOUT_ENV}={text!r} is not a number; allowed seconds in (0, inf)") from None
        return validate.real(TIMEOUT_ENV, value, low=0.0, low_open=True)
    return validate.real("timeout", timeout, low=0.0, low_open=True)


def _mpi() -> Any:
    from mpi4py import MPI  # the caller (evograd.mpi) has already checked that it imports

    return MPI


class Collectives:
    """The collectives of one communicator, each with a position round and a deadline.

    Args:
        comm: an mpi4py communicator with at least two ranks.
        timeout: the deadline of each collective in seconds (see :func:`resolve_timeout`).
        watch: start the watcher process of this rank (see the module docstring).

    Raises:
        TypeError, ValueError: ``timeout`` is not a number > 0.
    """

    def __init__(self, comm: Any, *, timeout: float | None = None, watch: bool = True) -> None:
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout = resolve_timeout(timeout)
        # rank 0 alone learns who is missing: the others wait longer, so its message comes first
        self.patience = self.timeout if self.rank == 0 else self.timeout * 1.1 + 1.0
        self._table = np.zeros((self.size, 3), dtype=np.int64)  # (ranks, generation/kind/size)
        self._watcher = start_watcher(self.rank) if watch else None

    # ------------------------------------------------------------------------------------------
    # the collectives

    def allgatherv(self, send: np.ndarray, receive: list, *, kind: str, generation: int, size: int) -> None:
        """``Allgatherv(send, receive)`` after the position round; ``size`` must agree across ranks."""
        self.positions(kind, generation, size)
        self._wait([self.comm.Iallgatherv(send, receive)], kind, generation)

    def allgather(self, send: np.ndarray, receive: np.ndarray, *, kind: str, generation: int) -> None:
        """``Allgather(send, receive)`` after the position round (every rank sends ``len(send)`` items)."""
        self.positions(kind, generation, len(send))
        self._wait([self.comm.Iallgather(send, receive)], kind, generation)

    def allreduce_sum(self, buffer: np.ndarray, *, kind: str, generation: int) -> None:
        """An in-place ``Allreduce`` with ``MPI.SUM`` after the position round."""
        self.positions(kind, generation, len(buffer))
        self._wait([self.comm.Iallreduce(_mpi().IN_PLACE, buffer, op=_mpi().SUM)], kind, generation)

    def allgather_bytes(self, data: bytes, *, kind: str, generation: int) -> list[bytes]:
        """Every rank's ``data``, in rank order (lengths may differ)."""
        lengths = np.empty(self.size, dtype=np.int64)
        self.allgather(np.array([len(data)], dtype=np.int64), lengths, kind=kind, generation=generation)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        gathered = np.empty(int(lengths.sum()), dtype=np.uint8)
        send = np.frombuffer(data, dtype=np.uint8) if data else np.empty(0, dtype=np.uint8)
        request = self.comm.Iallgatherv(send, [gathered, lengths.tolist(), offsets.tolist(), _mpi().BYTE])
        self._wait([request], kind, generation)
        return [gathered[o : o + n].tobytes() for o, n in zip(offsets.tolist(), lengths.tolist())]

    def note(self, generation: int) -> None:
        """Record that this rank has reached ``generation`` and computes (for the watcher's notice)."""
        if self._watcher is not None:
            self._watcher.record(generation, -2)

    # ------------------------------------------------------------------------------------------
    # the position round

    def positions(self, kind: str, generation: int, size: int) -> None:
        """Check that every rank is at the same ``(generation, kind, size)``; a collective call.

        Raises:
            PositionError: on every rank, when the positions differ; the message lists them.
        """
        mine = np.array([generation, KINDS.index(kind), size], dtype=np.int64)
        if self._watcher is not None:
            self._watcher.record(generation, KINDS.index(kind))
        table = self._table
        if self.rank == 0:
            table[0] = mine
            receives = [self.comm.Irecv(table[r], source=r, tag=_TAG) for r in range(1, self.size)]
            self._wait(receives, kind, generation, peers=list(range(1, self.size)))
            self._wait([self.comm.Ibcast(table, root=0)], kind, generation)
        else:
            self._wait([self.comm.Isend(mine, dest=0, tag=_TAG), self.comm.Ibcast(table, root=0)], kind, generation)
        if not (table == table[0]).all():
            raise PositionError(
                "ranks reached different collectives: "
                + "; ".join(f"rank {r} at {_where(row)}" for r, row in enumerate(table.tolist()))
                + " (do all ranks run the same settings? see evograd.mpi.check_settings)"
            )

    # ------------------------------------------------------------------------------------------
    # waiting

    def _wait(self, requests: Sequence[Any], kind: str, generation: int, *, peers: list[int] | None = None) -> None:
        """Poll ``requests`` until all complete; past the deadline, say who is missing and abort the job."""
        MPI = _mpi()
        if MPI.Request.Testall(requests):
            return
        start = time.monotonic()
        nap = 1e-5
        while not MPI.Request.Testall(requests):
            waited = time.monotonic() - start
            if waited > self.patience:
                self._expire(requests, kind, generation, waited, peers)
            if waited > _SPIN:
                time.sleep(nap)
                nap = min(2 * nap, _NAP)
            else:
                os.sched_yield()  # let a rank sharing this core finish its share

    def _expire(self, requests: Sequence[Any], kind: str, generation: int, waited: float, peers: list[int] | None):
        if peers is not None:  # rank 0's receives: the ones not completed name the missing ranks
            missing = [peer for peer, request in zip(peers, requests) if not request.Test()]
            whom = f"rank(s) {missing}"
        elif self.rank != 0 and kind in KINDS:
            whom = "rank 0 (which collects every rank's position) or a rank it waits for"
        else:
            whom = "a rank that never completed it"
        print(
            f"evograd.mpi: rank {self.rank} of {self.size} waited {waited:.1f} s for {whom} in "
            f"{_place(kind, generation)}; aborting the job (deadline {self.timeout:g} s: timeout= or ${TIMEOUT_ENV})",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(_FORWARD)  # the launcher forwards the message before MPI_Abort tears the job down
        self.comm.Abort(1)


def _place(kind: str, number: int) -> str:
    """``the evaluation of generation 5``, or ``the sharded update of call 5`` for a counted collective."""
    return f"the {kind} of {'call' if kind in COUNTED else 'generation'} {number}"


def _where(row: list[int]) -> str:
    generation, kind, size = row
    name = KINDS[kind] if 0 <= kind < len(KINDS) else f"collective {kind}"
    return f"{_place(name, generation)} (size {size})"


# ----------------------------------------------------------------------------------------------
# the watcher of a rank that dies without a word

_WATCHER = r"""
import os, struct, sys
pipe, page, rank, pid = (int(a) for a in sys.argv[1:5])
kinds, counted = sys.argv[5].split(","), sys.argv[6].split(",")
while os.read(pipe, 64):
    pass
generation, kind, clean = struct.unpack("<qqq", os.pread(page, 24, 0))
if not clean:
    where = (
        "before its first collective" if kind == -1
        else f"at generation {generation} (outside any collective)" if kind == -2
        else f"at {'call' if kinds[kind] in counted else 'generation'} {generation} (in or after the {kinds[kind]})"
    )
    os.write(2, f"evograd.mpi: rank {rank} (pid {pid}) ended abruptly {where}: killed by a signal, os._exit or "
             "MPI_Abort; the launcher ends the other ranks\n".encode())
"""


class _Watcher:
    """This rank's end of the watcher: a one-page file the rank writes its position into."""

    def __init__(self, rank: int) -> None:
        self.file = tempfile.TemporaryFile()  # unlinked at once; the watcher keeps its descriptor
        self.file.truncate(mmap.PAGESIZE)
        self.page = mmap.mmap(self.file.fileno(), mmap.PAGESIZE)
        self.view = np.frombuffer(self.page, dtype="<i8", count=3)  # generation, kind, clean
        self.view[:] = (0, -1, 0)
        read, self.pipe = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WATCHER, str(read), str(self.file.fileno()), str(rank), str(os.getpid())]
            + [",".join(KINDS), ",".join(COUNTED)],
            pass_fds=(read, self.file.fileno()),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the job's process group leaves it to report
        )
        os.close(read)
        atexit.register(self.close)

    def record(self, generation: int, kind: int) -> None:
        self.view[0], self.view[1] = generation, kind

    def close(self) -> None:
        """A clean exit: mark it, then close the pipe so the watcher ends quietly."""
        self.view[2] = 1
        os.close(self.pipe)


_WATCHERS: dict[int, _Watcher] = {}


def start_watcher(rank: int) -> _Watcher | None:
    """This process's watcher (one per process, started on first use), or None when switched off."""
    if os.environ.get(WATCHER_ENV, "1") == "0":
        return None
    if os.getpid() not in _WATCHERS:
        _WATCHERS[os.getpid()] = _Watcher(rank)
    return _WATCHERS[os.getpid()]
