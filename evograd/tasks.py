"""Built-in tasks: a model factory, data or an environment, a loss, and a test metric.

No downloads: data ships with a package (scikit-learn's digits), is generated (teacher-student),
is read from a path the user gives (MNIST IDX files), or is simulated (gymnasium's classic-control
environments). Lower is better for every loss; rewards are negated at this boundary (docs/design.rst,
contract 1). Metrics say which way is better in ``Task.higher_is_better``.

A task is either *supervised* (``split``, ``loss_fn``, ``batch_size``: every method can train on
it) or *episodic* (``episode_fitness``: only evolution methods can, since there is no gradient to
take through an environment).
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import pathlib
import struct
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from evograd import noise
from evograd.harness import accuracy, device_of

__all__ = [
    "Split",
    "Task",
    "TASKS",
    "get",
    "digits",
    "random_labels",
    "shuffle_labels",
    "teacher",
    "mnist",
    "read_idx",
    "mlp",
    "cartpole",
    "pendulum",
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


@dataclasses.dataclass(frozen=True)
class Task:
    """One problem every method is compared on.

    Attributes:
        name: the task's name on the command line.
        make_model: ``make_model(seed) -> nn.Module``, the same architecture for every method.
        metric: ``metric(model) -> float``, the number the comparison reports (e.g. test accuracy).
        metric_name: what ``metric`` measures, for tables and plots.
        higher_is_better: the metric's direction.
        target: the metric value whose first crossing is reported ("FE to reach target").
        split, loss_fn, batch_size: supervised tasks only.
        episode_fitness: episodic tasks only: ``episode_fitness(model) -> (negated return, steps)``.
    """

    name: str
    make_model: Callable[[int], nn.Module]
    metric: Callable[[nn.Module], float]
    metric_name: str
    higher_is_better: bool
    target: float
    split: Split | None = None
    loss_fn: Callable[..., torch.Tensor] | None = None
    batch_size: int = 128
    episode_fitness: Callable[[nn.Module], tuple[float, int]] | None = None

    @property
    def episodic(self) -> bool:
        return self.episode_fitness is not None


# ----------------------------------------------------------------------------------------------
# models and data


def mlp(
    sizes: tuple[int, ...] = (64, 32, 10),
    *,
    activation: type[nn.Module] = nn.Tanh,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """A multilayer perceptron with the given layer sizes, initialized from ``seed`` (no global RNG)."""
    if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"sizes={sizes!r} must list at least two positive layer widths")
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.utils.skip_init(nn.Linear, n_in, n_out, dtype=dtype)  # nn.Linear's own init draws globally
        bound = 1.0 / n_in**0.5  # torch's default init range, drawn from our own generator
        with torch.no_grad():
            linear.weight.uniform_(-bound, bound, generator=gen)
            linear.bias.uniform_(-bound, bound, generator=gen)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def _split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int, dtype: torch.dtype) -> Split:
    """A seeded permutation split, features standardized with the training set's statistics."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} is out of range; allowed (0, 1)")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    x = x.to(torch.float64)
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)
    x = ((x - mean) / std).to(dtype)
    return Split(x[train], y[train], x[test], y[test])


def digits(*, test_fraction: float = 0.2, seed: int = 0, dtype: torch.dtype = torch.float32) -> Split:
    """scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes), standardized, fixed split.

    Raises:
        ImportError: scikit-learn is missing (install the ``data`` extra).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("the digits tasks need scikit-learn: pip install 'evograd-torch[data]'") from err
    data = load_digits()
    return _split(
        torch.as_tensor(data.data), torch.as_tensor(data.target, dtype=torch.int64), test_fraction, seed, dtype
    )


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
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    return Split(((train_x - mean) / std).to(dtype), train_y, ((test_x - mean) / std).to(dtype), test_y)


# ----------------------------------------------------------------------------------------------
# supervised tasks


def _classification(
    name: str, split: Split, hidden: tuple[int, ...], target: float, *, on_train: bool = False, batch_size: int = 128
) -> Task:
    sizes = (split.train_x.shape[1], *hidden, int(split.train_y.max()) + 1)
    x, y = (split.train_x, split.train_y) if on_train else (split.test_x, split.test_y)
    return Task(
        name=name,
        make_model=lambda seed: mlp(sizes, seed=seed),
        metric=lambda m: accuracy(m, x, y),
        metric_name="train accuracy" if on_train else "test accuracy",
        higher_is_better=True,
        target=target,
        split=split,
        loss_fn=F.cross_entropy,
        batch_size=batch_size,
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


def _teacher_task(sizes: tuple[int, ...] = (16, 32, 4)) -> Task:
    split = teacher(sizes=sizes)

    def test_mse(model: nn.Module) -> float:
        device = device_of(model)
        with torch.no_grad():
            return float(F.mse_loss(model(split.test_x.to(device)), split.test_y.to(device)))

    return Task(
        name="teacher",
        make_model=lambda seed: mlp(sizes, seed=seed),
        metric=test_mse,
        metric_name="test MSE",
        higher_is_better=False,
        target=0.05,
        split=split,
        loss_fn=F.mse_loss,
    )


# ----------------------------------------------------------------------------------------------
# episodic tasks


def _gymnasium():
    try:
        import gymnasium
    except ImportError as err:
        raise ImportError("the RL tasks need gymnasium: pip install 'evograd-torch[rl]'") from err
    return gymnasium


def _episodes(
    env_id: str, act: Callable[[torch.Tensor], np.ndarray], model: nn.Module, seeds: range
) -> tuple[float, int]:
    """Mean return of the policy over one episode per seed, and the environment steps it took."""
    env = _gymnasium().make(env_id)
    device = device_of(model)
    total, steps = 0.0, 0
    try:
        with torch.no_grad():
            for seed in seeds:
                obs, _ = env.reset(seed=seed)
                done = False
                while not done:
                    out = model(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu()
                    obs, reward, terminated, truncated, _ = env.step(act(out))
                    total += float(reward)
                    steps += 1
                    done = terminated or truncated
    finally:
        env.close()
    return total / len(seeds), steps


def _episodic(name: str, env_id: str, sizes: tuple[int, ...], act, target: float, train_episodes: int) -> Task:
    _gymnasium()  # fail early, with the extra to install
    train, test = range(train_episodes), range(10_000, 10_010)

    def fitness(model: nn.Module) -> tuple[float, int]:
        mean_return, steps = _episodes(env_id, act, model, train)
        return -mean_return, steps

    return Task(
        name=name,
        make_model=lambda seed: mlp(sizes, seed=seed),
        metric=lambda m: _episodes(env_id, act, m, test)[0],
        metric_name="mean return",
        higher_is_better=True,
        target=target,
        episode_fitness=fitness,
    )


def cartpole() -> Task:
    """CartPole-v1 with a 4-16-2 policy (arg-max action); return 500 is the maximum."""
    return _episodic("cartpole", "CartPole-v1", (4, 16, 2), lambda out: int(out.argmax()), 475.0, 3)


def pendulum() -> Task:
    """Pendulum-v1 with a 3-16-1 policy (torque 2·tanh(output)); returns are negative, 0 is best."""
    return _episodic("pendulum", "Pendulum-v1", (3, 16, 1), lambda out: (2.0 * torch.tanh(out)).numpy(), -200.0, 3)


def _mnist_task(path: str) -> Task:
    return _classification("mnist", mnist(path), (128,), 0.97)


TASKS: dict[str, Callable[..., Task]] = {
    "digits": lambda: _classification("digits", digits(), (32,), 0.95),
    "teacher": _teacher_task,
    "random-labels": lambda: _classification("random-labels", random_labels(), (64,), 1.0, on_train=True),
    "cartpole": cartpole,
    "pendulum": pendulum,
    "mnist": _mnist_task,
}


def get(name: str, **options) -> Task:
    """The built-in task ``name`` (``mnist`` needs ``path=``).

    Raises:
        ValueError: an unknown task name, listing the known ones.
    """
    if name not in TASKS:
        raise ValueError(f"task={name!r} is unknown; allowed {', '.join(TASKS)}")
    return TASKS[name](**options)
