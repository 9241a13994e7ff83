"""Property cards: what a loss claims about itself, as a dataclass and as TOML.

A card lists the properties a loss declares (see :data:`PROPERTIES`), the keyword options to call
it with, optional ranges to sweep options over, the closed-form expressions its ``range`` and
``collapse`` properties are checked against, and the auxiliary inputs it needs.

Expressions are arithmetic in the variables ``N`` (batch size), ``D`` (feature dimension),
``norm2`` (squared norm of the collapse vector, collapse only), every numeric option by name, and
the functions/constants ``log exp sqrt log1p expm1 abs min max pi e inf``.

Each property runs in one or more floating-point dtypes (:data:`DTYPES`): by default the exact
properties in float64 and ``stability`` in float32 (:data:`DEFAULT_DTYPES`). A card may change
that with ``dtypes``: a list applies to every declared property, a table to the properties it
names; ``gradcheck`` always runs in float64 (finite differences need it). Example TOML::

    name = "infonce"
    properties = ["finite", "range", "collapse", "rotation", "gradcheck"]
    range = ["log(1 + (N-1)*exp(-2/temperature))", "log(1 + (N-1)*exp(2/temperature))"]
    collapse = "log(N)"
    reference = "gessl.testing.references:infonce"

    [options]
    critic = "cosine"

    [init]                 # a loss class only: its constructor's options

    [sweep]                # drawn per example; float bounds -> floats, int bounds -> integers
    temperature = [0.05, 2.0]

    [dtypes]               # optional; or dtypes = ["float64", "float32"] for every property
    stability = ["float32", "float64"]
"""

from __future__ import annotations

import ast
import importlib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_DTYPES",
    "DTYPES",
    "PROPERTIES",
    "CardError",
    "PropertyCard",
    "evaluate",
    "expression_names",
    "load_card",
    "resolve",
]

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
    "stability": "loss, terms and input gradients stay finite at the corners of the sweep, on "
    "unit-norm and raw (norms up to 30) rows (float32 by default)",
}

#: the dtypes a card may name (``dtypes``), as torch calls them
DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")

#: dtypes of a property when the card does not say (every property not listed: float64)
DEFAULT_DTYPES: dict[str, tuple[str, ...]] = {"stability": ("float32",)}

#: properties that only make sense in float64 (finite differences)
FLOAT64_ONLY = frozenset({"gradcheck"})

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
    """A malformed card (unknown property, missing expression, bad TOML, bad reference, ...).

    ``message`` is one line; ``source`` is the card file when it is known (``str(err)`` is then
    ``"<source>: <message>"``).
    """

    def __init__(self, message: str, source: str | Path | None = None) -> None:
        self.message = " ".join(str(message).split())
        self.source = None if source is None else str(source)
        super().__init__(f"{self.source}: {self.message}" if self.source else self.message)


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


def expression_names(expr: str | float) -> set[str]:
    """The variables an expression uses (functions and constants excluded); checks its syntax."""
    if isinstance(expr, (int, float)) and not isinstance(expr, bool):
        return set()
    tree = _parse(str(expr))
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and id(n) not in called and n.id not in _CONSTS
    }


class _Floats(ast.NodeTransformer):
    """Integer literals as floats."""

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        if isinstance(node.value, int) and not isinstance(node.value, bool):
            return ast.copy_location(ast.Constant(float(node.value)), node)
        return node


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
    # in floating point throughout: an integer power tower (N**N**N**N, 9**9**9) overflows at
    # once instead of growing a Python integer without bound (time and memory)
    tree = ast.fix_missing_locations(_Floats().visit(tree))
    names = {k: float(v) if isinstance(v, int) else v for k, v in names.items()}
    try:
        value = float(eval(compile(tree, "<card>", "eval"), {"__builtins__": {}}, names))
    except (ArithmeticError, ValueError, TypeError, MemoryError, RecursionError) as err:
        raise CardError(f"cannot evaluate {expr!r}: {type(err).__name__}: {err}") from None
    if math.isnan(value):
        raise CardError(f"expression {expr!r} evaluates to nan")
    return value


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_expression(x: Any) -> bool:
    return _is_number(x) or isinstance(x, str)


def _names(x: Any) -> bool:
    """A list/tuple of strings (not a bare string)."""
    return isinstance(x, (list, tuple)) and all(isinstance(v, str) for v in x)


@dataclass(frozen=True)
class PropertyCard:
    """What a loss declares about itself; see the module docstring for the TOML form.

    Attributes:
        name: a label for reports.
        properties: declared property names (keys of :data:`PROPERTIES`).
        options: keyword options passed to the loss on every call.
        init: for a loss *class* (a ``torch.nn.Module`` called as ``loss(z1, z2)``), the
            options of its constructor; an option of ``options`` or ``sweep`` that the
            constructor takes is passed to it too (a fresh module per call).
        sweep: option name -> (low, high), drawn per example (ints give integers); ``stability``
            evaluates the loss at the corners of this box instead.
        property_options: property name -> options that override ``options`` for that property
            only (e.g. a positive ``eps`` for ``collapse`` while invariances run with ``eps = 0``).
        range: (lower, upper) expressions, for ``range``.
        collapse: expression for the collapsed value, for ``collapse``.
        reference: ``"module:function"`` of a reference implementation taking NumPy arrays and
            the same options, for ``reference``.
        differentiable: the inputs ``gradcheck`` differentiates, and whose gradients ``finite``
            and ``stability`` check (e.g. only ``z1`` when ``z2`` is a stop-gradient target).
        extra_inputs: auxiliary inputs living in feature space: name -> number of rows ``K``
            (a ``[K, D]`` tensor, e.g. a queue or prototypes) or ``0`` for a ``[D]`` vector
            (e.g. DINO's center). Rotations and feature permutations act on them too; the
            collapse property sets their rows to the collapse vector.
        batch, dim: inclusive ranges of N and D to draw.
        rtol, atol: tolerance of every equality and inequality in float64; in a lower precision
            each is widened to at least ``1000 * eps`` of that dtype (1.2e-4 in float32).
        max_examples: hypothesis examples per property.
        timeout: seconds one example may take (the loss's calls and the property's checks);
            beyond it the property is reported ``timeout`` with that example (the limit needs
            SIGALRM: POSIX, main thread).
        conditioning: minimum row norm and per-feature std of drawn embeddings, keeping examples
            away from the singular points of cosine similarity and batch standardisation.
        dtypes: ``None`` (each property's default, :data:`DEFAULT_DTYPES`), a list of
            :data:`DTYPES` for every declared property, or property name -> list for the
            properties named. ``gradcheck`` runs in float64 only.
    """

    name: str
    properties: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    init: Mapping[str, Any] = field(default_factory=dict)
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
    timeout: float = 60.0
    dtypes: tuple[str, ...] | Mapping[str, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        label = f"card {self.name!r}"

        def fail(what: str) -> None:
            raise CardError(f"{label}: {what}")

        if not isinstance(self.name, str):
            fail("name must be a string")
        if not _names(self.properties):
            fail("properties must be a list of property names")
        object.__setattr__(self, "properties", tuple(self.properties))
        unknown = [p for p in self.properties if p not in PROPERTIES]
        if unknown:
            fail(f"unknown property {unknown[0]!r}; known: {', '.join(PROPERTIES)}")
        if not _names(self.differentiable):
            fail("differentiable must be a list of input names")
        object.__setattr__(self, "differentiable", tuple(self.differentiable))
        for key in ("options", "init", "sweep", "property_options", "extra_inputs"):
            if not isinstance(getattr(self, key), Mapping):
                fail(f"{key} must be a table")
        # ---------------------------------------------------------------- expressions
        if self.range is not None:
            if not isinstance(self.range, (list, tuple)) or len(self.range) != 2:
                fail("range must be [lower, upper]")
            object.__setattr__(self, "range", tuple(self.range))
        if "range" in self.properties and self.range is None:
            raise CardError(f"{label} declares 'range' but gives no [lower, upper]")
        if "collapse" in self.properties and self.collapse is None:
            raise CardError(f"{label} declares 'collapse' but gives no value")
        for expr in [*(self.range or ()), *([self.collapse] if self.collapse is not None else [])]:
            if not _is_expression(expr):
                fail(f"expression {expr!r} must be a number or a string")
            if not _is_number(expr):
                try:
                    _parse(str(expr))
                except CardError as err:
                    fail(err.message)
        # ---------------------------------------------------------------- reference
        if "reference" in self.properties and not self.reference:
            raise CardError(f"{label} declares 'reference' but names no function")
        if self.reference is not None:
            mod, sep, attr = str(self.reference).partition(":")
            if not isinstance(self.reference, str) or not (mod and sep and attr):
                fail(f"reference must be 'module:function', got {self.reference!r}")
        # ---------------------------------------------------------------- sizes, tolerances
        for lo_hi, nm in ((self.batch, "batch"), (self.dim, "dim")):
            if (
                not isinstance(lo_hi, (list, tuple))
                or len(lo_hi) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in lo_hi)
                or not 1 <= lo_hi[0] <= lo_hi[1]
            ):
                fail(f"{nm} must be [min, max] with integers 1 <= min <= max")
        object.__setattr__(self, "batch", tuple(self.batch))
        object.__setattr__(self, "dim", tuple(self.dim))
        if self.batch[0] < 2:
            fail("batch sizes start at 2")
        for key in ("rtol", "atol", "conditioning"):
            val = getattr(self, key)
            if not _is_number(val) or not math.isfinite(val) or val < 0:
                fail(f"{key} must be a finite number >= 0, got {val!r}")
        if not _is_number(self.timeout) or not math.isfinite(self.timeout) or self.timeout <= 0:
            fail(f"timeout must be a finite number of seconds > 0, got {self.timeout!r}")
        if not isinstance(self.max_examples, int) or isinstance(self.max_examples, bool):
            fail(f"max_examples must be an integer, got {self.max_examples!r}")
        if self.max_examples < 1:
            fail("max_examples must be >= 1")
        # ---------------------------------------------------------------- sweep
        sweep = {}
        for key, bounds in self.sweep.items():
            if (
                not isinstance(bounds, (list, tuple))
                or len(bounds) != 2
                or not all(_is_number(b) and math.isfinite(b) for b in bounds)
                or bounds[0] > bounds[1]
            ):
                fail(f"sweep {key!r} must be [low, high] with finite numbers low <= high")
            if key in self.options:
                fail(f"{key!r} is both an option and swept")
            sweep[key] = tuple(bounds)
        object.__setattr__(self, "sweep", sweep)
        # ---------------------------------------------------------------- options, inputs
        bad_props = [p for p in self.property_options if p not in PROPERTIES]
        if bad_props:
            fail(f"property_options for unknown property {bad_props[0]!r}")
        for p, opts in self.property_options.items():
            if not isinstance(opts, Mapping):
                fail(f"property_options.{p} must be a table")
        for nm, rows in self.extra_inputs.items():
            if nm in ("z1", "z2"):
                fail(f"extra input {nm!r} clashes with the two views")
            if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
                fail(f"extra input {nm!r} must give a number of rows >= 0 (0: a [D] vector)")
        allowed_inputs = {"z1", "z2", *self.extra_inputs}
        bad = [x for x in self.differentiable if x not in allowed_inputs]
        if bad:
            fail(f"differentiable input {bad[0]!r} does not exist")
        # ---------------------------------------------------------------- dtypes
        object.__setattr__(self, "dtypes", self._checked_dtypes(fail))

    def _checked_dtypes(self, fail: Any) -> tuple[str, ...] | dict[str, tuple[str, ...]] | None:
        def names(value: Any, where: str) -> tuple[str, ...]:
            if not _names(value) or not value:
                fail(f"{where} must be a non-empty list of dtype names ({', '.join(DTYPES)})")
            bad = [v for v in value if v not in DTYPES]
            if bad:
                fail(f"unknown dtype {bad[0]!r} in {where}; known: {', '.join(DTYPES)}")
            return tuple(dict.fromkeys(value))

        if self.dtypes is None:
            return None
        if isinstance(self.dtypes, Mapping):
            out = {}
            for prop, value in self.dtypes.items():
                if prop not in PROPERTIES:
                    fail(f"dtypes for unknown property {prop!r}")
                out[prop] = names(value, f"dtypes.{prop}")
                if prop in FLOAT64_ONLY and out[prop] != ("float64",):
                    fail(f"{prop} runs in float64 only (finite differences), not {out[prop]}")
            return out
        return names(self.dtypes, "dtypes")

    def dtypes_for(self, prop: str) -> tuple[str, ...]:
        """The dtypes in which property ``prop`` runs (see :attr:`dtypes`)."""
        if prop in FLOAT64_ONLY:
            return ("float64",)
        default = DEFAULT_DTYPES.get(prop, ("float64",))
        if isinstance(self.dtypes, Mapping):
            return self.dtypes.get(prop, default)
        return self.dtypes or default

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
        try:
            return cls(**kw)
        except TypeError as err:
            raise CardError(f"card {kw['name']!r}: {err}") from None


def load_card(path: str | Path) -> PropertyCard:
    """Read a TOML card from ``path``; every problem is a :class:`CardError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise CardError("card file not found", source=p)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise CardError(f"cannot read the card: {err}", source=p) from None
    except tomllib.TOMLDecodeError as err:
        raise CardError(f"invalid TOML: {err}", source=p) from None
    try:
        return PropertyCard.from_dict(data, default_name=p.stem)
    except CardError as err:
        raise CardError(err.message, source=p) from None


_RESOLVED: dict[str, Any] = {}


def resolve(spec: str) -> Any:
    """Import ``"package.module:attribute"`` (a loss, or a card's reference); cached."""
    if spec not in _RESOLVED:
        mod, sep, attr = spec.partition(":")
        if not sep or not mod or not attr:
            raise ValueError(f"expected 'module:function', got {spec!r}")
        obj: Any = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        _RESOLVED[spec] = obj
    return _RESOLVED[spec]
