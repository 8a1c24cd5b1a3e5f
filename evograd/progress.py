"""Progress of a sequence of runs: "run 7 of 24", each run's share of its budget, and the time left.

A :class:`Board` is made for the runs a command will do; :meth:`Board.start` begins the next run
and returns its :data:`evograd.harness.Progress` callback (``progress(fraction, status)``), and
:meth:`Board.skip` counts a run that is already finished (a resumed one). The time left is
extrapolated from what this process has done so far: the run's own (its elapsed time over the
fraction of its budget spent) and the whole sequence's (elapsed time over the fraction of the runs
still to do when it started, the current one counted by its fraction).

On a terminal the board is a live ``rich`` display redrawn in place; anywhere else (a log file, CI,
a pipe) it writes a plain line at every quarter of each run, with no control characters.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from evograd import validate
from evograd.harness import Progress

__all__ = ["Board", "duration"]


def duration(seconds: float | None) -> str:
    """A short duration: ``"42s"``, ``"3m05s"``, ``"2h07m"``; ``"?"`` when unknown.

    Examples:
        >>> duration(42.4), duration(185), duration(7620), duration(None)
        ('42s', '3m05s', '2h07m', '?')
    """
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Board:
    """The progress display of ``total`` runs on ``stream`` (standard error by default).

    Args:
        total: how many runs the command does, resumed ones included.
        stream: where the display goes.
        interactive: redraw in place with ``rich``; by default when ``stream`` is a terminal.

    Examples:
        >>> import io
        >>> stream = io.StringIO()
        >>> with Board(2, stream=stream) as board:
        ...     board.skip("adam seed 0")
        ...     progress = board.start("adam seed 1")
        ...     progress(1.0, "test accuracy 0.97")
        >>> print(stream.getvalue().split("%")[0] + "%")
        run 2 of 2  adam seed 1        100%
    """

    def __init__(self, total: int, *, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self.total = validate.integer("total", total, low=1)
        self.stream = sys.stderr if stream is None else stream
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.index = 0  # runs started or skipped
        self.skipped = 0
        self.finished_here = 0  # runs this process finished
        self._begin: float | None = None  # when this process started its first run
        self._live = None
        self._rows: dict[str, int] = {}

    # -- the sequence

    def skip(self, label: str) -> None:
        """Count a run that finished before (it is resumed, not run again)."""
        self.index += 1
        self.skipped += 1

    def start(self, label: str) -> Progress:
        """Begin the next run; returns its ``progress(fraction, status)`` callback."""
        self.index += 1
        if self._begin is None:
            self._begin = time.perf_counter()
        index, begin, shown = self.index, time.perf_counter(), [-1]

        def progress(fraction: float, status: str) -> None:
            now = time.perf_counter()
            run_eta = (now - begin) * (1 - fraction) / fraction if fraction > 0 else None
            line = _Line(index, self.total, label, fraction, now - begin, run_eta, self._overall_eta(fraction), status)
            if self.interactive:
                self._draw(line)
            else:
                quarter = int(fraction * 4)
                if quarter != shown[0]:
                    shown[0] = quarter
                    self.stream.write(line.plain() + "\n")
                    self.stream.flush()
            if fraction >= 1.0:
                self.finished_here += 1

        return progress

    def _overall_eta(self, fraction: float) -> float | None:
        """Seconds left for every run still to do, extrapolated from this process's pace so far."""
        todo = self.total - self.skipped
        done = (self.finished_here + min(fraction, 1.0)) / todo
        if self._begin is None or done <= 0:
            return None
        elapsed = time.perf_counter() - self._begin
        return elapsed * (1 - done) / done

    # -- rich display

    def _draw(self, line: _Line) -> None:
        """Two live rows, the current run and all runs; each finished run is printed above them as a line."""
        from rich import progress as rp

        if self._live is None:
            from rich.console import Console

            self._live = rp.Progress(
                rp.TextColumn("{task.fields[counter]:<12}"),
                rp.TextColumn("{task.description:<18}"),
                rp.BarColumn(bar_width=24),
                rp.TaskProgressColumn(),
                rp.TextColumn("{task.fields[times]}"),
                rp.TextColumn("{task.fields[status]}"),
                console=Console(file=self.stream),
                transient=True,
            )
            self._live.start()
            fields = {"counter": "", "times": "", "status": ""}
            self._rows = {"run": self._live.add_task("", total=1.0, **fields)}
            self._rows["all"] = self._live.add_task("all runs", total=1.0, **fields)
        done = (self.finished_here + min(line.fraction, 1.0)) / (self.total - self.skipped)
        self._live.update(
            self._rows["run"],
            description=line.label,
            completed=line.fraction,
            counter=f"run {line.index} of {line.total}",
            times=f"{duration(line.elapsed)}  ETA {duration(line.run_eta)}",
            status=line.status,
        )
        self._live.update(
            self._rows["all"],
            completed=done,
            counter=f"{self.finished_here + (line.fraction >= 1.0) + self.skipped} of {line.total} done",
            times=f"ETA {duration(line.all_eta)}",
        )
        if line.fraction >= 1.0:
            self._live.console.print(line.plain(), highlight=False, markup=False)

    def close(self) -> None:
        """Stop the live display (its last state stays on screen)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Line:
    """One state of one run, as the board shows it."""

    def __init__(self, index, total, label, fraction, elapsed, run_eta, all_eta, status) -> None:
        self.index, self.total, self.label, self.fraction = index, total, label, fraction
        self.elapsed, self.run_eta, self.all_eta, self.status = elapsed, run_eta, all_eta, status

    def times(self) -> str:
        done = self.fraction >= 1.0
        left = "" if done else f"ETA run {duration(self.run_eta)}, "
        return f"{duration(self.elapsed)}  {left}ETA all {duration(self.all_eta)}"

    def plain(self) -> str:
        counter = f"run {self.index} of {self.total}"
        return f"{counter}  {self.label:<18} {self.fraction:4.0%}  {self.times()}  {self.status}"
