"""Count what crosses between host and device while code runs, at the level of torch's operators.

The GPU tests assert that a generation keeps population, noise and fitness on the device and lets
only seeds and fitness cross (issue 8). :class:`Crossings` sees every operator torch dispatches
(through a ``TorchDispatchMode``, below autograd and ``vmap``), and records each tensor that an
operator moves from one device type to another, with its number of elements:

* an operator whose inputs live on different device types (a CPU index into a CUDA tensor, a
  ``copy_`` from host to device) records its inputs on the other device type than its output;
* an operator whose output lives on another device type than its inputs (``.cpu()``, ``.to``)
  records its output;
* ``.item()`` / ``float(t)`` of a device tensor records one element.

A CPU scalar tensor of zero dimensions is not a transfer: torch passes it as a kernel argument.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


@dataclasses.dataclass
class Crossing:
    op: str
    source: str
    target: str
    numel: int


class Crossings(TorchDispatchMode):
    """A context manager recording every host/device crossing in ``self.log``."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[Crossing] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        name = str(func)
        if func is torch.ops.aten._local_scalar_dense.default:
            if inputs[0].device.type != "cpu":
                self.log.append(Crossing(name, inputs[0].device.type, "cpu", 1))
            return out
        if func is torch.ops.aten.copy_.default:
            target, source = args[0], args[1]
            if target.device.type != source.device.type and not _cpu_scalar(source):
                self.log.append(Crossing(name, source.device.type, target.device.type, source.numel()))
            return out
        target = outputs[0].device.type if outputs else None
        if target is None:
            return out
        for t in inputs:
            if t.device.type != target and not _cpu_scalar(t):
                self.log.append(Crossing(name, t.device.type, target, t.numel()))
        return out

    def largest(self) -> int:
        """The most elements any one crossing moved (0 if nothing crossed)."""
        return max((c.numel for c in self.log), default=0)

    def to_host(self) -> list[Crossing]:
        return [c for c in self.log if c.target == "cpu"]


def _cpu_scalar(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dim() == 0
