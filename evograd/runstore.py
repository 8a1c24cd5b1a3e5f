"""A folder of finished runs, one JSON file each, written atomically: what lets a command resume.

``evograd compare`` and ``evograd run`` save each run the moment it finishes, under
``OUT/runs/NAME.json``; after an interruption (Ctrl-C, a killed job) ``--resume`` loads those and
runs only the rest. A file is written to a temporary name in the same folder, flushed to disk and
renamed over the final name, so it is either whole or absent, never half-written; leftover
temporary files of an interrupted write are ignored and removed by the next write of that run.

Examples:
    >>> import tempfile
    >>> store = RunStore(tempfile.mkdtemp())
    >>> store.save("adam-seed0", {"fe": 1000, "curve": [[0, 0.0, 0.1]]})
    >>> store.load("adam-seed0"), store.load("sgd-seed0"), store.names()
    ({'fe': 1000, 'curve': [[0, 0.0, 0.1]]}, None, ['adam-seed0'])
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any

__all__ = ["RunStore", "write_atomic"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=,+-]*")


def write_atomic(path: str | pathlib.Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file, fsync, then a rename."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class RunStore:
    """Finished runs in ``folder``, by name (``folder`` is created at the first save).

    Args:
        folder: e.g. ``OUT/runs``.
    """

    def __init__(self, folder: str | pathlib.Path) -> None:
        self.folder = pathlib.Path(folder)

    def _path(self, name: str) -> pathlib.Path:
        if not _NAME.fullmatch(name):
            raise ValueError(f"run name {name!r} is not allowed; allowed letters, digits and _ . = , + -")
        return self.folder / f"{name}.json"

    def save(self, name: str, payload: dict[str, Any]) -> None:
        """Keep ``payload`` (JSON-ready) as the finished run ``name``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self._path(name), json.dumps(payload, indent=1) + "\n")

    def load(self, name: str) -> dict[str, Any] | None:
        """The finished run ``name``, or None if it has not finished.

        Raises:
            ValueError: the file exists but is not valid JSON (it was edited or damaged).
        """
        path = self._path(name)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is damaged ({err}); delete it to run that run again") from err

    def names(self) -> list[str]:
        """The names of the finished runs, sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.json"))
