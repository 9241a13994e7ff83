"""The properties a card can declare, each a check over one hypothesis-drawn example.

Every check draws what it needs from hypothesis' ``data`` object through a :class:`Context`,
which also records the example (inputs, options, transform, values) so that a failure can be
reported with its minimal falsifying example. Examples are drawn in float64 and rounded to the
property's dtype (``Context.dtype``) before the loss sees them; bounds, references and declared
values are computed in float64.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch.autograd.gradcheck import GradcheckError

from gessl.testing.card import CardError, PropertyCard, evaluate, resolve

__all__ = ["CHECKS", "TORCH_DTYPES", "Context", "Falsified", "resolve"]

_ELEMENTS = st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False, allow_subnormal=False)

#: card dtype names -> torch dtypes
TORCH_DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
#: in a dtype other than float64, tolerances are at least this many machine epsilons
TOLERANCE_EPS = 1000
#: ``stability``: largest row norm of the raw embeddings it draws
STABILITY_MAX_NORM = 30.0
#: ``stability``: evaluate every corner of the sweep box when there are at most this many
STABILITY_MAX_CORNERS = 64


class Falsified(AssertionError):
    """A property does not hold on the recorded example."""


@dataclass
class Context:
    """One property check's view of the loss, the card and hypothesis' draws."""

    fn: Callable[..., Any]
    card: PropertyCard
    data: Any
    prop: str = ""
    dtype: str = "float64"
    example: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.example.setdefault("dtype", self.dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]

    @property
    def rtol(self) -> float:
        return self._tol(self.card.rtol)

    @property
    def atol(self) -> float:
        return self._tol(self.card.atol)

    def _tol(self, tol: float) -> float:
        if self.dtype == "float64":
            return tol
        return max(tol, TOLERANCE_EPS * torch.finfo(self.torch_dtype).eps)

    def rounded(self, arr: np.ndarray) -> np.ndarray:
        """``arr`` as the loss will see it: rounded to the property's dtype (kept in float64)."""
        if self.dtype == "float64":
            return arr
        return torch.as_tensor(arr).to(self.torch_dtype).to(torch.float64).numpy()

    # ------------------------------------------------------------------ drawing
    def draw(self, strategy: st.SearchStrategy, label: str) -> Any:
        return self.data.draw(strategy, label=label)

    def matrix(self, rows: int, cols: int, label: str, columns_vary: bool) -> np.ndarray:
        arr = self.draw(
            arrays(np.float64, (rows, cols), elements=_ELEMENTS, fill=st.nothing()), label
        )
        c = self.card.conditioning
        assume(bool(np.all(np.linalg.norm(arr, axis=1) >= c)))
        if columns_vary and rows >= 2:
            assume(bool(np.all(arr.std(axis=0) >= c)))
        return arr

    def options(self) -> dict[str, Any]:
        opts = {**self.card.options, **self.card.property_options.get(self.prop, {})}
        for key, (lo, hi) in self.card.sweep.items():
            if isinstance(lo, int) and isinstance(hi, int):
                opts[key] = self.draw(st.integers(lo, hi), key)
            else:
                opts[key] = self.draw(st.floats(float(lo), float(hi), allow_nan=False), key)
        return opts

    def inputs(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Draw N, D, both views, the extra inputs and the options; record them."""
        n = self.draw(st.integers(*self.card.batch), "N")
        d = self.draw(st.integers(*self.card.dim), "D")
        x = {"z1": self.matrix(n, d, "z1", True), "z2": self.matrix(n, d, "z2", True)}
        for name, rows in self.card.extra_inputs.items():
            if rows == 0:
                x[name] = self.draw(arrays(np.float64, (d,), elements=_ELEMENTS), name)
            else:
                x[name] = self.matrix(rows, d, name, False)
        x = {k: self.rounded(v) for k, v in x.items()}
        opts = self.options()
        self.example.update({"N": n, "D": d, "options": opts, **x})
        return x, opts

    # ------------------------------------------------------------------ evaluating
    def call(
        self, x: dict[str, np.ndarray], opts: dict[str, Any], requires_grad: tuple[str, ...] = ()
    ) -> tuple[torch.Tensor, Any, dict]:
        t = {
            k: torch.tensor(v, dtype=self.torch_dtype, requires_grad=k in requires_grad)
            for k, v in x.items()
        }
        extras = {k: v for k, v in t.items() if k not in ("z1", "z2")}
        out = self.fn(t["z1"], t["z2"], **extras, **opts)
        loss = out.loss if hasattr(out, "loss") else out
        if not isinstance(loss, torch.Tensor):
            raise Falsified(f"the loss returned {type(out).__name__}, not a tensor or LossOutput")
        return loss, out, t

    def value(self, x: dict[str, np.ndarray], opts: dict[str, Any]) -> float:
        with torch.no_grad():
            loss, _, _ = self.call(x, opts)
        return float(loss)

    def close(self, a: float, b: float) -> bool:
        if a == b:  # covers equal infinities
            return True
        return abs(a - b) <= self.atol + self.rtol * max(abs(a), abs(b))

    def variables(self, x: dict[str, np.ndarray], opts: dict[str, Any]) -> dict[str, Any]:
        """Expression variables: N, D, the loss's own numeric defaults, then the options."""
        n, d = x["z1"].shape
        return {**_numeric_defaults(self.fn), "N": n, "D": d, **opts}


def _numeric_defaults(fn: Callable[..., Any]) -> dict[str, float]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {
        p.name: p.default
        for p in params
        if isinstance(p.default, (int, float)) and not isinstance(p.default, bool)
    }


# ---------------------------------------------------------------------- checks


def _assert_finite(ctx: Context, x: dict[str, np.ndarray], opts: dict[str, Any]) -> None:
    """Loss and terms are finite 0-dim tensors, and so are the differentiable inputs' gradients."""
    loss, out, t = ctx.call(x, opts, requires_grad=ctx.card.differentiable)
    if loss.dim() != 0:
        raise Falsified(f"loss has shape {tuple(loss.shape)}, expected a 0-dim tensor")
    terms = getattr(out, "terms", {}) or {}
    for name, val in {"loss": loss, **terms}.items():
        if not isinstance(val, torch.Tensor) or val.dim() != 0:
            raise Falsified(f"term {name!r} is not a 0-dim tensor")
        if not bool(torch.isfinite(val)):
            ctx.example["values"] = {name: float(val.detach())}
            raise Falsified(f"{name} is not finite in {ctx.dtype}: {float(val.detach())}")
    if loss.requires_grad:
        loss.backward()
        for name in ctx.card.differentiable:
            g = t[name].grad
            if g is not None and not bool(torch.isfinite(g).all()):
                ctx.example["values"] = {"loss": float(loss.detach())}
                raise Falsified(
                    f"the gradient with respect to {name} is not finite in {ctx.dtype} "
                    f"({int((~torch.isfinite(g)).sum())} of {g.numel()} entries)"
                )


def check_finite(ctx: Context) -> None:
    x, opts = ctx.inputs()
    _assert_finite(ctx, x, opts)


def check_range(ctx: Context) -> None:
    x, opts = ctx.inputs()
    v = ctx.value(x, opts)
    lo, hi = (evaluate(e, ctx.variables(x, opts)) for e in ctx.card.range)  # type: ignore[union-attr]
    ctx.example["values"] = {"loss": v, "lower": lo, "upper": hi}
    tol_lo = ctx.atol + ctx.rtol * abs(lo) if np.isfinite(lo) else 0.0
    tol_hi = ctx.atol + ctx.rtol * abs(hi) if np.isfinite(hi) else 0.0
    if not (lo - tol_lo <= v <= hi + tol_hi):
        raise Falsified(f"loss {v!r} outside the declared range [{lo!r}, {hi!r}]")


def check_collapse(ctx: Context) -> None:
    n = ctx.draw(st.integers(*ctx.card.batch), "N")
    d = ctx.draw(st.integers(*ctx.card.dim), "D")
    v = ctx.rounded(ctx.matrix(1, d, "v", False))[0]
    x = {"z1": np.tile(v, (n, 1)), "z2": np.tile(v, (n, 1))}
    for name, rows in ctx.card.extra_inputs.items():
        x[name] = (
            ctx.rounded(ctx.draw(arrays(np.float64, (d,), elements=_ELEMENTS), name))
            if rows == 0
            else np.tile(v, (rows, 1))
        )
    opts = ctx.options()
    ctx.example.update({"N": n, "D": d, "v": v, "options": opts})
    got = ctx.value(x, opts)
    want = evaluate(ctx.card.collapse, {**ctx.variables(x, opts), "norm2": float(v @ v)})  # type: ignore[arg-type]
    ctx.example["values"] = {"loss": got, "declared": want}
    if not ctx.close(got, want):
        raise Falsified(f"collapsed loss {got!r} != declared {want!r}")


def _orthogonal(ctx: Context, d: int) -> np.ndarray:
    seed = ctx.draw(st.integers(0, 2**32 - 1), "rotation_seed")
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# transforms: each draws its parameters, records them, and returns the transformed inputs


def _t_rotation(ctx: Context, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    q = _orthogonal(ctx, x["z1"].shape[1])
    ctx.example["Q"] = q
    return {k: v @ q for k, v in x.items()}


def _t_row_rescale(ctx: Context, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = x["z1"].shape[0]
    s = arrays(np.float64, (n,), elements=st.floats(0.1, 10.0), fill=st.nothing())
    a1, a2 = ctx.draw(s, "scale_z1"), ctx.draw(s, "scale_z2")
    ctx.example.update(scale_z1=a1, scale_z2=a2)
    return {**x, "z1": x["z1"] * a1[:, None], "z2": x["z2"] * a2[:, None]}


def _t_feature_affine(ctx: Context, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    d = x["z1"].shape[1]
    sa = arrays(np.float64, (d,), elements=st.floats(0.1, 10.0), fill=st.nothing())
    out = dict(x)
    for z in ("z1", "z2"):
        a, b = (
            ctx.draw(sa, f"a_{z}"),
            ctx.draw(arrays(np.float64, (d,), elements=_ELEMENTS), f"b_{z}"),
        )
        ctx.example.update({f"a_{z}": a, f"b_{z}": b})
        out[z] = x[z] * a + b
    return out


def _t_translation(ctx: Context, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    b = ctx.draw(arrays(np.float64, (x["z1"].shape[1],), elements=_ELEMENTS), "b")
    ctx.example["b"] = b
    return {**x, "z1": x["z1"] + b, "z2": x["z2"] + b}


def _t_batch_permutation(ctx: Context, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    p = np.array(ctx.draw(st.permutations(range(x["z1"].shape[0])), "permutation"))
    ctx.example["permutation"] = p
    return {**x, "z1": x["z1"][p], "z2": x["z2"][p]}


def _t_feature_permutation(ctx: Context, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    p = np.array(ctx.draw(st.permutations(range(x["z1"].shape[1])), "permutation"))
    ctx.example["permutation"] = p
    return {k: v[..., p] for k, v in x.items()}


def _t_view_swap(ctx: Context, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**x, "z1": x["z2"], "z2": x["z1"]}


_TRANSFORMS = {
    "rotation": _t_rotation,
    "row_rescale": _t_row_rescale,
    "feature_affine": _t_feature_affine,
    "translation": _t_translation,
    "batch_permutation": _t_batch_permutation,
    "feature_permutation": _t_feature_permutation,
    "view_swap": _t_view_swap,
}


def _invariance(name: str) -> Callable[[Context], None]:
    transform = _TRANSFORMS[name]

    def check(ctx: Context) -> None:
        x, opts = ctx.inputs()
        before = ctx.value(x, opts)
        after = ctx.value(transform(ctx, x), opts)
        ctx.example["values"] = {"loss": before, "loss_transformed": after}
        if not ctx.close(before, after):
            raise Falsified(f"loss changed under {name}: {before!r} -> {after!r}")

    check.__name__ = f"check_{name}"
    return check


def check_gradcheck(ctx: Context) -> None:
    x, opts = ctx.inputs()
    names = ctx.card.differentiable
    _, _, t = ctx.call(x, opts, requires_grad=names)

    def f(*diff):
        full = {**t, **dict(zip(names, diff, strict=True))}
        extras = {k: v for k, v in full.items() if k not in ("z1", "z2")}
        out = ctx.fn(full["z1"], full["z2"], **extras, **opts)
        return out.loss if hasattr(out, "loss") else out

    try:
        torch.autograd.gradcheck(f, tuple(t[n] for n in names), eps=1e-6, atol=1e-5, rtol=1e-4)
    except GradcheckError as err:
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        raise Falsified(
            "autograd and finite differences disagree: " + " ".join(lines[:6])
        ) from None


def check_reference(ctx: Context) -> None:
    x, opts = ctx.inputs()
    got = ctx.value(x, opts)
    spec = str(ctx.card.reference)
    try:
        ref = resolve(spec)
    except Exception as err:  # validated before the run; kept for direct callers
        raise CardError(
            f"reference {spec!r} cannot be loaded: {type(err).__name__}: {err}"
        ) from None
    extras = {k: v for k, v in x.items() if k not in ("z1", "z2")}
    try:
        want = float(ref(x["z1"], x["z2"], **extras, **opts))
    except Exception as err:  # the card's reference, not the loss under test, is at fault
        raise CardError(f"reference {spec!r} raised {type(err).__name__}: {err}") from None
    ctx.example["values"] = {"loss": got, "reference": want}
    if not ctx.close(got, want):
        raise Falsified(f"loss {got!r} != reference {want!r}")


def _scaled_rows(
    ctx: Context, rows: int, d: int, label: str, columns_vary: bool, scale: str
) -> np.ndarray:
    """A conditioned draw whose rows are rescaled to unit norm (``scale="unit"``) or to drawn
    norms in ``[1, STABILITY_MAX_NORM]`` (``"raw"``). Columns must keep the card's conditioning
    in proportion to the smallest rescaling (rescaling nearly parallel rows could otherwise
    produce the constant columns at which batch standardisation is singular)."""
    m = ctx.matrix(rows, d, label, columns_vary)
    if scale == "unit":
        norms = np.ones(rows)
    else:
        norms = ctx.draw(
            arrays(
                np.float64,
                (rows,),
                elements=st.floats(1.0, STABILITY_MAX_NORM, allow_subnormal=False),
                fill=st.nothing(),
            ),
            f"{label}_norms",
        )
    factor = norms / np.linalg.norm(m, axis=1)
    out = m * factor[:, None]
    if columns_vary and rows >= 2:
        assume(bool(np.all(out.std(axis=0) >= ctx.card.conditioning * factor.min())))
    return out


def _sweep_corners(ctx: Context) -> list[dict[str, Any]]:
    """The options at every corner of the card's sweep box (each swept option at its low or high
    end), or, for more than ``STABILITY_MAX_CORNERS`` corners, one corner drawn by hypothesis."""
    base = {**ctx.card.options, **ctx.card.property_options.get(ctx.prop, {})}
    keys = list(ctx.card.sweep)
    ends = [tuple(dict.fromkeys(ctx.card.sweep[k])) for k in keys]
    if math.prod(len(e) for e in ends) <= STABILITY_MAX_CORNERS:
        return [{**base, **dict(zip(keys, c, strict=True))} for c in itertools.product(*ends)]
    return [
        {**base, **{k: ctx.draw(st.sampled_from(e), k) for k, e in zip(keys, ends, strict=True)}}
    ]


def check_stability(ctx: Context) -> None:
    """Finite loss, terms and input gradients at the extremes of the declared options, on
    embeddings of realistic scale: unit-norm rows or raw rows (norms up to 30), and positive
    pairs either drawn independently or equal (an aligned, converged encoder)."""
    n = ctx.draw(st.integers(*ctx.card.batch), "N")
    d = ctx.draw(st.integers(*ctx.card.dim), "D")
    scale = ctx.draw(st.sampled_from(("unit", "raw")), "scale")
    aligned = ctx.draw(st.booleans(), "aligned")
    z1 = _scaled_rows(ctx, n, d, "z1", True, scale)
    x = {"z1": z1, "z2": z1.copy() if aligned else _scaled_rows(ctx, n, d, "z2", True, scale)}
    for name, rows in ctx.card.extra_inputs.items():
        if rows == 0:
            x[name] = ctx.draw(arrays(np.float64, (d,), elements=_ELEMENTS), name)
        else:
            x[name] = _scaled_rows(ctx, rows, d, name, False, scale)
    x = {k: ctx.rounded(v) for k, v in x.items()}
    ctx.example.update({"N": n, "D": d, "scale": scale, "aligned": aligned})
    for opts in _sweep_corners(ctx):
        ctx.example.update({"options": opts, **x})
        _assert_finite(ctx, x, opts)


CHECKS: dict[str, Callable[[Context], None]] = {
    "finite": check_finite,
    "range": check_range,
    "collapse": check_collapse,
    **{
        n: _invariance(n)
        for n in (
            "rotation",
            "row_rescale",
            "feature_affine",
            "translation",
            "batch_permutation",
            "feature_permutation",
            "view_swap",
        )
    },
    "gradcheck": check_gradcheck,
    "reference": check_reference,
    "stability": check_stability,
}
