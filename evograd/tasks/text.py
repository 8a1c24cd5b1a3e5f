"""Text that is on every machine: the source files of Python's standard library, as bytes.

The character-model task (``charlm``) needs text without downloads. Every Python installation
carries its standard library's source, so the corpus is the ``*.py`` files under
``sysconfig.get_paths()["stdlib"]``, read as bytes (the vocabulary is the 256 byte values: no
tokenizer, no unknown symbols, non-ASCII text is its UTF-8 bytes). Directories that differ
between installations of the same Python are left out: ``site-packages``/``dist-packages``
(third-party code) and the test suites (``test``, ``tests``, ``idle_test``; some distributions ship
them separately). What remains is fixed by the Python version, not by the machine: the text
depends on the Python version (3.11.7 here: 734 files, 12.1 MB), so :attr:`Corpus.digest` records
which text a result was measured on.

The split is by file, fixed and independent of the file list: a file is in the validation set
when the first 8 bytes of the SHA-256 of its relative path, read as an integer, fall in the
lowest ``validation_fraction`` of their range. Adding or removing a file (another Python version)
moves no other file between the sets. Within each set the files are concatenated in sorted path
order.

A sample is a window of ``context + 1`` consecutive bytes: the model reads the first ``context``
and predicts each next byte. Windows tile each set with stride ``context``, so every byte after
the first is a target exactly once, and ``x``/``y`` are views of one byte tensor (nothing is
copied until a minibatch is drawn).

Examples:
    >>> data = torch.arange(10, dtype=torch.uint8)
    >>> x, y = windows(data, context=4)
    >>> x.tolist(), y.tolist()
    ([[0, 1, 2, 3], [4, 5, 6, 7]], [[1, 2, 3, 4], [5, 6, 7, 8]])
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
import sys
import sysconfig

import torch
from torch import nn
from torch.nn import functional as F

from evograd import validate
from evograd.tasks.data import Split

__all__ = [
    "VOCAB",
    "EXCLUDED",
    "Corpus",
    "stdlib_files",
    "in_validation",
    "stdlib_corpus",
    "windows",
    "char_split",
    "next_token_loss",
    "sequence_loss",
]

#: The vocabulary: the 256 byte values.
VOCAB = 256
#: Directory names under the standard library whose files are left out of the corpus.
EXCLUDED = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The standard library's source as two byte sequences.

    Attributes:
        root: the standard library directory the files were read from.
        files: every file's path relative to ``root`` (POSIX form), sorted.
        validation_files: the paths in the validation set, sorted.
        train: (n_train,) uint8 bytes of the training files, concatenated in path order.
        validation: (n_validation,) uint8 bytes of the validation files, likewise.
        digest: SHA-256 (hex) of every file's relative path, length and bytes, in path order: names
            the text a result was measured on.
        python: the Python version whose standard library it is.
    """

    root: str
    files: tuple[str, ...]
    validation_files: tuple[str, ...]
    train: torch.Tensor
    validation: torch.Tensor
    digest: str
    python: str


def stdlib_files(root: str | pathlib.Path | None = None) -> tuple[str, ...]:
    """The corpus's files: every ``*.py`` under ``root`` outside :data:`EXCLUDED` directories, sorted.

    Args:
        root: the directory to read; by default this Python's standard library.

    Returns:
        Relative POSIX paths, sorted.
    """
    base = pathlib.Path(sysconfig.get_paths()["stdlib"] if root is None else root)
    found = []
    for folder, subfolders, names in os.walk(base):
        subfolders[:] = [name for name in subfolders if name not in EXCLUDED]  # never descend into them
        found += [(pathlib.Path(folder) / name).relative_to(base).as_posix() for name in names if name.endswith(".py")]
    return tuple(sorted(found))


def in_validation(path: str, fraction: float) -> bool:
    """Whether the file at relative ``path`` is in the validation set (a hash of the path alone).

    Examples:
        >>> in_validation("json/decoder.py", 0.0), in_validation("json/decoder.py", 1.0)
        (False, True)
    """
    code = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big")
    return code < fraction * 2**64


@functools.lru_cache(maxsize=4)
def _read(
    root: str, stamps: tuple[tuple[str, int, int], ...], fraction: float
) -> tuple[tuple[str, ...], tuple[str, ...], bytes, bytes, str]:
    """Files, validation files, training bytes, validation bytes and digest of the files in ``stamps``
    (path, size, modification time: a changed file is read again), read once per process."""
    files = tuple(name for name, _, _ in stamps)
    digest, parts = hashlib.sha256(), {False: [], True: []}
    for name in files:
        text = (pathlib.Path(root) / name).read_bytes()
        digest.update(name.encode() + b"\0" + len(text).to_bytes(8, "big") + text)
        parts[in_validation(name, fraction)].append(text)
    held_out = tuple(name for name in files if in_validation(name, fraction))
    return files, held_out, b"".join(parts[False]), b"".join(parts[True]), digest.hexdigest()


def stdlib_corpus(*, validation_fraction: float = 0.1, root: str | pathlib.Path | None = None) -> Corpus:
    """The standard library's source files as a byte corpus with a fixed train/validation split.

    Args:
        validation_fraction: the share of files (by path hash) in the validation set, in (0, 1).
        root: the directory to read; by default this Python's standard library.

    Raises:
        ValueError: a fraction outside (0, 1), or a root without any file.
    """
    validate.real("validation_fraction", validation_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    root = str(sysconfig.get_paths()["stdlib"] if root is None else root)
    stamps = tuple(
        (name, (stat := os.stat(os.path.join(root, name))).st_size, stat.st_mtime_ns) for name in stdlib_files(root)
    )
    if not stamps:
        raise ValueError(f"root={root!r} holds no *.py files outside {sorted(EXCLUDED)}")
    files, held_out, train, held, digest = _read(root, stamps, float(validation_fraction))

    def tensor(data: bytes) -> torch.Tensor:
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)  # a private copy: callers may write to it

    return Corpus(root, files, held_out, tensor(train), tensor(held), digest, sys.version.split()[0])


def windows(data: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-byte targets of every window of ``context + 1`` bytes, stride ``context``.

    Args:
        data: (n,) bytes.
        context: the model's context length, >= 1.

    Returns:
        ``(x, y)``, each (windows, context) and a view of ``data``: ``y`` is ``x`` shifted by one.
    """
    validate.integer("context", context, low=1)
    if len(data) < context + 1:
        raise ValueError(f"context={context} needs at least {context + 1} bytes, got {len(data)}")
    tiles = data.unfold(0, context + 1, context)  # (windows, context + 1)
    return tiles[:, :-1], tiles[:, 1:]


def char_split(corpus: Corpus, *, context: int = 64, validation_windows: int = 256) -> Split:
    """A :class:`~evograd.tasks.data.Split` of next-byte prediction: every training window, and
    ``validation_windows`` validation windows evenly spaced over the validation set.

    Measuring the metric on a fixed, evenly spaced subset keeps it cheap (it is measured dozens of
    times per run) while spanning every validation file's neighbourhood.

    Raises:
        ValueError: ``validation_windows`` < 1 or more than the validation set holds.
    """
    train_x, train_y = windows(corpus.train, context)
    held_x, held_y = windows(corpus.validation, context)
    validate.integer("validation_windows", validation_windows, low=1, high=len(held_x))
    pick = torch.arange(validation_windows) * (len(held_x) // validation_windows)  # (validation_windows,)
    return Split(train_x, train_y, held_x[pick], held_y[pick])


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per token) of (..., T, vocab) logits against (..., T) integer targets.

    Vmappable, so :class:`~evograd.VmapEvaluator` and :class:`~evograd.LowRankEvaluator` can use it.
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long())


def sequence_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk: int = 64) -> float:
    """:func:`next_token_loss` of ``model`` over every window of ``x``, ``chunk`` windows at a time,
    on the model's device (the mean over all tokens; windows have equal length)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            part = slice(start, start + chunk)
            total += float(next_token_loss(model(x[part].to(device)), y[part].to(device))) * len(x[part])
    return total / len(x)
