"""Property cards: what a loss claims about itself, as a dataclass and as TOML.

A card lists the properties a loss declares (see :data:`PROPERTIES`), the keyword options to call
it with, optional ranges to sweep options over, the closed-form expressions its ``range`` and
``collapse`` properties are checked against, and the auxiliary inputs it needs.

Expressions are arithmetic in the variables ``N`` (batch size), ``D`` (feature dimension),
``norm2`` (squared norm of the collapse vector, collapse only), every numeric option by name, and
the functions/constants ``log exp sqrt log1p expm1 abs min max pi e inf``. Example TOML::

    name = "infonce"
    properties = ["finite", "range", "collapse", "rotation", "gradcheck"]
    range = ["log(1 + (N-1)*exp(-2/temperature))", "log(1 + (N-1)*exp(2/temperature))"]
    collapse = "log(N)"
    reference = "gessl.testing.references:infonce"

    [options]
    critic = "cosine"

    [sweep]                # drawn per example; float bounds -> floats, int bounds -> integers
    temperature = [0.05, 2.0]
"""

from __future__ import annotations

import ast
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PROPERTIES", "CardError", "PropertyCard", "evaluate", "load_card"]

#: property name -> one-line meaning (the harness implements each in ``properties.py``)
PROPERTIES: dict[str, str] = {
    "finite": "loss, terms and input gradients are finite; loss and terms are 0-dim tensors",
    "range": "lower(N, D, options) <= loss <= upper(N, D, options)",
    "collapse": "all embeddings equal to one vector v gives the declared value",
    "rotation": "invariant to one orthogonal Q applied to every embedding (z -> z Q)",
    "row_rescale": "invariant to positive per-row rescaling of each view",
    "feature_affine": "invariant to z -> a*z + b per feature (a > 0), a, b drawn per view",
    "translation": "invariant to adding the same vector b to every row of both views",
    "batch_permutation": "invariant to the same permutation of the rows of both views",
    "feature_permutation": "invariant to one permutation of the feature axis of every embedding",
    "view_swap": "loss(z1, z2) == loss(z2, z1)",
    "gradcheck": "autograd gradient equals float64 finite differences (torch gradcheck)",
    "reference": "value equals the reference function's value",
}

_FUNCS: dict[str, Any] = {
    "log": math.log,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "log1p": math.log1p,
    "expm1": math.expm1,
    "abs": abs,
    "min": min,
    "max": max,
}
_CONSTS = {"pi": math.pi, "e": math.e, "inf": math.inf}
_ALLOWED = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Call,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.Pow,
    ast.USub,
    ast.UAdd,
    ast.FloorDiv,
    ast.Mod,
)


class CardError(ValueError):
    """A malformed card (unknown property, missing expression, bad TOML, ...)."""


def _parse(expr: str) -> ast.Expression:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as err:
        raise CardError(f"cannot parse expression {expr!r}: {err.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise CardError(f"expression {expr!r} uses {type(node).__name__}, which is not allowed")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in _FUNCS
        ):
            raise CardError(f"expression {expr!r} calls an unknown function")
    return tree


def evaluate(expr: str | float, variables: Mapping[str, Any]) -> float:
    """Evaluate a card expression (or pass a number through) with the given variables."""
    if isinstance(expr, (int, float)) and not isinstance(expr, bool):
        return float(expr)
    tree = _parse(str(expr))
    names = {
        **_CONSTS,
        **_FUNCS,
        **{
            k: v
            for k, v in variables.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        },
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names:
            raise CardError(f"expression {expr!r} uses unknown variable {node.id!r}")
    try:
        return float(eval(compile(tree, "<card>", "eval"), {"__builtins__": {}}, names))
    except (OverflowError, ZeroDivisionError, ValueError) as err:
        raise CardError(f"cannot evaluate {expr!r}: {err}") from None


@dataclass(frozen=True)
class PropertyCard:
    """What a loss declares about itself; see the module docstring for the TOML form.

    Attributes:
        name: a label for reports.
        properties: declared property names (keys of :data:`PROPERTIES`).
        options: keyword options passed to the loss on every call.
        sweep: option name -> (low, high), drawn per example (ints give integers).
        property_options: property name -> options that override ``options`` for that property
            only (e.g. a positive ``eps`` for ``collapse`` while invariances run with ``eps = 0``).
        range: (lower, upper) expressions, for ``range``.
        collapse: expression for the collapsed value, for ``collapse``.
        reference: ``"module:function"`` of a reference implementation taking NumPy arrays and
            the same options, for ``reference``.
        differentiable: the inputs ``gradcheck`` differentiates (e.g. only ``z1`` when ``z2`` is
            a stop-gradient target).
        extra_inputs: auxiliary inputs living in feature space: name -> number of rows ``K``
            (a ``[K, D]`` tensor, e.g. a queue or prototypes) or ``0`` for a ``[D]`` vector
            (e.g. DINO's center). Rotations and feature permutations act on them too; the
            collapse property sets their rows to the collapse vector.
        batch, dim: inclusive ranges of N and D to draw.
        rtol, atol: tolerance of every equality and inequality (float64 throughout).
        max_examples: hypothesis examples per property.
        conditioning: minimum row norm and per-feature std of drawn embeddings, keeping examples
            away from the singular points of cosine similarity and batch standardisation.
    """

    name: str
    properties: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    sweep: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    property_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    range: tuple[str, str] | None = None
    collapse: str | None = None
    reference: str | None = None
    differentiable: tuple[str, ...] = ("z1", "z2")
    extra_inputs: Mapping[str, int] = field(default_factory=dict)
    batch: tuple[int, int] = (2, 8)
    dim: tuple[int, int] = (2, 6)
    rtol: float = 1e-8
    atol: float = 1e-10
    max_examples: int = 30
    conditioning: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "properties", tuple(self.properties))
        object.__setattr__(self, "differentiable", tuple(self.differentiable))
        unknown = [p for p in self.properties if p not in PROPERTIES]
        if unknown:
            raise CardError(
                f"card {self.name!r}: unknown property {unknown[0]!r}; "
                f"known: {', '.join(PROPERTIES)}"
            )
        if "range" in self.properties:
            if self.range is None or len(self.range) != 2:
                raise CardError(f"card {self.name!r} declares 'range' but gives no [lower, upper]")
            object.__setattr__(self, "range", tuple(self.range))
        if "collapse" in self.properties and self.collapse is None:
            raise CardError(f"card {self.name!r} declares 'collapse' but gives no value")
        if "reference" in self.properties and not self.reference:
            raise CardError(f"card {self.name!r} declares 'reference' but names no function")
        for expr in [*(self.range or ()), *([self.collapse] if self.collapse is not None else [])]:
            if not isinstance(expr, (int, float)):
                _parse(str(expr))
        for lo_hi, nm in ((self.batch, "batch"), (self.dim, "dim")):
            if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1]:
                raise CardError(f"card {self.name!r}: {nm} must be [min, max] with 1 <= min <= max")
        if self.batch[0] < 2:
            raise CardError(f"card {self.name!r}: batch sizes start at 2")
        for key, bounds in self.sweep.items():
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise CardError(f"card {self.name!r}: sweep {key!r} must be [low, high]")
            if key in self.options:
                raise CardError(f"card {self.name!r}: {key!r} is both an option and swept")
        bad_props = [p for p in self.property_options if p not in PROPERTIES]
        if bad_props:
            raise CardError(
                f"card {self.name!r}: property_options for unknown property {bad_props[0]!r}"
            )
        allowed_inputs = {"z1", "z2", *self.extra_inputs}
        bad = [x for x in self.differentiable if x not in allowed_inputs]
        if bad:
            raise CardError(f"card {self.name!r}: differentiable input {bad[0]!r} does not exist")
        if self.max_examples < 1:
            raise CardError(f"card {self.name!r}: max_examples must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], default_name: str = "card") -> PropertyCard:
        """Build a card from a parsed TOML mapping (keys as in the dataclass)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CardError(f"card {data.get('name', default_name)!r}: unknown key {unknown[0]!r}")
        kw = dict(data)
        kw.setdefault("name", default_name)
        if "properties" not in kw:
            raise CardError(f"card {kw['name']!r} lists no properties")
        for key in ("batch", "dim", "differentiable", "range"):
            if key in kw and kw[key] is not None:
                kw[key] = tuple(kw[key])
        if "sweep" in kw:
            kw["sweep"] = {k: tuple(v) for k, v in kw["sweep"].items()}
        try:
            return cls(**kw)
        except TypeError as err:
            raise CardError(str(err)) from None


def load_card(path: str | Path) -> PropertyCard:
    """Read a TOML card from ``path``."""
    p = Path(path)
    if not p.is_file():
        raise CardError(f"card file not found: {p}")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise CardError(f"{p}: invalid TOML: {err}") from None
    return PropertyCard.from_dict(data, default_name=p.stem)
