"""HybridOptimizer: a torch optimizer whose update direction mixes evolution, backprop and more.

The user keeps their model, data loader and training loop, and swaps the optimizer::

    evaluator = evograd.VmapEvaluator(model, F.cross_entropy)
    direction = directions.mix(bp=(0.5, directions.chain(directions.backprop(), directions.normalize())),
                               evo=(0.5, directions.chain(directions.improvement(strategy, seed=0),
                                                          directions.normalize())))
    optimizer = evograd.HybridOptimizer(model.parameters(), direction, base=torch.optim.Adam,
                                        evaluator=evaluator, lr=1e-3)
    for x, y in loader:
        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss
        optimizer.step(closure, batch=(x, y))

Each step computes every direction source's update, writes the mixed direction into ``p.grad`` and
calls the base torch optimizer, whose ``param_groups`` and ``state`` it shares by reference: LR
schedulers, momentum and weight decay behave as with the base alone (docs/design.rst, contract 5).

**The evaluator** is used through its declared protocols (:mod:`evograd.protocols`, docs/design.rst,
contract 9): any :class:`~evograd.protocols.Evaluator` scores populations; a
:class:`~evograd.protocols.ModelEvaluator` (``VmapEvaluator``, ``SerialEvaluator``) also names the
model, takes the batch and gives the loss to SPSA and forward gradients; a
:class:`~evograd.protocols.VectorEvaluator` (``FunctionEvaluator``) gives the loss of a flat vector.
Wrapped in :class:`~evograd.MPIEvaluator` it keeps these capabilities, so every direction source runs
over MPI, bit-identical to one process (see :mod:`evograd.mpi` and ``mpi/hybrid.py``).

**How the batch reaches the evaluator.** ``step(closure, batch=(inputs, targets))`` hands the
batch to the model evaluator's ``set_batch`` before any source runs, so the population, SPSA and
forward gradients are scored on the data the closure uses; the batch also tells the optimizer how
many samples a closure call costs. Without ``batch=``, the evaluator scores whatever it holds (a
fixed batch, or a callable drawing minibatches).

**Per-group directions.** A param group may carry its own ``direction``; groups without one use
the constructor's. Groups sharing one direction object share one update (one population over all
their parameters); a source that drives only some of the evaluator's parameters perturbs only those
(a 0/1 mask on its mutation, see :mod:`evograd.directions`).

**The closure** follows torch's contract. It is called once per step (inside ``feedback.mode("bp")``)
when a source needs the gradient (after ``.grad`` is cleared, and ``backward()`` is called for it
if it only returns the loss), once more per feedback rule, and otherwise once at the end, so
``step(closure)`` always returns its loss. Gradient-free directions need no closure:
``step(batch=...)`` returns ``None``. Without a closure, :func:`~evograd.directions.backprop`
reads the ``.grad`` the loop computed before ``step()``.

**Cost.** ``optimizer.fe`` accumulates the forward-pass equivalents spent (contract 8; see
:mod:`evograd.directions` for what each source costs): ``fe`` is the name of cost wherever a user
reads it (an evaluator's ``fe``, by the same name, is what its populations add to it). Over MPI it is
the algorithmic cost, counted once and the same on every rank: a population's forward passes
summed over the ranks that share it, a closure call or an SPSA probe that every rank repeats
charged once.

**torch.optim parity.** ``step(closure, *, batch=None)`` takes one keyword torch's optimizers do
not, ``batch``; everything else is torch's contract. :meth:`add_param_group` works as torch's does
(a group may bring its own ``direction``; a direction object that gains groups restarts its state
on the enlarged set of parameters). Parameters that do not require grad are skipped, as torch's
optimizers skip them: no direction is computed for them and neither they nor the base optimizer's
state for them change (checked every step, so freezing or unfreezing a layer takes effect at the
next step; a source whose parameters change restarts its state). Bases that take more than one
gradient per step are refused at construction (:data:`UNSUPPORTED_BASES`).

**Non-finite directions.** A step whose direction holds a NaN or an infinity anywhere (a NaN
loss under backprop, an overflowing SPSA probe, ...) is skipped as ``torch.cuda.amp.GradScaler``
skips one: the base optimizer does not step, so the parameters and its state (momentum, Adam
moments) stay as they were, the sources' states are not advanced, and
``optimizer.skipped_steps`` counts it. The step still counts in ``step_count`` (per-step noise moves
on) and its cost in ``fe``.

References:
    Salimans et al. (2017); Baydin et al. (2022); Malladi et al. (2023): see :mod:`evograd.directions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from evograd import checkpoint, context, diagnostics, directions
from evograd.context import Context
from evograd.directions import Direction
from evograd.protocols import Evaluator, ModelEvaluator

#: A unit's state key: the groups it drives and the ids of their trainable parameters.
_Key = tuple[tuple[int, ...], tuple[int, ...]]

__all__ = ["HybridOptimizer", "UNSUPPORTED_BASES"]

#: Base optimizers a direction cannot drive: LBFGS re-evaluates the closure many times per step (a
#: line search over one gradient), and SparseAdam takes sparse gradients only.
UNSUPPORTED_BASES: tuple[type[torch.optim.Optimizer], ...] = (torch.optim.LBFGS, torch.optim.SparseAdam)


def _samples(batch: Any) -> int | None:
    """Samples in a batch ``(inputs, targets, ...)`` or a tensor of inputs; ``None`` if not a batch."""
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return len(batch[0])
    return len(batch) if isinstance(batch, Tensor) else None


class HybridOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that descends along a mix of direction sources.

    Args:
        params: parameters or param groups, as for any torch optimizer; a group may carry a
            ``direction`` of its own (e.g. the bottom layers ``improvement(...)``, the top
            ``backprop()``).
        direction: the direction of groups that name none (see :mod:`evograd.directions`).
        base: the torch optimizer class that takes the step from ``p.grad``: SGD, Adam, AdamW,
            RMSprop, Adagrad, ... (any ``torch.optim.Optimizer`` except :data:`UNSUPPORTED_BASES`).
        evaluator: scores populations and provides the loss function for evolution, forward
            gradient and SPSA sources, e.g. ``VmapEvaluator(model, loss_fn)``.
        log_alignment_every: if k > 0, every k steps the cosine between each unit's direction
            (and each named member of a mix) and the true gradient is appended to
            ``alignment_history`` (needs ``step(closure)``, whose call is charged as usual).
        **base_kw: keyword arguments of ``base`` (``lr``, ``momentum``, ``weight_decay``, ...).

    Attributes:
        base: the base optimizer instance.
        fe: forward-pass equivalents spent so far (docs/design.rst, contract 8).
        skipped_steps: steps skipped because their direction was not finite (parameters and the
            base optimizer's state left untouched).
        uncounted_calls: closure calls left out of ``fe`` because the batch size was unknown (pass
            ``step(closure, batch=...)`` to count them).
        step_count: steps taken.
        alignment_history: dicts ``{"step", "source", "overall", "layers"}``.

    Raises:
        TypeError: a direction is not a direction source, or ``base`` is not an optimizer class.
        ValueError: ``base`` is one of :data:`UNSUPPORTED_BASES`, a source needs an evaluator and
            none was given (and other bad input, named).

    Examples:
        >>> import torch
        >>> from evograd import HybridOptimizer, directions
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> opt = HybridOptimizer([{"params": model[0].parameters(), "direction": directions.spsa(seed=0)},
        ...                        {"params": model[2].parameters()}], directions.backprop(), lr=0.1)
        Traceback (most recent call last):
        ...
        ValueError: spsa() needs an evaluator: HybridOptimizer(..., evaluator=VmapEvaluator(model, loss_fn))
    """

    def __init__(
        self,
        params: Iterable[Any],
        direction: Direction,
        *,
        base: type[torch.optim.Optimizer] = torch.optim.SGD,
        evaluator: Evaluator | None = None,
        log_alignment_every: int = 0,
        **base_kw: Any,
    ) -> None:
        directions.check_direction(direction, "direction")
        if evaluator is not None and not isinstance(evaluator, Evaluator):
            raise TypeError(
                f"evaluator must be an evograd.Evaluator (VmapEvaluator(model, loss_fn), FunctionEvaluator(fn), "
                f"MPIEvaluator(...), ...), got {type(evaluator).__name__}"
            )
        if not (isinstance(base, type) and issubclass(base, torch.optim.Optimizer)):
            raise TypeError(f"base must be a torch.optim.Optimizer class, got {base!r}")
        if issubclass(base, UNSUPPORTED_BASES):
            needs = "the closure many times per step" if issubclass(base, torch.optim.LBFGS) else "sparse gradients"
            raise ValueError(
                f"base={base.__name__} is not supported: it needs {needs}; use a base that steps once from "
                "p.grad: SGD, Adam, AdamW, RMSprop, Adagrad, NAdam, RAdam, ... (any torch.optim.Optimizer except "
                "LBFGS and SparseAdam)"
            )
        if isinstance(log_alignment_every, bool) or not isinstance(log_alignment_every, int) or log_alignment_every < 0:
            raise ValueError(f"log_alignment_every={log_alignment_every!r} is out of range; allowed integers >= 0")
        super().__init__(params, {"direction": direction})
        self.base = base(self.param_groups, **base_kw)  # fills the same group dicts with its defaults
        self._share()
        self.defaults = {**self.base.defaults, "direction": direction}
        self.evaluator, self.log_alignment_every = evaluator, log_alignment_every
        self.fe, self.step_count, self.uncounted_calls, self.skipped_steps = 0, 0, 0, 0
        self.alignment_history: list[dict[str, Any]] = []
        self._states: dict[_Key, Any] = {}
        for unit, groups in self._units():
            self._state(unit, groups)  # fail now, not at the first step, if a source lacks what it needs

    def _share(self) -> None:
        """One list of groups and one state for both optimizers (the base replaces them on load)."""
        self.param_groups, self.state = self.base.param_groups, self.base.state

    def _units(self) -> list[tuple[Direction, tuple[int, ...]]]:
        """Each distinct direction object and the indices of the groups it drives (with a trainable parameter)."""
        units: dict[int, tuple[Direction, list[int]]] = {}
        for i, group in enumerate(self.param_groups):
            directions.check_direction(group["direction"], f"param group {i}'s 'direction'")
            units.setdefault(id(group["direction"]), (group["direction"], []))[1].append(i)
        return [(unit, tuple(groups)) for unit, groups in units.values() if self._trainable(tuple(groups))[0]]

    def _trainable(self, groups: tuple[int, ...]) -> tuple[list[Tensor], list[str]]:
        """The parameters of ``groups`` that require grad, and their names; torch's optimizers skip the others."""
        found = [
            (p, name)
            for i in groups
            for p, name in zip(self.param_groups[i]["params"], self._names(i))
            if p.requires_grad
        ]
        return [p for p, _ in found], [name for _, name in found]

    def _names(self, i: int) -> list[str]:
        """Names of group ``i``'s parameters: given with the params, else the evaluator model's, else ``i.j``."""
        group = self.param_groups[i]
        if "param_names" in group:
            return list(group["param_names"])
        model = self.evaluator.model if isinstance(self.evaluator, ModelEvaluator) else None
        known = {} if model is None else {id(p): n for n, p in model.named_parameters()}
        return [known.get(id(p), f"{i}.{j}") for j, p in enumerate(group["params"])]

    def _key(self, groups: tuple[int, ...]) -> _Key:
        """What a unit's state belongs to: its groups and the trainable parameters in them now."""
        return groups, tuple(id(p) for p in self._trainable(groups)[0])

    def _state(self, unit: Direction, groups: tuple[int, ...], ctx: Context | None = None) -> Any:
        """The state of the unit driving ``groups``, initialized on first use (also for groups added
        later, and again when the trainable parameters in them changed)."""
        key = self._key(groups)
        if key not in self._states:
            self._states[key] = unit.init(ctx or self._context(groups))
        return self._states[key]

    def _context(self, groups: tuple[int, ...], root: Context | None = None) -> Context:
        params, names = self._trainable(groups)
        if root is None:
            return Context(params, step=self.step_count, evaluator=self.evaluator, names=names)
        return root.restrict(params, names)

    def step(self, closure: Callable[[], Tensor] | None = None, *, batch: Any = None) -> Tensor | None:
        """Compute every direction, write it into ``p.grad`` and take one step of the base optimizer.

        Args:
            closure: computes the loss (torch's contract); needed by backprop and feedback sources
                unless the loop called ``backward()`` before ``step()``.
            batch: ``(inputs, targets)`` of this step, handed to a model evaluator's ``set_batch``.

        ``batch`` is the one keyword torch's optimizers do not take. A step whose direction is not
        finite is skipped (see the module docstring) and counted in :attr:`skipped_steps`.

        Returns:
            The closure's loss, or ``None`` without a closure.

        Raises:
            TypeError: ``batch`` is given and the evaluator takes none (not a model evaluator).
        """
        batch = context.set_batch(self.evaluator, batch)
        log = self.log_alignment_every and self.step_count % self.log_alignment_every == 0
        if log and closure is None:
            raise ValueError("log_alignment_every needs the true gradient: call optimizer.step(closure)")
        every = [p for group in self.param_groups for p in group["params"] if p.requires_grad]
        root = Context(every, step=self.step_count, closure=closure, evaluator=self.evaluator, samples=_samples(batch))

        # --- every unit's direction
        found: list[tuple[Tensor, Tensor]] = []
        states = {}  # committed only if every unit succeeds
        for unit, groups in self._units():
            ctx = self._context(groups, root)
            ctx.trace = {} if log else None
            update, states[self._key(groups)] = unit.update(self._state(unit, groups, ctx), ctx)
            if len(update) != len(ctx.params) or any(d.shape != p.shape for d, p in zip(update, ctx.params)):
                raise ValueError(
                    f"{unit!r} returned {len(update)} directions that do not match the shapes of its "
                    f"{len(ctx.params)} parameters"
                )
            if log:
                self._log(ctx, {"direction": update, **ctx.trace})
            found.extend(zip(ctx.params, update))
        loss = root.finish()
        self.step_count += 1
        self.fe += root.fe
        self.uncounted_calls += root.uncounted
        if found and not bool(torch.stack([torch.isfinite(d).all() for _, d in found]).all()):  # one sync
            self.skipped_steps += 1  # as GradScaler: no base step, no state advanced
            return loss

        # --- base step along the directions
        self._states = states
        for p, d in found:
            p.grad = d.to(p.dtype)
        self.base.step()
        return loss

    def _log(self, ctx: Context, found: dict[str, list[Tensor]]) -> None:
        gradient = ctx.gradient("log_alignment_every")
        for source, update in found.items():
            a = diagnostics.cosines(update, gradient, ctx.names)
            self.alignment_history.append(
                {"step": self.step_count, "source": source, "overall": a.overall, "layers": a.layers}
            )

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict plus ``"hybrid"``: step count, FE, alignment history, and
        each unit's source state as plain data (:func:`evograd.checkpoint.plain`; keyed by the groups it
        drives, then by mix names), so it loads with ``torch.load(weights_only=True)``."""
        out = self.base.state_dict()
        for group in out["param_groups"]:
            del group["direction"]
        out["hybrid"] = {
            "step_count": self.step_count,
            "fe": self.fe,
            "uncounted_calls": self.uncounted_calls,
            "skipped_steps": self.skipped_steps,
            "alignment_history": [dict(entry) for entry in self.alignment_history],
            "directions": [
                {"groups": list(groups), "state": checkpoint.plain(self._state(unit, groups), root="state")}
                for unit, groups in self._units()
            ],
        }
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` (of an optimizer with the same groups and directions).

        Each source's state is rebuilt on a fresh state of the same source
        (:func:`evograd.checkpoint.restore`), so a state of another kind is refused, not misassigned.

        Raises:
            ValueError: not a HybridOptimizer state, mismatched param groups, or source states that
                do not fit this optimizer's (a :class:`~evograd.checkpoint.CheckpointError` naming
                every difference, e.g. a mix whose saved source names differ from this one's).
        """
        state_dict = dict(state_dict)
        hybrid = state_dict.pop("hybrid", None)
        if hybrid is None:
            raise ValueError("not a HybridOptimizer state_dict: it has no 'hybrid' entry")
        units = self._units()
        saved = [tuple(entry["groups"]) for entry in hybrid["directions"]]
        if saved != [groups for _, groups in units]:
            raise ValueError(
                f"mismatched param groups: the saved directions drive groups {saved}, this optimizer's "
                f"drive {[groups for _, groups in units]}"
            )
        states = {
            self._key(groups): checkpoint.restore(
                unit.init(self._context(groups)), entry["state"], root=f"groups {list(groups)}"
            )
            for (unit, groups), entry in zip(units, hybrid["directions"])
        }
        kept = [group["direction"] for group in self.param_groups]
        self.base.load_state_dict(state_dict)
        self._share()
        for group, direction in zip(self.param_groups, kept):
            group["direction"] = direction
        self._states = states
        self.step_count, self.fe, self.uncounted_calls = hybrid["step_count"], hybrid["fe"], hybrid["uncounted_calls"]
        self.skipped_steps = hybrid["skipped_steps"]
        self.alignment_history = [dict(entry) for entry in hybrid["alignment_history"]]
