"""Direction sources and combinators: what the hybrid optimizer descends along.

A *direction* is gradient-like: one tensor per parameter, pointing uphill in loss, so a torch
optimizer descends along it exactly as it would along ``p.grad``. A direction source is an
optax-shaped pair, torch-native::

    state = source.init(ctx)                       # once, before the first step
    directions, state = source.update(state, ctx)  # every step: one tensor per ctx.params

``ctx`` is a :class:`Context`: the parameters the source drives, the step count, the user's
closure, the evaluator and the FE counter of one optimizer step. States are ``None``, frozen
dataclasses or dicts of them; :func:`mix` keys its members' states by the names the user gave them
(docs/design.rst, contract 5), and :func:`plain`/:func:`restore` turn states into tensors-and-numbers
dicts and back, so a checkpoint loads with ``torch.load(weights_only=True)``.

Where the loss comes from:

* :func:`backprop` and the feedback rules run the user's closure (torch's contract: it computes the
  loss and usually calls ``backward()``) or read the ``.grad`` a loop computed before ``step()``.
* :func:`improvement` and :func:`es` score a population with the evaluator,
  ``evaluator(center, seeds, mutation)``, vectorized and chunked; never the closure per member.
* :func:`forward_gradient` and :func:`spsa` need the loss as a function of the parameters: the
  evaluator's ``objective()`` (``VmapEvaluator``/``SerialEvaluator``) or a ``FunctionEvaluator``'s
  ``fn``.

The evaluator's vector. Population sources work on the flat vector of the evaluator's model
(``flat.layout_of(evaluator.model)``, parameters matched by identity), re-synced to the live
parameters every step. When a source drives only some of the model's parameters, the strategy's
mutation gets ``scale`` = its own scale times a 0/1 mask of those coordinates, so only they are
perturbed and the estimate is zero elsewhere. (A judgement call: masking keeps every evaluator
usable unchanged, at the price of drawing noise for masked coordinates, and a radial
``"loguniform"`` row loses the masked share of its norm.) An evaluator without a ``model`` (a
``FunctionEvaluator``) scores the source's own parameters, concatenated.

Cost, in forward-pass equivalents (docs/design.rst, contract 8), charged to ``ctx`` and summed by the
optimizer: a closure call is a forward and a backward pass, 3 FE per sample; a population costs
what the evaluator counts (members × samples); SPSA two forward passes, 2 FE per sample; a forward
gradient 3 FE per sample (the tangent pass of a linear layer is two products, ``Ẇx + Wẋ``, as
the backward pass is; its gain is memory, not arithmetic).

References:
    Salimans, Ho, Chen, Sidor & Sutskever (2017), Evolution strategies as a scalable alternative to
    reinforcement learning.
    Baydin, Pearlmutter, Syme, Wood & Torr (2022), Gradients without backpropagation.
    Malladi, Gao, Nichani, Damian, Lee, Chen & Arora (2023), Fine-tuning language models with just
    forward passes (MeZO).
    Lillicrap et al. (2016); Nøkland (2016); Liao, Leibo & Poggio (2016): the feedback rules.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from evograd import feedback, flat, noise

__all__ = [
    "Context",
    "Direction",
    "Transform",
    "backprop",
    "improvement",
    "es",
    "forward_gradient",
    "spsa",
    "feedback_alignment",
    "direct_feedback_alignment",
    "sign_symmetry",
    "mix",
    "chain",
    "clip_norm",
    "normalize",
    "anneal",
    "plain",
    "restore",
]

Weight = float | Callable[[int], float]
Closure = Callable[[], Any]


# ----------------------------------------------------------------------------------------------
# context


class _Run:
    """What one step shares between contexts: the closure's loss and gradient, and the FE spent."""

    def __init__(self, params: list[Tensor], closure: Closure | None, samples: int | None) -> None:
        self.params, self.closure, self.samples = params, closure, samples
        self.loss: Tensor | None = None
        self.fe = 0
        self.uncounted = 0  # closure calls whose FE could not be charged: the batch size was unknown
        self.has_gradient = False

    def charge_closure(self) -> None:
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
class _Space:
    """The evaluator's flat vector and where a source's parameters lie in it."""

    center: Tensor  # (dim,)
    slices: list[slice]
    shapes: list[torch.Size]
    mask: Tensor | None  # (dim,) 1 on the source's coordinates; None when they are the whole vector

    def split(self, vector: Tensor) -> list[Tensor]:
        """The source's parameters' parts of a (dim,) vector, shaped like them."""
        return [vector[s].view(shape) for s, shape in zip(self.slices, self.shapes)]


class Context:
    """What one optimizer step offers a direction source, for the parameters it drives.

    :class:`~evograd.HybridOptimizer` builds one per step and hands each direction its share
    (:meth:`restrict`); :func:`evograd.diagnostics.alignment` builds one to run a source alone.
    Sources read it, ask it for losses and gradients, and charge their cost to it.

    Args:
        params: the parameters (live leaf tensors).
        step: optimizer steps taken before this one; seeds of per-step noise derive from it.
        closure: torch's closure: computes the loss (and usually calls ``backward()``).
        evaluator: scores populations ``(center, seeds, mutation) -> (n,)``; see the module docstring.
        samples: samples in this step's batch, to charge closure calls (``None``: unknown).
        names: the parameters' names, for messages and per-layer diagnostics.

    Attributes:
        trace: ``None``, or a dict in which :func:`mix` stores each member's direction by name.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        *,
        step: int = 0,
        closure: Closure | None = None,
        evaluator: Any = None,
        samples: int | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self.params = list(params)
        self.names = list(names) if names is not None else [str(i) for i in range(len(self.params))]
        self.step, self.closure, self.evaluator = step, closure, evaluator
        self.trace: dict[str, list[Tensor]] | None = None
        self._run = _Run(self.params, closure, samples)

    def restrict(self, params: Sequence[Tensor], names: Sequence[str]) -> Context:
        """A context for a subset of the parameters that shares this step's closure calls and FE."""
        ctx = copy.copy(self)  # the same _Run
        ctx.params, ctx.names, ctx.trace = list(params), list(names), None
        return ctx

    @property
    def fe(self) -> int:
        """Forward-pass equivalents charged so far in this step (by every context sharing it)."""
        return self._run.fe

    def spend(self, fe: int) -> None:
        """Charge ``fe`` forward-pass equivalents to this step."""
        self._run.fe += int(fe)

    def gradient(self, who: str = "backprop()") -> list[Tensor]:
        """The true (backprop) gradient of the closure's loss, one tensor per parameter."""
        self._run.gradient(who)
        return [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]

    def feedback_gradients(self, model: nn.Module, rule: str) -> list[Tensor]:
        """Gradients of the closure's loss under a backprop-free ``rule``, one per ``model.parameters()``."""
        if self.closure is None:
            raise ValueError(f"the {rule!r} feedback rule needs optimizer.step(closure)")
        return feedback.feedback_gradients(model, lambda: self._run.call(self.closure), rule)

    def require_evaluator(self, who: str) -> Any:
        """The evaluator; a ValueError if there is none or its model lacks one of the parameters."""
        if self.evaluator is None:
            raise ValueError(f"{who} needs an evaluator: HybridOptimizer(..., evaluator=VmapEvaluator(model, loss_fn))")
        if getattr(self.evaluator, "model", None) is not None:
            self._where(self.evaluator.model, who)
        return self.evaluator

    def evaluate(self, center: Tensor, seeds: Tensor, mutation: noise.Mutation, who: str) -> Tensor:
        """Population fitness from the evaluator, its forward passes charged to this step."""
        evaluator = self.require_evaluator(who)
        before = getattr(evaluator, "forward_passes", None)
        fitness = evaluator(center, seeds, mutation)  # (n,)
        self.spend(len(seeds) if before is None else evaluator.forward_passes - before)
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

    def space(self, who: str) -> _Space:
        """The evaluator's flat vector now, and where this context's parameters lie in it."""
        model = getattr(self.require_evaluator(who), "model", None)
        shapes = [p.shape for p in self.params]
        if model is None:  # a function of flat vectors: the vector is these parameters
            center = torch.cat([p.detach().reshape(-1) for p in self.params])  # (dim,)
            ends = itertools.accumulate(p.numel() for p in self.params)
            return _Space(center, [slice(e - p.numel(), e) for p, e in zip(self.params, ends)], shapes, None)
        layout = flat.layout_of(model)
        slices = [layout.slices[name] for name in self._where(model, who)]
        center = flat.flatten(model)  # (dim,)
        mask = None
        if sum(p.numel() for p in self.params) < layout.dim:
            mask = torch.zeros_like(center)  # (dim,)
            for s in slices:
                mask[s] = 1.0
        return _Space(center, slices, shapes, mask)

    def objective(self, who: str) -> tuple[Callable[[Sequence[Tensor] | None], Tensor], int]:
        """``loss(params)`` on one batch (``None``: the live parameters), and the batch's sample count."""
        evaluator = self.require_evaluator(who)
        if hasattr(evaluator, "objective"):
            loss, samples = evaluator.objective()
            names = self._where(evaluator.model, who)
            return (lambda ps: loss({} if ps is None else dict(zip(names, ps)))), samples
        if hasattr(evaluator, "fn"):  # FunctionEvaluator: fn((c, dim)) -> (c,)

            def loss(ps: Sequence[Tensor] | None) -> Tensor:
                vector = torch.cat([p.reshape(-1) for p in (self.params if ps is None else ps)])  # (dim,)
                return evaluator.fn(vector[None])[0]

            return loss, 1
        raise TypeError(
            f"{who} needs the loss as a function of the parameters: an evaluator with objective() "
            f"(VmapEvaluator, SerialEvaluator) or a FunctionEvaluator, got {type(evaluator).__name__}"
        )


# ----------------------------------------------------------------------------------------------
# sources


class Direction:
    """A direction source: ``init(ctx) -> state`` and ``update(state, ctx) -> (directions, state)``.

    Subclass it for a source of your own: ``update`` returns one gradient-like tensor per
    ``ctx.params`` (uphill in loss; the optimizer descends along it) and must not modify the
    parameters (or restore them, as :func:`spsa` does).
    """

    name = "direction"

    def init(self, ctx: Context) -> Any:
        """The first state; ``None`` for a stateless source."""
        return None

    def update(self, state: Any, ctx: Context) -> tuple[list[Tensor], Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.name}()"


class _Backprop(Direction):
    name = "backprop"

    def update(self, state: None, ctx: Context) -> tuple[list[Tensor], None]:
        return ctx.gradient(), state


def backprop() -> Direction:
    """The autograd gradient of the closure's loss (or the ``.grad`` computed before ``step()``).

    The closure runs inside ``feedback.mode("bp")``, so the gradient is the true one even when the
    model's layers were converted to a backprop-free rule.

    Examples:
        >>> import torch
        >>> from evograd import HybridOptimizer, directions
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = HybridOptimizer([w], directions.backprop(), lr=0.5)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = (w ** 2).sum()
        ...     loss.backward()
        ...     return loss
        >>> opt.step(closure).item(), w.tolist()
        (5.0, [0.0, 0.0])
    """
    return _Backprop()


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed!r} is out of range; allowed integers in [0, 2**63)")
    return seed


class _Population(Direction):
    """Ask → evaluate → tell of an ask/tell strategy at the live parameters; reads a field of its state."""

    def __init__(self, name: str, strategy: Any, seed: int, field: str, sign: float) -> None:
        if not all(callable(getattr(strategy, m, None)) for m in ("init", "ask", "tell")):
            raise TypeError(f"{name}() needs an ask/tell strategy (init, ask, tell), got {type(strategy).__name__}")
        self.name, self.strategy, self.seed = name, strategy, _check_seed(seed)
        self.field, self.sign = field, sign

    def __repr__(self) -> str:
        return f"{self.name}({type(self.strategy).__name__}, seed={self.seed})"

    def init(self, ctx: Context) -> Any:
        space = ctx.space(f"{self.name}()")
        state = self.strategy.init(space.center, seed=self.seed)
        if not hasattr(state, self.field):
            raise TypeError(
                f"{self.name}() needs a strategy whose state has {self.field!r}; "
                f"{type(self.strategy).__name__} has none"
            )
        if space.mask is not None:  # perturb only this source's coordinates
            scale = space.mask if state.mutation.scale is None else state.mutation.scale * space.mask
            state = dataclasses.replace(state, mutation=state.mutation.replace(scale=scale))
        return state

    def update(self, state: Any, ctx: Context) -> tuple[list[Tensor], Any]:
        who = f"{self.name}()"
        space = ctx.space(who)
        state = dataclasses.replace(state, center=space.center)  # the base optimizer moved the parameters
        seeds = self.strategy.ask(state)
        fitness = ctx.evaluate(state.center, seeds, state.mutation, who)  # (n,)
        state, _ = self.strategy.tell(state, seeds, fitness)
        return space.split(self.sign * getattr(state, self.field)), state  # a new tensor, never the state's


def improvement(strategy: Any, *, seed: int) -> Direction:
    """The rolling-improvement estimate of a strategy, negated into a gradient-like direction.

    Every step runs one generation, ask → evaluator → tell, of ``strategy`` (a
    :class:`~evograd.RollingImprovement`, or any ask/tell strategy whose state has an ``estimate``
    pointing downhill) at the live parameters on the evaluator's current batch. The strategy's
    center is re-synced to the parameters each step (the base optimizer moves them; the strategy's
    own step is ignored); the estimate persists from step to step.

    Args:
        strategy: the ask/tell strategy.
        seed: the strategy's seed (contract 2); 0 is valid.

    Examples:
        >>> import torch
        >>> from evograd import FunctionEvaluator, HybridOptimizer, Mutation, RollingImprovement, directions
        >>> x = torch.nn.Parameter(torch.ones(20))
        >>> strategy = RollingImprovement(size=16, mutation=Mutation(sigma=0.01, antithetic=True))
        >>> unit_steps = directions.chain(directions.improvement(strategy, seed=0), directions.normalize())
        >>> opt = HybridOptimizer([x], unit_steps, evaluator=FunctionEvaluator(lambda v: (v ** 2).sum(1)), lr=0.05)
        >>> for _ in range(200):
        ...     opt.step()
        >>> bool((x ** 2).sum() < 0.1), opt.fe  # from 20.0; 17 members (parent + 16) per step
        (True, 3400)

    References:
        Salimans et al. (2017) for the signed estimate; :class:`~evograd.RollingImprovement` for the improving-only one.
    """
    return _Population("improvement", strategy, seed, "estimate", -1.0)


def es(strategy: Any, *, seed: int) -> Direction:
    """The OpenES gradient estimate ``g = Σ rᵢ εᵢ / (n σ²)`` of an :class:`~evograd.OpenES` strategy.

    Like :func:`improvement`, one generation per step at the live parameters; the estimate (state
    field ``gradient``) already points uphill. The strategy's own optimizer step is ignored.

    Examples:
        >>> import torch
        >>> from evograd import FunctionEvaluator, HybridOptimizer, Mutation, OpenES, directions
        >>> x = torch.nn.Parameter(torch.ones(10))
        >>> strategy = OpenES(size=32, mutation=Mutation(sigma=0.1, antithetic=True))
        >>> opt = HybridOptimizer([x], directions.es(strategy, seed=0), base=torch.optim.Adam,
        ...                       evaluator=FunctionEvaluator(lambda v: (v ** 2).sum(1)), lr=0.1)
        >>> for _ in range(100):
        ...     opt.step()
        >>> bool((x ** 2).sum() < 0.1)
        True

    References:
        Salimans, Ho, Chen, Sidor & Sutskever (2017).
    """
    return _Population("es", strategy, seed, "gradient", 1.0)


def _normals(params: Sequence[Tensor], key: int) -> Iterator[Tensor]:
    """One standard normal tensor per parameter, drawn in order from a generator seeded with ``key``."""
    gen = torch.Generator(device=params[0].device).manual_seed(key)
    for p in params:
        yield torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)


class _Probe(Direction):
    """A stateless source probing the evaluator's loss along fresh noise each step."""

    def __init__(self, seed: int) -> None:
        self.seed = _check_seed(seed)

    def __repr__(self) -> str:
        return f"{self.name}(seed={self.seed})"

    def init(self, ctx: Context) -> None:
        ctx.require_evaluator(f"{self.name}()")

    def key(self, ctx: Context) -> int:
        """The noise key of this step, hashed from ``(seed, step)`` like a strategy's member seeds."""
        return int(noise.member_seeds(self.seed, ctx.step, 1)[0])


class _ForwardGradient(_Probe):
    name = "forward_gradient"

    def update(self, state: None, ctx: Context) -> tuple[list[Tensor], None]:
        loss, samples = ctx.objective("forward_gradient()")
        tangents = tuple(_normals(ctx.params, self.key(ctx)))  # v ~ N(0, I)
        primals = tuple(p.detach() for p in ctx.params)
        _, slope = torch.func.jvp(lambda *ps: loss(ps), primals, tangents)  # ∇L·v, no backward pass
        ctx.spend(3 * samples)
        return [slope * v for v in tangents], state


def forward_gradient(*, seed: int) -> Direction:
    """The forward gradient ``(∇L·v) v``, ``v ~ N(0, I)``: unbiased, by forward-mode AD alone.

    ``∇L·v`` is one Jacobian-vector product (``torch.func.jvp``) of the evaluator's loss on the
    current batch; no backward pass, no stored activations. ``E[(∇L·v) v] = ∇L`` because
    ``E[v vᵀ] = I``. ``v`` is drawn per step from ``(seed, step)`` with a local generator.

    Examples:
        >>> import torch
        >>> from evograd import FunctionEvaluator, HybridOptimizer, directions
        >>> x = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        >>> opt = HybridOptimizer([x], directions.forward_gradient(seed=0), lr=0.0,
        ...                       evaluator=FunctionEvaluator(lambda v: (v ** 2).sum(1)))
        >>> opt.step()
        >>> bool(torch.dot(x.grad, 2 * x) >= 0), opt.fe  # (∇L·v)² >= 0: never against the gradient
        (True, 3)

    References:
        Baydin, Pearlmutter, Syme, Wood & Torr (2022), Gradients without backpropagation.
    """
    return _ForwardGradient(seed)


class _SPSA(_Probe):
    name = "spsa"

    def __init__(self, seed: int, eps: float) -> None:
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps={eps!r} is out of range; allowed (0, inf)")
        super().__init__(seed)
        self.eps = eps

    def __repr__(self) -> str:
        return f"spsa(seed={self.seed}, eps={self.eps})"

    @staticmethod
    def _shift(params: Sequence[Tensor], key: int, scale: float) -> None:
        """``θ += scale·z`` in place, regenerating z tensor by tensor: memory of one parameter tensor."""
        for p, z in zip(params, _normals(params, key)):
            p.add_(z, alpha=scale)

    def update(self, state: None, ctx: Context) -> tuple[list[Tensor], None]:
        loss, samples = ctx.objective("spsa()")
        key = self.key(ctx)
        with torch.no_grad():
            self._shift(ctx.params, key, self.eps)  # θ + εz
            plus = loss(None)
            self._shift(ctx.params, key, -2.0 * self.eps)  # θ − εz
            minus = loss(None)
            self._shift(ctx.params, key, self.eps)  # θ again, up to rounding in the last bit (as in MeZO)
        slope = (plus - minus) / (2.0 * self.eps)  # ≈ ∇L·z
        ctx.spend(2 * samples)
        return [slope * z for z in _normals(ctx.params, key)], state


def spsa(*, seed: int, eps: float = 1e-3) -> Direction:
    """The two-point zeroth-order estimate ``(L(θ+εz) − L(θ−εz)) / 2ε · z``, ``z ~ N(0, I)``.

    The parameters are perturbed in place and restored, and ``z`` is regenerated from its seed
    tensor by tensor instead of stored, so the memory is that of inference with one model (MeZO).
    The loss is the evaluator's on the current batch, the same batch for both points. Unbiased for
    quadratics (the central difference is exact there) and to ``O(ε²)`` otherwise.

    Args:
        seed: the noise seed; ``z`` of step t derives from ``(seed, t)``.
        eps: the perturbation scale ε > 0.

    Examples:
        >>> import torch
        >>> from evograd import FunctionEvaluator, HybridOptimizer, directions
        >>> x = torch.nn.Parameter(torch.ones(10, dtype=torch.float64))
        >>> opt = HybridOptimizer([x], directions.spsa(seed=0), lr=0.02,
        ...                       evaluator=FunctionEvaluator(lambda v: (v ** 2).sum(1)))
        >>> for _ in range(300):
        ...     opt.step()
        >>> bool((x ** 2).sum() < 0.1), opt.fe  # 2 FE per step
        (True, 600)

    References:
        Spall (1992); Malladi, Gao, Nichani, Damian, Lee, Chen & Arora (2023), MeZO.
    """
    return _SPSA(seed, eps)


class _Feedback(Direction):
    """The gradient of the closure's loss under a backprop-free rule of :mod:`evograd.feedback`."""

    def __init__(self, name: str, model: nn.Module, rule: str) -> None:
        with feedback.mode(rule, model):  # raises unless ``model`` was converted for ``rule``
            pass
        self.name, self.model, self.rule = name, model, rule

    def __repr__(self) -> str:
        return f"{self.name}({type(self.model).__name__})"

    def init(self, ctx: Context) -> None:
        owned = {id(p) for p in self.model.parameters()}
        for p, name in zip(ctx.params, ctx.names):
            if id(p) not in owned:
                raise ValueError(f"{self.name}(): parameter {name!r} is not a parameter of the converted model")

    def update(self, state: None, ctx: Context) -> tuple[list[Tensor], None]:
        ran = []
        handle = self.model.register_forward_hook(lambda *_: ran.append(True))
        try:
            grads = ctx.feedback_gradients(self.model, self.rule)  # one per model.parameters()
        finally:
            handle.remove()
        if not ran:
            raise ValueError(
                f"{self.name}(): the closure never called the converted model; compute the loss with "
                "the model returned by feedback.convert(), so its layers can apply the rule"
            )
        index = {id(p): i for i, p in enumerate(self.model.parameters())}
        return [grads[index[id(p)]] for p in ctx.params], state


def feedback_alignment(model: nn.Module) -> Direction:
    """Feedback alignment: the error reaches each layer through fixed random matrices.

    Args:
        model: the model returned by ``feedback.convert(model, mode="fa")``. The closure must
            compute the loss with it (it shares the original's parameters and forward pass).

    Examples:
        >>> import torch
        >>> from evograd import HybridOptimizer, directions, feedback
        >>> net = feedback.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
        ...                                            torch.nn.Linear(4, 1)), mode="fa", seed=0)
        >>> opt = HybridOptimizer(net.parameters(), directions.feedback_alignment(net), lr=0.1)
        >>> x, y = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(8, 1)
        >>> loss = opt.step(lambda: torch.nn.functional.mse_loss(net(x), y))
        >>> loss.ndim
        0

    References:
        Lillicrap, Cownden, Tweed & Akerman (2016).
    """
    return _Feedback("feedback_alignment", model, "fa")


def direct_feedback_alignment(model: nn.Module) -> Direction:
    """Direct feedback alignment: each layer gets the output error through its own random matrix.

    Args:
        model: the model returned by ``feedback.convert(model, mode="dfa")``, used by the closure.

    References:
        Nøkland (2016).
    """
    return _Feedback("direct_feedback_alignment", model, "dfa")


def sign_symmetry(model: nn.Module) -> Direction:
    """Sign symmetry: the error goes down through ``sign(W)`` scaled to ``W``'s norm.

    Args:
        model: a model returned by ``feedback.convert`` (any mode), used by the closure.

    References:
        Liao, Leibo & Poggio (2016).
    """
    return _Feedback("sign_symmetry", model, "sign")


# ----------------------------------------------------------------------------------------------
# combinators


def _check_direction(value: Any, where: str) -> Direction:
    if not isinstance(value, Direction):
        raise TypeError(
            f"{where} must be a direction source (evograd.directions.backprop(), improvement(...), "
            f"mix(...), ...), got {value!r}"
        )
    return value


class _Mix(Direction):
    name = "mix"

    def __init__(self, members: dict[str, tuple[Weight, Direction]]) -> None:
        if not members:
            raise ValueError("mix() needs at least one source: mix(name=(weight, source), ...)")
        for name, member in members.items():
            if not (isinstance(member, tuple) and len(member) == 2):
                raise TypeError(f"mix({name}=...) must be a (weight, source) pair, got {member!r}")
            weight, source = member
            _check_direction(source, f"the source of mix({name}=...)")
            if not (callable(weight) or isinstance(weight, (int, float))) or isinstance(weight, bool):
                raise TypeError(
                    f"the weight of mix({name}=...) must be a float or a function of the step, got {weight!r}"
                )
        self.members = members

    def __repr__(self) -> str:
        return "mix(" + ", ".join(f"{name}=({w!r}, {s!r})" for name, (w, s) in self.members.items()) + ")"

    def weights(self, step: int) -> dict[str, float]:
        """Every member's weight at ``step``; raises unless they are finite with a positive sum."""
        weights = {name: float(w(step) if callable(w) else w) for name, (w, _) in self.members.items()}
        if not all(math.isfinite(w) for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"mix weights at step {step} are {weights}; they must be finite with a positive sum")
        return weights

    def init(self, ctx: Context) -> dict[str, Any]:
        self.weights(ctx.step)
        return {name: source.init(ctx) for name, (_, source) in self.members.items()}

    def update(self, state: dict[str, Any], ctx: Context) -> tuple[list[Tensor], dict[str, Any]]:
        weights = self.weights(ctx.step)
        total = [torch.zeros_like(p) for p in ctx.params]
        state = dict(state)
        for name, (_, source) in self.members.items():
            if weights[name] == 0:  # an annealed-out source costs nothing and keeps its state
                continue
            directions, state[name] = source.update(state[name], ctx)
            if ctx.trace is not None:
                ctx.trace[name] = directions
            for t, d in zip(total, directions):
                t.add_(d, alpha=weights[name])
        return total, state


def mix(**members: tuple[Weight, Direction]) -> Direction:
    """The weighted sum of named sources: ``mix(bp=(0.7, backprop()), evo=(0.3, improvement(...)))``.

    A weight is a float or a function of the step count (see :func:`anneal`); at every step the
    weights must be finite with a positive sum. A source whose weight is 0 at a step is not run
    (it costs nothing and its state waits). States are keyed by the names given here. Weights are
    not normalized: sources of different scales are best put on one footing with
    :func:`normalize` first.

    Examples:
        >>> from evograd import directions
        >>> directions.mix(bp=(0.5, directions.backprop()), fg=(0.5, directions.forward_gradient(seed=0)))
        mix(bp=(0.5, backprop()), fg=(0.5, forward_gradient(seed=0)))
        >>> directions.mix(bp=(-1.0, directions.backprop())).weights(0)
        Traceback (most recent call last):
        ...
        ValueError: mix weights at step 0 are {'bp': -1.0}; they must be finite with a positive sum
    """
    return _Mix(members)


class Transform:
    """A stateless map of directions to directions, applied after a source by :func:`chain`."""

    def __call__(self, directions: list[Tensor]) -> list[Tensor]:
        raise NotImplementedError

    @staticmethod
    def norms(directions: list[Tensor], per_tensor: bool) -> list[Tensor]:
        """The norm each tensor is measured by: its own, or the global norm of all of them."""
        own = [torch.linalg.vector_norm(d) for d in directions]
        return own if per_tensor else [torch.linalg.vector_norm(torch.stack(own))] * len(directions)


class _Chain(Direction):
    name = "chain"

    def __init__(self, source: Direction, transforms: tuple[Transform, ...]) -> None:
        self.source = _check_direction(source, "the first argument of chain()")
        for t in transforms:
            if not isinstance(t, Transform):
                raise TypeError(f"chain(source, *transforms): {t!r} is not a transform (clip_norm(...), normalize())")
        self.transforms = transforms

    def __repr__(self) -> str:
        return f"chain({', '.join(map(repr, (self.source, *self.transforms)))})"

    def init(self, ctx: Context) -> Any:
        return self.source.init(ctx)

    def update(self, state: Any, ctx: Context) -> tuple[list[Tensor], Any]:
        directions, state = self.source.update(state, ctx)
        for transform in self.transforms:
            directions = transform(directions)
        return directions, state


def chain(source: Direction, *transforms: Transform) -> Direction:
    """A source followed by transforms, applied in order; the state is the source's.

    Examples:
        >>> from evograd import directions
        >>> directions.chain(directions.backprop(), directions.clip_norm(1.0), directions.normalize())
        chain(backprop(), clip_norm(1.0, per_tensor=False), normalize(per_tensor=False))
    """
    return _Chain(source, transforms)


class _ClipNorm(Transform):
    def __init__(self, max_norm: float, per_tensor: bool) -> None:
        if not (math.isfinite(max_norm) and max_norm > 0):
            raise ValueError(f"max_norm={max_norm!r} is out of range; allowed (0, inf)")
        self.max_norm, self.per_tensor = max_norm, per_tensor

    def __repr__(self) -> str:
        return f"clip_norm({self.max_norm}, per_tensor={self.per_tensor})"

    def __call__(self, directions: list[Tensor]) -> list[Tensor]:
        norms = self.norms(directions, self.per_tensor)
        return [d * (self.max_norm / n).clamp(max=1.0) for d, n in zip(directions, norms)]


def clip_norm(max_norm: float, *, per_tensor: bool = False) -> Transform:
    """Scale directions down to norm at most ``max_norm`` (globally, or each tensor on its own).

    Examples:
        >>> import torch
        >>> from evograd import directions
        >>> directions.clip_norm(1.0)([torch.tensor([3.0]), torch.tensor([4.0])])
        [tensor([0.6000]), tensor([0.8000])]
    """
    return _ClipNorm(max_norm, per_tensor)


class _Normalize(Transform):
    def __init__(self, per_tensor: bool) -> None:
        self.per_tensor = per_tensor

    def __repr__(self) -> str:
        return f"normalize(per_tensor={self.per_tensor})"

    def __call__(self, directions: list[Tensor]) -> list[Tensor]:
        norms = self.norms(directions, self.per_tensor)
        return [d / n.clamp_min(torch.finfo(d.dtype).tiny) for d, n in zip(directions, norms)]


def normalize(*, per_tensor: bool = False) -> Transform:
    """Scale directions to unit norm (globally, or each tensor on its own); zero stays zero.

    Examples:
        >>> import torch
        >>> from evograd import directions
        >>> directions.normalize(per_tensor=True)([torch.tensor([3.0, 4.0]), torch.zeros(2)])
        [tensor([0.6000, 0.8000]), tensor([0., 0.])]
    """
    return _Normalize(per_tensor)


def anneal(start: float, end: float, steps: int) -> Callable[[int], float]:
    """A mix weight going linearly from ``start`` to ``end`` over ``steps`` steps, then staying at ``end``.

    Examples:
        >>> from evograd import directions
        >>> evo_to_bp = directions.mix(evo=(directions.anneal(1.0, 0.0, 100), directions.spsa(seed=0)),
        ...                            bp=(directions.anneal(0.0, 1.0, 100), directions.backprop()))
        >>> evo_to_bp.weights(25), evo_to_bp.weights(500)
        ({'evo': 0.75, 'bp': 0.25}, {'evo': 0.0, 'bp': 1.0})
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} is out of range; allowed integers >= 1")

    def weight(step: int) -> float:
        return start + (end - start) * min(step, steps) / steps

    return weight


# ----------------------------------------------------------------------------------------------
# states as plain data


def plain(state: Any) -> Any:
    """A state as dicts, lists, tensors and numbers (dataclasses become dicts of their fields).

    Examples:
        >>> from evograd import Mutation
        >>> plain({"evo": Mutation(sigma=0.5)})["evo"]["sigma"]
        0.5
    """
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return {f.name: plain(getattr(state, f.name)) for f in dataclasses.fields(state)}
    if isinstance(state, dict):
        return {key: plain(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(plain(value) for value in state)
    return state


def restore(template: Any, saved: Any) -> Any:
    """The inverse of :func:`plain`, guided by a fresh state of the same source (``template``).

    Dataclasses are rebuilt field by field (and validated again); a dict of named states must have
    exactly the template's names, so a state saved from another mix is refused, not misassigned.
    """
    if dataclasses.is_dataclass(template) and isinstance(saved, dict):
        return dataclasses.replace(template, **{k: restore(getattr(template, k), v) for k, v in saved.items()})
    if isinstance(template, dict) and isinstance(saved, dict):
        if set(saved) != set(template):
            raise ValueError(
                f"unknown source name(s) {sorted(set(saved) - set(template))} or missing "
                f"{sorted(set(template) - set(saved))} in the saved state; this direction has "
                f"{sorted(template)}"
            )
        return {key: restore(template[key], value) for key, value in saved.items()}
    return saved
