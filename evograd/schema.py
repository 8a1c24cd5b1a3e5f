"""Settings checked against a schema derived from their defaults, not written out by hand.

A :class:`Field` is a setting's name and the Python types its value may take (``bool``, ``int``,
``float``, ``str`` and ``None``). :func:`infer` reads the types off example values (a method's
defaults on every task: ``lr = 0.05`` makes ``lr`` a real number, ``clip = 3.0`` on one task and
``None`` on another makes it an optional real number), and :func:`from_hints` off a dataclass's
annotations, so a new setting needs no schema edit. :func:`check` refuses unknown names, listing
the known ones, and checks every value's type through :mod:`evograd.validate`: a wrong type is a
``TypeError``, NaN, infinity or an integer beyond 64 bits a ``ValueError``, each message naming the
field. Ranges (``batch_size >= 1``, ``sigma > 0``) are the business of the objects the settings
build, which validate their configs on construction (docs/design.rst, contract 6).

Examples:
    >>> fields = {"lr": infer("rolling.lr", [0.08]), "clip": infer("rolling.clip", [3.0, None])}
    >>> check(fields, {"lr": 1, "clip": None}, "rolling")
    {'lr': 1.0, 'clip': None}
    >>> check(fields, {"lr": float("nan")}, "rolling")
    Traceback (most recent call last):
    ...
    ValueError: rolling.lr=nan is not finite; give a finite real number
    >>> check(fields, {"lrr": 0.1}, "rolling")
    Traceback (most recent call last):
    ...
    ValueError: rolling has no setting 'lrr'; allowed clip, lr
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from evograd import validate

__all__ = ["Field", "infer", "from_hints", "check"]

NONE = type(None)
INT64 = (-(2**63), 2**63 - 1)
_KINDS = (bool, int, float, str, NONE)


@dataclasses.dataclass(frozen=True)
class Field:
    """One setting: its name (as messages print it) and the types its value may take.

    Attributes:
        name: e.g. ``"rolling.lr"``.
        kinds: a subset of ``bool, int, float, str, NoneType``; ``float`` accepts integers too.
    """

    name: str
    kinds: frozenset[type]

    def __post_init__(self) -> None:
        if not self.kinds or not self.kinds <= set(_KINDS):
            names = sorted(k.__name__ for k in self.kinds)
            raise ValueError(f"{self.name}: kinds {names} must be among bool, int, float, str, NoneType")

    def check(self, value: Any) -> Any:
        """``value`` checked and converted to its plain Python type.

        Raises:
            TypeError: a value of a type the field does not take (None where it is not optional).
            ValueError: NaN or infinity, an integer beyond 64 bits, or an empty string.
        """
        if value is None:
            if NONE in self.kinds:
                return None
            raise TypeError(f"{self.name}=None is not allowed; give {self.describe()}")
        if bool in self.kinds:
            return validate.flag(self.name, value)
        if float in self.kinds:
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isfinite(value):
                raise ValueError(f"{self.name}={value!r} is not finite; give a finite real number")
            return validate.real(self.name, value)
        if int in self.kinds:
            return validate.integer(self.name, value, low=INT64[0], high=INT64[1])
        if not isinstance(value, str):
            raise TypeError(f"{self.name}={value!r} must be {self.describe()}, got {type(value).__name__}")
        if not value.strip():
            raise ValueError(f"{self.name}={value!r} is empty; give {self.describe()}")
        return value

    def describe(self) -> str:
        """What the field takes, in words: ``"a real number or None"``."""
        words = {bool: "True or False", int: "an integer", float: "a real number", str: "a non-empty string"}
        found = [words[k] for k in _KINDS if k in self.kinds and k is not NONE]
        if int in self.kinds and float in self.kinds:
            found.remove("an integer")
        return " or ".join(found + (["None"] if NONE in self.kinds else []))


def infer(name: str, examples: Iterable[Any]) -> Field:
    """The field whose types are those of ``examples`` (e.g. a setting's defaults on every task).

    Raises:
        TypeError: an example of a type no field takes (a list, a dict, ...).
    """
    kinds = set()
    for value in examples:
        kind = type(value)
        if kind not in _KINDS:
            raise TypeError(f"{name}: the example {value!r} is a {kind.__name__}; allowed bool, int, float, str, None")
        kinds.add(kind)
    return Field(name, frozenset(kinds))


def from_hints(cls: type, names: Iterable[str], prefix: str = "") -> dict[str, Field]:
    """Fields ``names`` of the dataclass ``cls``, their types read off its annotations.

    Examples:
        >>> from evograd.noise import Mutation
        >>> from_hints(Mutation, ["clip"], prefix="rolling.")["clip"].describe()
        'a real number or None'
    """
    hints = typing.get_type_hints(cls)
    found = {}
    for name in names:
        hint = hints[name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        found[name] = Field(prefix + name, frozenset(typing.get_args(hint) if union else (hint,)))
    return found


def check(fields: Mapping[str, Field], values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` checked against ``fields``, converted to plain types.

    Args:
        fields: the schema, setting name -> field.
        values: the settings to check.
        where: what owns the settings, for the message about an unknown name (e.g. ``"rolling"``).

    Raises:
        TypeError: ``values`` is not a mapping, or a value is of the wrong type.
        ValueError: an unknown setting (the message lists the known ones), or a bad value.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"{where} settings={values!r} must be a table of settings, got {type(values).__name__}")
    for key in values:
        if key not in fields:
            raise ValueError(f"{where} has no setting {key!r}; allowed {', '.join(sorted(fields))}")
    return {key: fields[key].check(value) for key, value in values.items()}
