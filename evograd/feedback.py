"""Backprop-free learning rules: feedback alignment, direct feedback alignment, sign symmetry.

Backpropagation sends a layer's error signal δ to the layer below through the transposed forward
weights (``δ @ W``). Biology cannot do that "weight transport", and evograd's users come here to
train without it. The rules below keep each layer's weight gradient local and true (``δᵀ x``) and
change only the signal sent down:

* ``"fa"``, feedback alignment (Lillicrap et al. 2016): ``δ @ B`` with a fixed random ``B`` shaped
  like ``W``. The forward weights learn to align with ``B``, and learning works.
* ``"dfa"``, direct feedback alignment (Nøkland 2016): every layer receives the *output* error
  ``e = ∂loss/∂output`` projected by its own fixed random ``B_l``, skipping the layers above.
* ``"sign"``, sign symmetry (Liao, Leibo & Poggio 2016): ``δ @ (s · sign(W))``: only the signs of
  ``W`` are transported.
* ``"noise"``: Gaussian noise with the norm of the true signal, the baseline that shows the
  alignment, not the mere magnitude, of the signal is what learns.
* ``"bp"``: plain autograd, to measure how far a rule's update is from the true gradient.

:func:`convert` swaps every ``nn.Linear`` and ``nn.Conv2d`` of a model for a :class:`FeedbackLinear`
or :class:`FeedbackConv2d` that shares the original's parameters; :func:`mode` switches the rule at
run time; :func:`feedback_gradients` is the hook the hybrid optimizer's direction sources call.
Layers with parameters of any other type are refused (a silent fallback to backprop would make
every comparison a lie). Feedback matrices are drawn from a local generator seeded by
``(seed, layer index, rule)`` (docs/design.rst, contract 2) and are buffers, so they travel with
``state_dict`` and ``.to(device)``.

References:
    Lillicrap, Cownden, Tweed & Akerman (2016), Random synaptic feedback weights support error
    backpropagation for deep learning.
    Nøkland (2016), Direct feedback alignment provides learning in deep neural networks.
    Liao, Leibo & Poggio (2016), How important is weight symmetry in backpropagation?
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RULES", "FeedbackLinear", "FeedbackConv2d", "convert", "mode", "feedback_gradients"]

RULES = ("bp", "fa", "dfa", "sign", "noise")
_CONVERTIBLE = ("fa", "dfa", "sign", "noise")
_STREAM = {"fa": 0, "dfa": 1, "noise": 2}  # independent random streams per rule
_GLOBAL_RULE: contextvars.ContextVar[str | None] = contextvars.ContextVar("evograd_feedback_rule", default=None)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed {', '.join(map(repr, allowed))}")


def _generator(seed: int, index: int, rule: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator of its own for layer ``index`` under ``rule``, derived from ``seed`` alone."""
    key = np.random.SeedSequence([seed, index, _STREAM[rule]]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(key))


# --- autograd functions ---------------------------------------------------------------------------


class _LinearFn(torch.autograd.Function):
    """``F.linear`` whose backward gives the true weight gradient and ``input_grad(δ)`` as input's."""

    @staticmethod
    def forward(ctx, x, weight, bias, input_grad):
        ctx.save_for_backward(x)
        ctx.input_grad = input_grad
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, delta):  # (..., out)
        (x,) = ctx.saved_tensors
        delta2 = delta.reshape(-1, delta.shape[-1])  # (n, out)
        grad_x = ctx.input_grad(delta) if ctx.needs_input_grad[0] else None
        grad_w = delta2.T @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None  # (out, in)
        grad_b = delta2.sum(0) if ctx.needs_input_grad[2] else None  # (out,)
        return grad_x, grad_w, grad_b, None


class _Conv2dFn(torch.autograd.Function):
    """``F.conv2d`` whose backward gives the true weight gradient and ``input_grad(δ)`` as input's."""

    @staticmethod
    def forward(ctx, x, weight, bias, input_grad, geometry):
        ctx.save_for_backward(x)
        ctx.input_grad, ctx.geometry, ctx.weight_shape = input_grad, geometry, weight.shape
        return F.conv2d(x, weight, bias, *geometry)

    @staticmethod
    def backward(ctx, delta):  # (batch, out_channels, H', W')
        (x,) = ctx.saved_tensors
        grad_x = ctx.input_grad(delta) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.nn.grad.conv2d_weight(x, ctx.weight_shape, delta, *ctx.geometry)
        grad_b = delta.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None  # (out_channels,)
        return grad_x, grad_w, grad_b, None, None


class _CaptureError(torch.autograd.Function):
    """Identity on the model output; backward records ``e = ∂loss/∂output`` for the DFA layers."""

    @staticmethod
    def forward(ctx, output, slot):
        ctx.slot = slot
        return output.view_as(output)

    @staticmethod
    def backward(ctx, error):
        ctx.slot.error = error
        return error, None


# --- direct feedback alignment plumbing -----------------------------------------------------------


class _Slot:
    """One forward pass of a DFA model: the layers that ran, and (after backward) the output error."""

    def __init__(self) -> None:
        self.error: Tensor | None = None
        self.layers: list[tuple[_Feedback, torch.Size]] = []


class _DFARoot:
    """Hooks on the converted model's root that hand the output error to every DFA layer.

    Autograd runs the output's backward before any layer's, so by the time a layer needs ``e`` the
    :class:`_CaptureError` node has stored it in the slot of that forward pass.
    """

    def __init__(self) -> None:
        self.slot: _Slot | None = None

    def start(self, module: nn.Module, args) -> None:
        self.slot = _Slot()

    def finish(self, module: nn.Module, args, output):
        slot = self.slot
        if not slot.layers:  # no layer ran under "dfa", e.g. inside mode("bp")
            return None
        if not isinstance(output, Tensor) or output.dim() < 2:
            raise TypeError(
                f"DFA needs a model that returns one batched tensor (batch first); got {type(output).__name__}"
            )
        batch, n_out = output.shape[0], output[0].numel()
        for layer, x_shape in slot.layers:
            n_in = math.prod(x_shape[1:])
            if x_shape[0] != batch:
                raise ValueError(
                    f"DFA needs batch-first tensors: a {type(layer).__name__} saw batch "
                    f"{x_shape[0]} but the model output has batch {batch}"
                )
            if layer.feedback is None:  # drawn on first use: only now are both sizes known
                layer.feedback = layer._draw((n_out, n_in), fan_in=n_out)  # (n_out, n_in)
            elif layer.feedback.shape != (n_out, n_in):
                raise ValueError(
                    f"DFA feedback of a {type(layer).__name__} has shape "
                    f"{tuple(layer.feedback.shape)} but this pass needs {(n_out, n_in)}; "
                    "input and output sizes must stay fixed"
                )
        return _CaptureError.apply(output, slot)


# --- layers ---------------------------------------------------------------------------------------


class _Feedback:
    """What :class:`FeedbackLinear` and :class:`FeedbackConv2d` share: rule dispatch and matrices.

    ``converted`` is the rule the layer was built for (it decides which matrix ``feedback`` holds);
    ``rule`` is the one in force, changed by :func:`mode`.
    """

    def _setup(self, module: nn.Module, rule: str, seed: int, index: int, scale: float | None) -> None:
        _check_choice("rule", rule, _CONVERTIBLE)
        self.weight, self.bias = module.weight, module.bias  # the same Parameter objects
        self.converted, self.rule = rule, rule
        self.seed, self.index, self.scale = seed, index, scale
        self._dfa_root: _DFARoot | None = None
        self._noise_generator: torch.Generator | None = None
        # FA's B is shaped like W and drawn like a fresh W; DFA's is drawn once sizes are known.
        matrix = self._draw(self.weight.shape, fan_in=self.weight[0].numel()) if rule == "fa" else None
        self.register_buffer("feedback", matrix)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rule={self.rule!r}"

    def _draw(self, shape: tuple[int, ...], fan_in: int) -> Tensor:
        """N(0, scale²) entries, scale defaulting to 1/sqrt(fan_in) (LeCun), from this layer's stream."""
        std = self.scale if self.scale is not None else fan_in**-0.5
        gen = _generator(self.seed, self.index, self.converted)
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * std).to(self.weight)

    def _check_can_run(self, rule: str) -> None:
        if rule in ("fa", "dfa") and rule != self.converted:
            raise ValueError(
                f"{type(self).__name__} was converted with mode={self.converted!r} and "
                f"holds no {rule.upper()} feedback matrix; use convert(model, mode={rule!r})"
            )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        stored = state_dict.get(prefix + "feedback")
        if self.feedback is None and stored is not None:  # a DFA matrix not drawn yet here
            self.feedback = torch.empty(stored.shape, dtype=self.weight.dtype, device=self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _input_grad(self, rule: str, x: Tensor) -> Callable[[Tensor], Tensor]:
        """The signal that ``rule`` sends to the layer input, as a function of the output's δ."""
        shape = x.shape
        if rule == "fa":
            return lambda delta: self._transport(delta, self.feedback, shape)
        if rule == "sign":

            def sign_grad(delta):
                w = self.weight.detach()
                s = self.scale if self.scale is not None else w.square().mean().sqrt()
                return self._transport(delta, s * w.sign(), shape)

            return sign_grad
        if rule == "noise":
            return lambda delta: self._noise_like(self._transport(delta, self.weight.detach(), shape))
        # dfa
        if self._dfa_root is None or self._dfa_root.slot is None:
            raise RuntimeError(
                "DFA layers need the hooks convert() installs on the model root; call "
                "the model returned by convert(model, mode='dfa'), not a layer of it"
            )
        slot = self._dfa_root.slot
        if x.requires_grad:  # the first layer's input needs no signal and gets no matrix
            slot.layers.append((self, shape))

        def dfa_grad(delta):
            if slot.error is None:
                raise RuntimeError("DFA: the loss must depend on the layers through the model output")
            error = slot.error.reshape(len(slot.error), -1)  # (batch, n_out)
            return (error @ self.feedback).view(shape)  # (batch, *in)

        return dfa_grad

    def _noise_like(self, signal: Tensor) -> Tensor:
        """Gaussian noise with, sample by sample, the norm of ``signal``."""
        gen = self._noise_generator
        if gen is None or gen.device != signal.device:
            gen = self._noise_generator = _generator(self.seed, self.index, "noise", signal.device)
        flat = signal.reshape(len(signal), -1) if signal.dim() > 1 else signal.reshape(1, -1)  # (n, d)
        z = torch.randn(flat.shape, generator=gen, device=flat.device, dtype=flat.dtype)  # (n, d)
        return (z * (flat.norm(dim=1, keepdim=True) / z.norm(dim=1, keepdim=True))).view(signal.shape)

    def forward(self, x: Tensor) -> Tensor:
        rule = _GLOBAL_RULE.get() or self.rule
        self._check_can_run(rule)
        if rule == "bp":
            return super().forward(x)  # autograd's own backward, exactly
        return self._run(x, self._input_grad(rule, x))


class FeedbackLinear(_Feedback, nn.Linear):
    """An ``nn.Linear`` whose backward sends a backprop-free signal to its input.

    Built by :func:`convert`; it shares ``weight`` and ``bias`` with the layer it replaces. The
    forward pass and the weight gradient (``δᵀ x``) are those of ``nn.Linear``.

    Args:
        linear: the layer to wrap; its parameters are shared, not copied.
        rule: ``"fa"``, ``"dfa"``, ``"sign"`` or ``"noise"``.
        seed: seed of the feedback matrices and noise.
        index: the layer's position in the model, so layers draw independent matrices.
        scale: standard deviation of FA/DFA feedback entries, or the magnitude ``s`` of sign
            feedback; ``None`` for the defaults described in :func:`convert`.

    Attributes:
        feedback: the buffer holding ``B``: shaped like ``weight`` under FA; ``(n_out, in_features)``
            under DFA (``None`` until the first forward pass, or for a layer whose input never
            needs a gradient); ``None`` under sign symmetry and noise.
    """

    def __init__(
        self, linear: nn.Linear, rule: str, *, seed: int = 0, index: int = 0, scale: float | None = None
    ) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self._setup(linear, rule, seed, index, scale)

    def _transport(self, delta: Tensor, matrix: Tensor, x_shape: torch.Size) -> Tensor:
        return delta @ matrix  # (..., out) @ (out, in) -> (..., in)

    def _run(self, x: Tensor, input_grad: Callable[[Tensor], Tensor]) -> Tensor:
        return _LinearFn.apply(x, self.weight, self.bias, input_grad)


def _zero_padding(conv: nn.Conv2d) -> tuple[tuple[int, int], ...]:
    """``(before, after)`` padding of each spatial dimension (height, width) of a Conv2d.

    Integer padding pads both sides alike; ``"valid"`` pads nothing; ``"same"`` pads
    ``dilation * (kernel - 1)`` in all, the odd one after, as ``nn.Conv2d`` does.
    """
    if conv.padding == "valid":
        return (0, 0), (0, 0)
    if conv.padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        return tuple((total // 2, total - total // 2) for total in totals)
    return tuple((p, p) for p in conv.padding)


class FeedbackConv2d(_Feedback, nn.Conv2d):
    """An ``nn.Conv2d`` whose backward sends a backprop-free signal to its input.

    Built by :func:`convert`; it shares ``weight`` and ``bias`` with the layer it replaces. The
    forward pass and the weight gradient are those of ``nn.Conv2d``; FA and sign symmetry send
    ``conv_transpose(δ, B)`` down. Zero padding only; ``padding="same"`` is stored as the equivalent
    integers, and needs a kernel whose padding is symmetric. Arguments and ``feedback`` are as in
    :class:`FeedbackLinear`, the DFA matrix being ``(n_out, in_channels * H * W)``.
    """

    def __init__(
        self, conv: nn.Conv2d, rule: str, *, seed: int = 0, index: int = 0, scale: float | None = None
    ) -> None:
        (top, bottom), (left, right) = _zero_padding(conv)
        if conv.padding_mode != "zeros" or left != right or top != bottom:
            raise TypeError(
                f"cannot convert Conv2d with padding={conv.padding!r}, padding_mode="
                f"{conv.padding_mode!r}: only symmetric zero padding is supported"
            )
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=(top, left),
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            device="meta",
        )
        self._setup(conv, rule, seed, index, scale)

    def _geometry(self) -> tuple:
        return self.stride, self.padding, self.dilation, self.groups

    def _transport(self, delta: Tensor, matrix: Tensor, x_shape: torch.Size) -> Tensor:
        return torch.nn.grad.conv2d_input(x_shape, matrix, delta, *self._geometry())  # (batch, *in)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:  # unbatched (C, H, W)
            return super().forward(x.unsqueeze(0)).squeeze(0)
        return super().forward(x)

    def _run(self, x: Tensor, input_grad: Callable[[Tensor], Tensor]) -> Tensor:
        return _Conv2dFn.apply(x, self.weight, self.bias, input_grad, self._geometry())


_SWAPS = {nn.Linear: FeedbackLinear, nn.Conv2d: FeedbackConv2d}


# --- public functions -----------------------------------------------------------------------------


def convert(model: nn.Module, mode: str = "fa", *, seed: int = 0, scale: float | None = None) -> nn.Module:
    """Return ``model`` with every ``nn.Linear``/``nn.Conv2d`` swapped for a backprop-free layer.

    The result is a copy of the module tree that **shares the parameter objects** (and buffers) of
    ``model``: an optimizer built on ``model.parameters()`` trains the converted model, and
    ``model`` itself stays an ordinary backprop network on the same weights. The forward pass is
    unchanged; only the signal sent backwards differs (see the module docstring).

    Feedback matrices are drawn from ``(seed, layer index, mode)`` with a local generator, never the
    global RNG. Defaults: FA entries ~ N(0, 1/fan_in), like a freshly initialized ``W``; DFA entries
    ~ N(0, 1/n_out), with ``n_out`` the size of one sample's model output (the projection's fan-in);
    sign symmetry uses ``s · sign(W)`` with ``s = rms(W)``, recomputed from the current weights at
    every backward, so the feedback has the Frobenius norm of ``W``.

    DFA: the model must return one batch-first tensor; each layer's input gets ``e @ B_l`` where
    ``e = ∂loss/∂output`` (per sample, flattened), and elementwise modules, pooling or ``Flatten``
    between layers are run backwards by autograd as usual. Its matrices are drawn at the first
    forward pass, when the sizes are known; a layer whose input never needs a gradient (the first)
    gets none.

    Args:
        model: the network; any tree of modules whose only parametrized layers are ``nn.Linear`` and
            ``nn.Conv2d``.
        mode: ``"fa"``, ``"dfa"``, ``"sign"`` or ``"noise"``.
        seed: a non-negative integer; 0 is valid.
        scale: standard deviation of FA/DFA feedback entries, or the magnitude of sign feedback;
            ``None`` for the defaults above. Not used by ``"noise"``.

    Returns:
        The converted module (of ``model``'s type when ``model`` is a container).

    Raises:
        TypeError: a layer with parameters is neither ``nn.Linear`` nor ``nn.Conv2d`` (the message
            names it), a Conv2d pads in an unsupported way, or the model is already converted.
        ValueError: ``mode``, ``seed`` or ``scale`` is out of range.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from evograd import feedback
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> fa = feedback.convert(net, mode="fa", seed=0)
        >>> fa[2]
        FeedbackLinear(in_features=8, out_features=2, bias=True, rule='fa')
        >>> fa[2].weight is net[2].weight, fa[2].feedback.shape
        (True, torch.Size([2, 8]))
        >>> x = torch.randn(5, 4)
        >>> torch.equal(fa(x), net(x))
        True

    References:
        Lillicrap et al. (2016); Nøkland (2016); Liao, Leibo & Poggio (2016).
    """
    _check_choice("mode", mode, _CONVERTIBLE)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} is out of range; allowed integers >= 0")
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale={scale!r} is out of range; allowed None or a finite float > 0")
    if scale is not None and mode == "noise":
        raise ValueError("scale is not used by mode='noise' (the noise takes the true signal's norm)")
    for name, module in model.named_modules():
        if isinstance(module, _Feedback):
            raise TypeError(f"{name or 'model'} ({type(module).__name__}) is already converted")
        if type(module) not in _SWAPS and next(module.parameters(recurse=False), None) is not None:
            raise TypeError(
                f"cannot convert {name or 'model'} ({type(module).__name__}): only nn.Linear "
                "and nn.Conv2d have backprop-free rules; other layers with parameters "
                "would silently backpropagate"
            )

    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    new = copy.deepcopy(model, memo=shared)
    root = _DFARoot() if mode == "dfa" else None
    swapped: dict[int, nn.Module] = {}  # id(old layer) -> new layer, so a shared layer stays shared
    for name, module in list(new.named_modules(remove_duplicate=False)):
        if type(module) not in _SWAPS:
            continue
        if id(module) not in swapped:
            layer = _SWAPS[type(module)](module, mode, seed=seed, index=len(swapped), scale=scale)
            layer._dfa_root = root
            swapped[id(module)] = layer
        if name:
            new.set_submodule(name, swapped[id(module)])
        else:
            new = swapped[id(module)]
    if root is not None:
        new.register_forward_pre_hook(root.start)
        new.register_forward_hook(root.finish)
    return new


@contextlib.contextmanager
def mode(rule: str, model: nn.Module | None = None) -> Iterator[None]:
    """Switch the backward rule of converted layers inside a ``with`` block.

    The rule is read when the **forward** pass runs (the graph records it), so run forward and
    backward inside the block. ``mode("bp")`` gives exactly autograd's gradients: converted layers
    then run the forward of ``nn.Linear``/``nn.Conv2d`` themselves. A layer converted for one
    matrix rule cannot run the other (``"fa"`` needs ``B`` shaped like ``W``, ``"dfa"`` needs the
    output projections); ``"bp"``, ``"sign"`` and ``"noise"`` need no matrix and run anywhere.

    Args:
        rule: one of ``"bp"``, ``"fa"``, ``"dfa"``, ``"sign"``, ``"noise"``.
        model: switch only this model's converted layers (checked on entry). ``None`` switches every
            converted layer in this thread or async context and takes precedence over per-model
            settings; incompatible layers then raise at their forward pass.

    Raises:
        ValueError: ``rule`` is not one of the above; ``model`` has no converted layer (unless
            ``rule="bp"``) or a layer that cannot run ``rule``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from evograd import feedback
        >>> net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
        >>> fa = feedback.convert(net, mode="fa", seed=0)
        >>> x = torch.randn(4, 3)
        >>> with feedback.mode("bp", fa):
        ...     fa(x).square().sum().backward()
        >>> bp_grad = net[0].weight.grad.clone(); net.zero_grad()
        >>> net(x).square().sum().backward()
        >>> torch.equal(net[0].weight.grad, bp_grad)
        True
    """
    _check_choice("rule", rule, RULES)
    if model is None:
        token = _GLOBAL_RULE.set(rule)
        try:
            yield
        finally:
            _GLOBAL_RULE.reset(token)
        return
    layers = [m for m in model.modules() if isinstance(m, _Feedback)]
    if not layers and rule != "bp":
        raise ValueError(
            f"model ({type(model).__name__}) has no converted layer to run rule={rule!r}; "
            "call evograd.feedback.convert(model, mode=...) first"
        )
    for layer in layers:
        layer._check_can_run(rule)
    previous = [layer.rule for layer in layers]
    for layer in layers:
        layer.rule = rule
    try:
        yield
    finally:
        for layer, old in zip(layers, previous):
            layer.rule = old


def feedback_gradients(model: nn.Module, closure: Callable[[], Tensor | None], rule: str) -> list[Tensor]:
    """Per-parameter gradients of ``closure`` under ``rule``, leaving every ``.grad`` as it was.

    This is what the direction sources ``feedback_alignment()``, ``direct_feedback_alignment()``
    and ``sign_symmetry()`` call. ``closure`` computes the loss with ``model`` and either calls
    ``backward()`` itself (a torch optimizer closure) or returns the loss, which is then
    backpropagated. Gradients start from zero, whatever ``.grad`` held.

    Args:
        model: a converted model (any model when ``rule="bp"``).
        closure: computes the loss; runs inside :func:`mode` ``(rule, model)`` with grad enabled.
        rule: one of ``"bp"``, ``"fa"``, ``"dfa"``, ``"sign"``, ``"noise"``.

    Returns:
        One tensor per ``model.parameters()``, in that order; zeros where no gradient reached.

    Raises:
        ValueError: as :func:`mode`.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from evograd import feedback
        >>> net = feedback.convert(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)), "dfa")
        >>> x, y = torch.randn(8, 3), torch.randn(8, 2)
        >>> grads = feedback.feedback_gradients(net, lambda: (net(x) - y).square().mean(), "dfa")
        >>> [tuple(g.shape) for g in grads]
        [(5, 3), (5,), (2, 5), (2,)]
        >>> net[0].weight.grad is None
        True
    """
    params = list(model.parameters())
    saved = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        with mode(rule, model), torch.enable_grad():
            loss = closure()
            if all(p.grad is None for p in params) and isinstance(loss, Tensor) and loss.requires_grad:
                loss.backward()
        return [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    finally:
        for p, grad in zip(params, saved):
            p.grad = grad
