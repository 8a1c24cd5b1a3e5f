"""Direction sources and combinators: what the hybrid optimizer descends along.

A *direction* is gradient-like: one tensor per parameter, pointing uphill in loss, so a torch
optimizer descends along it exactly as it would along ``p.grad``. A direction source is an
optax-shaped pair, torch-native::

    state = source.init(ctx)                       # once, before the first step
    directions, state = source.update(state, ctx)  # every step: one tensor per ctx.params

``ctx`` is a :class:`~evograd.context.Context` (:mod:`evograd.context`, re-exported here for
sources of your own): the parameters the source drives, the step count, the user's closure, the
evaluator and the FE counter of one optimizer step. States are ``None``, frozen dataclasses or
dicts of them; :func:`mix` keys its members' states by the names the user gave them
(docs/design.rst, contract 5), and :func:`evograd.checkpoint.plain` / :func:`evograd.checkpoint.restore`
turn states into tensors-and-numbers dicts and back, so a checkpoint loads with
``torch.load(weights_only=True)``.

Where the loss comes from (the evaluator is used through its protocols, :mod:`evograd.protocols`):

* :func:`backprop` and the feedback rules run the user's closure (torch's contract: it computes the
  loss and usually calls ``backward()``) or read the ``.grad`` a loop computed before ``step()``.
* :func:`improvement` and :func:`es` run a :class:`~evograd.protocols.GradientEstimator` strategy
  and score its population with the evaluator, ``evaluator(center, seeds, mutation)``, vectorized
  and chunked; never the closure per member.
* :func:`forward_gradient` and :func:`spsa` need the loss as a function of the parameters: a
  :class:`~evograd.protocols.ModelEvaluator`'s ``objective()`` (``VmapEvaluator``,
  ``SerialEvaluator``) or a :class:`~evograd.protocols.VectorEvaluator`'s ``vector_objective()``
  (``FunctionEvaluator``).

The evaluator's vector. Population sources work on the flat vector of a model evaluator's model
(``flat.layout_of(evaluator.model)``, parameters matched by identity), re-synced to the live
parameters every step. When a source drives only some of the model's parameters, the strategy's
mutation gets ``scale`` = its own scale times a 0/1 mask of those coordinates, so only they are
perturbed and the estimate is zero elsewhere. (A judgement call: masking keeps every evaluator
usable unchanged, at the price of drawing noise for masked coordinates, and a radial
``"loguniform"`` row loses the masked share of its norm.) Any other evaluator (a
``FunctionEvaluator``) scores the source's own parameters, concatenated.

Cost, in forward-pass equivalents (docs/design.rst, contract 8), charged to ``ctx`` and summed by the
optimizer: a closure call is a forward and a backward pass, 3 FE per sample; a population costs
what the evaluator counts (members × samples); SPSA two forward passes, 2 FE per sample; a forward
gradient 3 FE per sample (the tangent pass of a linear layer is two products, ``Ẇx + Wẋ``, as
the backward pass is; its gain is memory, not arithmetic).

Over MPI (``evaluator=MPIEvaluator(VmapEvaluator(...))``, every rank running the same loop on the
same batch), populations are split across the ranks by the evaluator, while the closure (backprop,
feedback rules) and the loss of :func:`spsa` and :func:`forward_gradient` are computed in full on
every rank: the same batch gives the same result on every rank with no reduction whose float
order depends on the rank count, so parameters are bit-identical to one process. FE counts the
algorithmic cost once, not once per rank: a population's forward passes are summed over the ranks
that share it, a closure call or an SPSA probe that every rank repeats is charged once.

References:
    Salimans, Ho, Chen, Sidor & Sutskever (2017), Evolution strategies as a scalable alternative to
    reinforcement learning.
    Baydin, Pearlmutter, Syme, Wood & Torr (2022), Gradients without backpropagation.
    Malladi, Gao, Nichani, Damian, Lee, Chen & Arora (2023), Fine-tuning language models with just
    forward passes (MeZO).
    Lillicrap et al. (2016); Nøkland (2016); Liao, Leibo & Poggio (2016): the feedback rules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from evograd import feedback, noise
from evograd.context import Context
from evograd.protocols import GradientEstimator

__all__ = [
    "Context",
    "Direction",
    "check_direction",
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
]

Weight = float | Callable[[int], float]


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
    """Ask → evaluate → tell of a gradient-estimating strategy at the live parameters."""

    def __init__(self, name: str, strategy: GradientEstimator, seed: int) -> None:
        if not isinstance(strategy, GradientEstimator):
            raise TypeError(
                f"{name}() needs an ask/tell strategy that estimates the gradient (init, ask, tell, "
                f"population, gradient_estimate; e.g. RollingImprovement, OpenES), got {type(strategy).__name__}"
            )
        self.name, self.strategy, self.seed = name, strategy, _check_seed(seed)

    def __repr__(self) -> str:
        return f"{self.name}({type(self.strategy).__name__}, seed={self.seed})"

    def init(self, ctx: Context) -> Any:
        space = ctx.space(f"{self.name}()")
        state = self.strategy.init(space.center, seed=self.seed)
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
        estimate = self.strategy.gradient_estimate(state)  # (dim,) uphill
        if estimate is None:  # no estimate yet: no information, no move
            estimate = torch.zeros_like(space.center)
        return space.split(estimate.clone()), state  # a new tensor, never the state's


def improvement(strategy: GradientEstimator, *, seed: int) -> Direction:
    """The rolling-improvement estimate of a strategy, negated into a gradient-like direction.

    Every step runs one generation, ask → evaluator → tell, of ``strategy`` (a
    :class:`~evograd.RollingImprovement`, or any :class:`~evograd.protocols.GradientEstimator`)
    at the live parameters on the evaluator's current batch, and returns its
    ``gradient_estimate(state)``: for rolling improvement the negated estimate. The strategy's
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
    return _Population("improvement", strategy, seed)


def es(strategy: GradientEstimator, *, seed: int) -> Direction:
    """The OpenES gradient estimate ``g = Σ rᵢ εᵢ / (n σ²)`` of an :class:`~evograd.OpenES` strategy.

    Like :func:`improvement`, one generation per step at the live parameters, along the strategy's
    ``gradient_estimate(state)`` (for OpenES its state's ``gradient``, which already points uphill).
    The strategy's own optimizer step is ignored.

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
    return _Population("es", strategy, seed)


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

    @staticmethod
    def _restore(params: Sequence[Tensor], kept: Sequence[Tensor]) -> None:
        for p, k in zip(params, kept):
            p.copy_(k)

    def update(self, state: None, ctx: Context) -> tuple[list[Tensor], None]:
        loss, samples = ctx.objective("spsa()")
        key = self.key(ctx)
        with torch.no_grad():
            kept = [p.detach().clone() for p in ctx.params]  # θ, restored by copy: exact whatever ε
            try:
                self._shift(ctx.params, key, self.eps)  # θ + εz
                plus = loss(None)
                self._restore(ctx.params, kept)
                self._shift(ctx.params, key, -self.eps)  # θ − εz
                minus = loss(None)
            finally:
                self._restore(ctx.params, kept)
        slope = (plus - minus) / (2.0 * self.eps)  # ≈ ∇L·z
        ctx.spend(2 * samples)
        return [slope * z for z in _normals(ctx.params, key)], state


def spsa(*, seed: int, eps: float = 1e-3) -> Direction:
    """The two-point zeroth-order estimate ``(L(θ+εz) − L(θ−εz)) / 2ε · z``, ``z ~ N(0, I)``.

    The parameters are perturbed in place and ``z`` is regenerated from its seed tensor by tensor
    instead of stored (MeZO); the parameters are restored by copy, not by subtracting ``εz`` again,
    so they come back bit for bit whatever ε (MeZO's subtraction drifts in the last bit, and
    destroys them when ``εz`` dwarfs them), at the memory of one more copy of the parameters.
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


def check_direction(value: Any, where: str) -> Direction:
    """``value`` if it is a direction source; else a TypeError naming ``where`` and what is allowed.

    Examples:
        >>> from evograd import directions
        >>> directions.check_direction(directions.backprop(), "direction")
        backprop()
        >>> directions.check_direction("bp", "direction")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: direction must be a direction source (...), got 'bp'
    """
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
            check_direction(source, f"the source of mix({name}=...)")
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
        self.source = check_direction(source, "the first argument of chain()")
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
