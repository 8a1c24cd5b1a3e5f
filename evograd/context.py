"""What one step of the hybrid optimizer offers its direction sources: :class:`Context`.

:class:`~evograd.HybridOptimizer` builds one :class:`Context` per step and hands each direction
source its share of the parameters (:meth:`Context.restrict`); :func:`evograd.diagnostics.alignment`
builds one to run a source alone. Sources read it, ask it for losses, gradients and population
fitness, and charge their cost to it. Every context of a step shares one :class:`StepRecord`: the
closure's loss and gradient (the closure runs at most once for the gradient, however many sources
need it) and the forward-pass equivalents spent (docs/design.rst, contract 8).

The evaluator is reached through its declared protocols (:mod:`evograd.protocols`) only:

* an :class:`~evograd.protocols.Evaluator` scores populations, and its ``fe`` counter
  says what they cost;
* a :class:`~evograd.protocols.ModelEvaluator` also names the model whose flat vector populations
  perturb (:meth:`Context.space`) and the loss as a function of its parameters
  (:meth:`Context.objective`);
* a :class:`~evograd.protocols.VectorEvaluator` offers the loss of one flat vector; its vector is
  the source's own parameters, concatenated.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from evograd import feedback, flat, noise
from evograd.protocols import Batch, Evaluator, ModelEvaluator, VectorEvaluator

__all__ = ["Context", "Space", "StepRecord", "set_batch"]

Closure = Callable[[], Any]
#: ``loss(params)`` of a source's parameters, one tensor per parameter (``None``: the live parameters).
Loss = Callable[[Sequence[Tensor] | None], Tensor]


def set_batch(evaluator: Evaluator | None, batch: Batch | None) -> Batch | None:
    """Hand a step's ``batch`` to a model evaluator; the batch the step scores on, if known.

    Args:
        evaluator: the optimizer's evaluator, or ``None``.
        batch: ``(inputs, targets, ...)`` of this step, or ``None`` to keep the evaluator's.

    Returns:
        ``batch``, or without one the fixed batch a model evaluator holds (``None`` for a callable
        batch, which draws a new one per call, or for any other evaluator).

    Raises:
        TypeError: ``batch`` is given for an evaluator that takes none (not a model evaluator).
    """
    if batch is not None:
        if evaluator is not None:
            if not isinstance(evaluator, ModelEvaluator):
                raise TypeError(
                    f"step(batch=...) but {type(evaluator).__name__} takes no batch: it is not a "
                    "ModelEvaluator (VmapEvaluator, SerialEvaluator, or MPIEvaluator of one)"
                )
            evaluator.set_batch(batch)
        return batch
    if isinstance(evaluator, ModelEvaluator) and not callable(evaluator.batch):
        return evaluator.batch
    return None


class StepRecord:
    """What one step shares between its contexts: the closure's loss and gradient, and the FE spent.

    Args:
        params: every parameter of the step (the closure's gradient is made to fill their ``.grad``).
        closure: torch's closure, or ``None``.
        samples: samples in the step's batch, to charge closure calls (``None``: unknown).

    Attributes:
        loss: the closure's first loss this step, or ``None``.
        fe: forward-pass equivalents charged so far.
        uncounted: closure calls whose FE could not be charged because ``samples`` was unknown.
    """

    def __init__(self, params: list[Tensor], closure: Closure | None, samples: int | None) -> None:
        self.params, self.closure, self.samples = params, closure, samples
        self.loss: Tensor | None = None
        self.fe = 0
        self.uncounted = 0
        self.has_gradient = False

    def charge_closure(self) -> None:
        """Charge one forward and backward pass of the batch (3 FE per sample)."""
        if self.samples is None:
            self.uncounted += 1
        else:
            self.fe += 3 * self.samples  # forward 1 FE + backward 2 FE per sample

    def call(self, closure: Closure) -> Tensor:
        """Run ``closure`` once, keep the step's first loss, and check it returned one."""
        loss = closure()
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise TypeError(
                f"the closure must return the loss as a one-element tensor, got {type(loss).__name__}; "
                "end it with `return loss`"
            )
        self.loss = loss if self.loss is None else self.loss
        self.charge_closure()
        return loss

    def gradient(self, who: str) -> None:
        """Make every ``p.grad`` hold the true gradient, calling the closure at most once per step."""
        if self.has_gradient:
            return
        if self.closure is not None:
            for p in self.params:  # so a closure that only returns the loss is detected below
                p.grad = None
            with torch.enable_grad(), feedback.mode("bp"):  # true gradients even through converted layers
                loss = self.call(self.closure)
                if loss.requires_grad and all(p.grad is None for p in self.params):
                    loss.backward()  # the closure returned the loss without calling backward()
        elif all(p.grad is None for p in self.params):
            raise ValueError(
                f"{who} needs the gradient: call optimizer.step(closure) with a closure that computes "
                "the loss, or call loss.backward() before optimizer.step()"
            )
        else:
            self.charge_closure()  # a backward the training loop ran before step()
        self.has_gradient = True

    def finish(self) -> Tensor | None:
        """The step's loss; torch's contract calls a given closure once even if no source needed it."""
        if self.closure is not None and self.loss is None:
            with torch.enable_grad():
                self.call(self.closure)
        return self.loss


@dataclasses.dataclass(frozen=True)
class Space:
    """The evaluator's flat vector and where a source's parameters lie in it.

    Attributes:
        center: (dim,) the vector now.
        slices: where each of the source's parameters lies in it.
        shapes: the parameters' shapes.
        mask: (dim,) 1 on the source's coordinates, 0 elsewhere; ``None`` when they are the whole vector.
    """

    center: Tensor  # (dim,)
    slices: list[slice]
    shapes: list[torch.Size]
    mask: Tensor | None  # (dim,)

    def split(self, vector: Tensor) -> list[Tensor]:
        """The source's parameters' parts of a (dim,) vector, shaped like them (views of it)."""
        return [vector[s].view(shape) for s, shape in zip(self.slices, self.shapes)]


class Context:
    """What one optimizer step offers a direction source, for the parameters it drives.

    Args:
        params: the parameters (live leaf tensors).
        step: optimizer steps taken before this one; seeds of per-step noise derive from it.
        closure: torch's closure: computes the loss (and usually calls ``backward()``).
        evaluator: scores populations and provides the loss (see the module docstring).
        samples: samples in this step's batch, to charge closure calls (``None``: unknown).
        names: the parameters' names, for messages and per-layer diagnostics.

    Attributes:
        trace: ``None``, or a dict in which :func:`~evograd.directions.mix` stores each member's
            direction by name.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        *,
        step: int = 0,
        closure: Closure | None = None,
        evaluator: Evaluator | None = None,
        samples: int | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self.params = list(params)
        self.names = list(names) if names is not None else [str(i) for i in range(len(self.params))]
        self.step, self.closure, self.evaluator = step, closure, evaluator
        self.trace: dict[str, list[Tensor]] | None = None
        self._shared = StepRecord(self.params, closure, samples)

    def restrict(self, params: Sequence[Tensor], names: Sequence[str]) -> Context:
        """A context for a subset of the parameters that shares this step's closure calls and FE."""
        ctx = copy.copy(self)  # the same StepRecord
        ctx.params, ctx.names, ctx.trace = list(params), list(names), None
        return ctx

    @property
    def fe(self) -> int:
        """Forward-pass equivalents charged so far in this step (by every context sharing it)."""
        return self._shared.fe

    @property
    def uncounted(self) -> int:
        """Closure calls of this step left out of :attr:`fe` because the batch size was unknown."""
        return self._shared.uncounted

    def spend(self, fe: int) -> None:
        """Charge ``fe`` forward-pass equivalents to this step."""
        self._shared.fe += int(fe)

    def finish(self) -> Tensor | None:
        """End the step: its closure's loss (calling a given closure now if no source did)."""
        return self._shared.finish()

    def gradient(self, who: str = "backprop()") -> list[Tensor]:
        """The true (backprop) gradient of the closure's loss, one tensor per parameter."""
        self._shared.gradient(who)
        return [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]

    def feedback_gradients(self, model: nn.Module, rule: str) -> list[Tensor]:
        """Gradients of the closure's loss under a backprop-free ``rule``, one per ``model.parameters()``."""
        if self.closure is None:
            raise ValueError(f"the {rule!r} feedback rule needs optimizer.step(closure)")
        return feedback.feedback_gradients(model, lambda: self._shared.call(self.closure), rule)

    def require_evaluator(self, who: str) -> Evaluator:
        """The evaluator; an error if there is none, it is not one, or its model lacks one of the parameters.

        Raises:
            ValueError: no evaluator, or a parameter that is not a trainable parameter of its model.
            TypeError: the evaluator does not implement :class:`~evograd.protocols.Evaluator`.
        """
        if self.evaluator is None:
            raise ValueError(f"{who} needs an evaluator: HybridOptimizer(..., evaluator=VmapEvaluator(model, loss_fn))")
        if not isinstance(self.evaluator, Evaluator):
            raise TypeError(
                f"{who}: {type(self.evaluator).__name__} is not an evograd.Evaluator "
                "(__call__(center, seeds, mutation), evaluations, fe)"
            )
        if isinstance(self.evaluator, ModelEvaluator):
            self._where(self.evaluator.model, who)
        return self.evaluator

    def evaluate(self, center: Tensor, seeds: Tensor, mutation: noise.Mutation, who: str) -> Tensor:
        """Population fitness from the evaluator, the forward passes it counts charged to this step."""
        evaluator = self.require_evaluator(who)
        before = evaluator.fe
        fitness = evaluator(center, seeds, mutation)  # (n,)
        self.spend(evaluator.fe - before)
        return fitness

    def _where(self, model: nn.Module, who: str) -> list[str]:
        """The names, in ``model``, of this context's parameters (matched by identity)."""
        names = {id(p): name for name, p in model.named_parameters() if p.requires_grad}
        for p, name in zip(self.params, self.names):
            if id(p) not in names:
                raise ValueError(
                    f"{who}: parameter {name!r} {tuple(p.shape)} is not a trainable parameter of the "
                    f"evaluator's model ({type(model).__name__})"
                )
        return [names[id(p)] for p in self.params]

    def space(self, who: str) -> Space:
        """The evaluator's flat vector now, and where this context's parameters lie in it.

        A model evaluator's vector is its model's (``flat.layout_of``); any other evaluator's is
        this context's parameters, concatenated.
        """
        evaluator = self.require_evaluator(who)
        shapes = [p.shape for p in self.params]
        if not isinstance(evaluator, ModelEvaluator):  # a function of flat vectors: the vector is these parameters
            center = torch.cat([p.detach().reshape(-1) for p in self.params])  # (dim,)
            ends = itertools.accumulate(p.numel() for p in self.params)
            return Space(center, [slice(e - p.numel(), e) for p, e in zip(self.params, ends)], shapes, None)
        layout = flat.layout_of(evaluator.model)
        slices = [layout.slices[name] for name in self._where(evaluator.model, who)]
        center = flat.flatten(evaluator.model)  # (dim,)
        mask = None
        if sum(p.numel() for p in self.params) < layout.dim:
            mask = torch.zeros_like(center)  # (dim,)
            for s in slices:
                mask[s] = 1.0
        return Space(center, slices, shapes, mask)

    def objective(self, who: str) -> tuple[Loss, int]:
        """``loss(params)`` on one batch (``None``: the live parameters), and the batch's sample count.

        Raises:
            TypeError: the evaluator offers no loss (neither a model nor a vector evaluator).
        """
        evaluator = self.require_evaluator(who)
        if isinstance(evaluator, ModelEvaluator):
            by_name, samples = evaluator.objective()
            names = self._where(evaluator.model, who)
            return (lambda ps: by_name({} if ps is None else dict(zip(names, ps)))), samples
        if isinstance(evaluator, VectorEvaluator):
            of_vector, samples = evaluator.vector_objective()

            def loss(ps: Sequence[Tensor] | None) -> Tensor:
                return of_vector(torch.cat([p.reshape(-1) for p in (self.params if ps is None else ps)]))  # (dim,)

            return loss, samples
        raise TypeError(
            f"{who} needs the loss as a function of the parameters: a ModelEvaluator (VmapEvaluator, "
            f"SerialEvaluator) or a VectorEvaluator (FunctionEvaluator), got {type(evaluator).__name__}"
        )
