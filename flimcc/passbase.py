"""Passes, their registry, the textual pipeline syntax, and the verified pipeline run.

A pass is a qonnx `Transformation` (so `model.transform(UnrollGRU())` works for FINN and
QONNX users) that also declares, as class attributes:

- `name`: its kebab-case pipeline name (`unroll-gru`);
- `summary`: one line for `flimcc passes`;
- `contract`: what it promises about numerics: `exact` (bit-identical outputs), `float`
  (within `atol + rtol * |expected|` of the stage before) or `approximate` (numerics change;
  the error is reported, and checked against `bound` when the pass sets one);
- `options`: typed `Option`s, given in Python as keyword arguments (`max_steps=512`) and in
  text as `name{max-steps=512}`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from typing import Any, ClassVar

from qonnx.transformation.base import Transformation

from .errors import PipelineSyntaxError


class Contract(str, enum.Enum):
    EXACT = "exact"
    FLOAT = "float"
    APPROXIMATE = "approximate"


@dataclasses.dataclass(frozen=True)
class Option:
    """A typed pass option. `type` is int, float, bool or str; `choices` restricts values."""

    name: str  # kebab-case, as written in pipeline text
    type: type
    default: Any
    help: str
    choices: tuple | None = None

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    def convert(self, value: Any, pass_name: str) -> Any:
        """Check (Python) or parse (text) a value; raise a message that lists what is valid."""
        try:
            if isinstance(value, str) and self.type is not str:
                if self.type is bool:
                    if value.lower() not in ("true", "false", "1", "0"):
                        raise ValueError
                    value = value.lower() in ("true", "1")
                else:
                    value = self.type(value)
            elif self.type is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
                raise ValueError
        except ValueError:
            raise PipelineSyntaxError(
                f"pass '{pass_name}': option '{self.name}' takes {self.describe_type()}, got {value!r}"
            ) from None
        if self.choices is not None and value not in self.choices:
            raise PipelineSyntaxError(
                f"pass '{pass_name}': option '{self.name}' must be one of "
                f"{', '.join(map(str, self.choices))} (got {value!r})"
            )
        return value

    def describe_type(self) -> str:
        if self.choices is not None:
            return "|".join(map(str, self.choices))
        return self.type.__name__

    def format(self, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        text = str(value)
        return text if re.fullmatch(r"[\w.+\-/]+", text) else json.dumps(text)


class Pass(Transformation):
    """Base class of flimcc's passes (see the module docstring)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    contract: ClassVar[Contract]
    options: ClassVar[tuple[Option, ...]] = ()
    atol: ClassVar[float] = 1e-5
    rtol: ClassVar[float] = 1e-4
    bound: ClassVar[float | None] = None  # max abs error an approximate pass allows itself
    #: Figures a pass reports about its last run (JSON-able), shown in the pipeline report.
    metrics: dict

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        by_attr = {o.attr: o for o in self.options}
        unknown = [k for k in kwargs if k not in by_attr]
        if unknown:
            raise PipelineSyntaxError(
                f"pass '{self.name}': unknown option '{unknown[0].replace('_', '-')}'; {self.describe_options()}"
            )
        self.given: dict[str, Any] = {}
        self.metrics = {}
        for opt in self.options:
            if opt.attr in kwargs:
                value = opt.convert(kwargs[opt.attr], self.name)
                self.given[opt.name] = value
            else:
                value = opt.default
            setattr(self, opt.attr, value)

    @classmethod
    def describe_options(cls) -> str:
        if not cls.options:
            return "it takes no options"
        return "valid options: " + ", ".join(f"{o.name} ({o.describe_type()})" for o in cls.options)

    def spec(self) -> str:
        """This pass in pipeline text; only options that differ from their defaults."""
        opts = [(o, getattr(self, o.attr)) for o in self.options]
        shown = [f"{o.name}={o.format(v)}" for o, v in opts if v != o.default]
        return self.name + ("{" + ",".join(shown) + "}" if shown else "")

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.spec() == other.spec()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(self.spec())

    def __repr__(self) -> str:
        return f"<pass {self.spec()}>"


_REGISTRY: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available to pipelines by its `name`."""
    if not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", cls.name):
        raise ValueError(f"pass name {cls.name!r} is not kebab-case")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two passes are named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls
