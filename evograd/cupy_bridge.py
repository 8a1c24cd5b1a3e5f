"""Fitness functions written in CuPy, fed GPU-resident candidates without a copy.

A CuPy user writes ``fitness(x: cupy.ndarray (c, dim)) -> cupy.ndarray (c,)``;
:class:`CupyEvaluator` hands it each chunk of candidates that evograd materialized on the GPU, and
takes its result back, through DLPack: both sides then view the same device memory, so nothing is
copied and nothing leaves the device. DLPack also orders the work: when torch and CuPy run on
different CUDA streams, the exchange makes the consumer's stream wait for the producer's.

CuPy is imported only when this module is used, never by ``import evograd`` (docs/design.rst, contract
7); without CuPy, or without a CUDA device, the error names the ``gpu`` extra.

Examples (on a machine with CuPy and a GPU)::

    import cupy, torch
    from evograd import CupyEvaluator, Mutation, noise
    rastrigin = CupyEvaluator(lambda x: 10 * x.shape[1] + (x**2 - 10 * cupy.cos(2 * cupy.pi * x)).sum(1))
    fitness = rastrigin(torch.zeros(30, device="cuda"), noise.member_seeds(0, 0, 64), Mutation(sigma=0.1))
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

from evograd.evaluate import ChunkedEvaluator

__all__ = ["require_cupy", "to_cupy", "to_torch", "CupyEvaluator"]

_INSTALL = "pip install 'evograd-torch[gpu]' (CuPy for your CUDA version, e.g. cupy-cuda12x)"


def require_cupy() -> ModuleType:
    """The ``cupy`` module, once it is known to work with a CUDA device here.

    Raises:
        ImportError: CuPy is not installed (the message names the ``gpu`` extra).
        RuntimeError: CuPy or torch sees no CUDA device.
    """
    try:
        import cupy
    except ImportError as error:
        raise ImportError(f"evograd's CuPy bridge needs CuPy: {_INSTALL}") from error
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy raises its own CUDARuntimeError when no driver is found
        raise RuntimeError(
            f"CuPy finds no usable CUDA device ({error}); the CuPy bridge needs a GPU and {_INSTALL}"
        ) from error
    if devices == 0 or not torch.cuda.is_available():
        raise RuntimeError(
            f"the CuPy bridge needs a CUDA device that both torch and CuPy see; torch sees "
            f"{torch.cuda.device_count()}, CuPy {devices}. Install {_INSTALL}"
        )
    return cupy


def to_cupy(tensor: torch.Tensor) -> Any:
    """A CuPy array viewing ``tensor``'s device memory (no copy): writes to one show in the other.

    Raises:
        ValueError: ``tensor`` is not on a CUDA device.
    """
    cupy = require_cupy()
    if tensor.device.type != "cuda":
        raise ValueError(
            f"to_cupy needs a tensor on a CUDA device, got one on {tensor.device}; move it with .to('cuda')"
        )
    return cupy.from_dlpack(tensor.detach())


def to_torch(array: Any) -> torch.Tensor:
    """A torch tensor viewing a CuPy array's device memory (no copy)."""
    return torch.from_dlpack(array)


class CupyEvaluator(ChunkedEvaluator):
    """Fitness of flat vectors by a CuPy function: ``fn(x: cupy (c, dim)) -> cupy (c,)``.

    The chunks of candidates (of a ``center`` on a CUDA device) reach ``fn`` as CuPy views of
    evograd's own tensors, and its result returns as a view too (:func:`to_cupy`,
    :func:`to_torch`). Everything else is :class:`~evograd.ChunkedEvaluator`'s: chunking,
    counting, non-finite fitness ranked worst, :meth:`score` for explicit candidates (e.g. a DEAP
    population through :class:`evograd.deap_tools.PopulationFitness`).

    It is an :class:`~evograd.protocols.Evaluator` of populations and nothing more: CuPy code is
    outside torch's autograd, so it offers no differentiable loss (no ``vector_objective``) to the
    forward-gradient and SPSA direction sources.

    Args:
        fn: the fitness, lower is better; it may keep the arrays it is given.
        chunk_size: candidates per call of ``fn``.

    Raises:
        ImportError / RuntimeError: no CuPy or no CUDA device (see :func:`require_cupy`).
    """

    reuses_chunks = False  # fn is user code, free to keep the arrays it is given

    def __init__(self, fn: Callable[[Any], Any], *, chunk_size: int = 1024) -> None:
        self._cupy = require_cupy()  # checked once here, not once per chunk
        super().__init__(chunk_size=chunk_size)
        self.fn = fn

    def _score(self, candidates: torch.Tensor, context: None) -> torch.Tensor:
        if candidates.device.type != "cuda":
            raise ValueError(
                f"CupyEvaluator scores candidates on a CUDA device, got them on {candidates.device}; "
                "put the center (or the candidates) on 'cuda'"
            )
        scores = self.fn(self._cupy.from_dlpack(candidates))  # a view, as to_cupy gives
        if not hasattr(scores, "__dlpack__") or tuple(scores.shape) != (len(candidates),):
            raise ValueError(
                f"fn must return a CuPy array of one fitness per candidate, shape ({len(candidates)},), "
                f"got {type(scores).__name__} {tuple(getattr(scores, 'shape', ()))}"
            )
        return to_torch(scores)
