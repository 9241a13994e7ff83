"""The property harness in several dtypes: the float32 ``stability`` property, ``dtypes`` in a
card, the dtype in reports, and card errors that exit 2 with one line instead of posing as a
failure of the loss under test."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gessl.losses import available_losses, builtin_card_path, get_loss
from gessl.testing import CardError, PropertyCard, check_loss, load_card
from gessl.testing.__main__ import main
from tests.gessl.naive_losses import dtype_recorder, naive_distance, naive_infonce

REPO = Path(__file__).resolve().parents[2]
NAIVE = "tests.gessl.naive_losses:naive_infonce"
FLOAT64_PROPERTIES = [
    "finite",
    "range",
    "collapse",
    "rotation",
    "row_rescale",
    "batch_permutation",
    "feature_permutation",
    "gradcheck",
    "reference",
]
# the built-in InfoNCE card without its `critic` option (the naive loss has only cosine)
NAIVE_CARD = f"""
name = "naive_infonce"
properties = {json.dumps([*FLOAT64_PROPERTIES, "stability"])}
range = ["log(1 + (N - 1) * exp(-2 / temperature))", "log(1 + (N - 1) * exp(2 / temperature))"]
collapse = "log(N)"
reference = "gessl.testing.references:infonce"

[sweep]
temperature = [0.01, 2.0]
"""


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gessl.testing", *args]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": path}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(*args), capture_output=True, text=True, cwd=REPO, env=_env(), timeout=300
    )


def _card(tmp_path: Path, text: str, name: str = "card.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------- (a) the naive InfoNCE


def test_float32_overflows_at_inverse_temperature_100():
    """Why unit-norm rows suffice: a cosine of 1 at τ = 0.01 is a logit of 100 > log(max f32)."""
    assert math.exp(100) > float(torch.finfo(torch.float32).max)
    assert math.log(float(torch.finfo(torch.float32).max)) < 88.8
    z = torch.eye(2, dtype=torch.float32)
    assert not torch.isfinite(naive_infonce(z, z, temperature=0.01))
    assert torch.isfinite(naive_infonce(z.double(), z.double(), temperature=0.01))


def test_stability_catches_exp_then_ratio_infonce_through_the_command(tmp_path):
    card = _card(tmp_path, NAIVE_CARD)
    proc = _run(NAIVE, "--card", str(card), "--max-examples", "10")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    rows = {ln.split()[1]: ln.split() for ln in lines if ln[:9].strip() in ("PASSED", "FAILED")}
    assert rows["stability"][:3] == ["FAILED", "stability", "float32"], proc.stdout
    assert "not finite in float32" in proc.stdout
    assert "falsifying example (float32):" in proc.stdout
    for prop in FLOAT64_PROPERTIES:  # every exact property holds in float64
        assert rows[prop][:3] == ["PASSED", prop, "float64"], proc.stdout
    assert "1 of 10 properties FAILED" in lines[0]


def test_stability_failure_in_json_names_the_dtype_and_the_temperature(tmp_path):
    card = _card(tmp_path, NAIVE_CARD)
    proc = _run(NAIVE, "--card", str(card), "--only", "stability", "--max-examples", "10", "--json")
    assert proc.returncode == 1, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    assert result["property"] == "stability" and result["dtype"] == "float32"
    assert result["status"] == "failed"
    example = result["example"]
    assert example["dtype"] == "float32"
    assert example["options"] == {"temperature": 0.01}
    assert example["scale"] == "unit"  # cosine similarities in [-1, 1] are enough to overflow
    assert example["values"]["loss"] in ("nan", "inf")  # strict JSON: no bare NaN


def test_our_infonce_holds_where_the_naive_one_fails(tmp_path):
    card = _card(tmp_path, NAIVE_CARD)
    proc = _run("gessl.losses:infonce", "--card", str(card), "--only", "stability,finite")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"PASSED +stability +float32", proc.stdout), proc.stdout


def test_builtin_infonce_card_catches_the_naive_loss_only_in_float32():
    """The issue's case: the naive loss holds every float64 property of InfoNCE's own card."""
    card = load_card(builtin_card_path("infonce"))
    card = dataclasses.replace(card, options={})  # the naive loss takes no critic
    report = check_loss(naive_infonce, card, max_examples=10, shrink=False)
    assert [r.name for r in report.failures()] == ["stability"], report.format()
    assert report["stability"].dtype == "float32"
    assert all(r.dtype == "float64" for r in report.results if r.name != "stability")


def test_stability_checks_the_gradient_too():
    card = PropertyCard(name="distance", properties=("stability",))
    result = check_loss(naive_distance, card, max_examples=20)["stability"]
    assert result.status == "failed" and "gradient with respect to z1" in result.message
    assert result.example["aligned"] is True
    assert result.example["values"]["loss"] == pytest.approx(0.0)  # the value itself is finite


# ------------------------------------------------------------------- (b) built-in losses


@pytest.mark.parametrize("name", available_losses())
def test_builtin_losses_pass_float32_stability(name):
    card = load_card(builtin_card_path(name))
    assert "stability" in card.properties
    assert card.dtypes_for("stability") == ("float32",)
    report = check_loss(get_loss(name), card, properties=["stability"], max_examples=8, seed=0)
    assert report.passed, report.format()
    assert [(r.name, r.dtype) for r in report.results] == [("stability", "float32")]


@pytest.mark.parametrize("name", ["infonce", "nt_xent", "moco", "swav"])
def test_contrastive_cards_reach_inverse_temperature_100(name):
    """Their stability runs at τ = 0.01, where an exp-then-ratio implementation overflows."""
    assert load_card(builtin_card_path(name)).sweep["temperature"][0] <= 0.01


# ------------------------------------------------------------------- (c) card errors, exit 2

_BASE = """name = "c"
properties = ["finite", "reference", "stability"]
reference = "gessl.testing.references:infonce"

[sweep]
temperature = [0.1, 1.0]
"""
# case -> (target, card text or None for no card file, substring of the one stderr line)
CARD_ERRORS = {
    "reference_module": (
        "gessl.losses:infonce",
        _BASE.replace("gessl.testing.references:", "no_such_module_xyz:"),
        "reference 'no_such_module_xyz:infonce' cannot be loaded",
    ),
    "reference_function": (
        "gessl.losses:infonce",
        _BASE.replace("references:infonce", "references:no_such_function"),
        "has no attribute 'no_such_function'",
    ),
    "reference_raises": (
        "gessl.losses:infonce",
        _BASE.replace(
            "gessl.testing.references:infonce", "tests.gessl.naive_losses:broken_reference"
        ),
        "raised RuntimeError: broken reference",
    ),
    "unknown_property": (
        "gessl.losses:infonce",
        _BASE.replace('"finite"', '"finit"'),
        "unknown property 'finit'",
    ),
    "malformed_toml": ("gessl.losses:infonce", "properties = [\n", "invalid TOML"),
    "card_not_found": ("gessl.losses:infonce", None, "card file not found"),
    "missing_target_module": ("no_such_module_xyz:loss", _BASE, "cannot load"),
    "missing_target_function": ("gessl.losses:no_such_loss", _BASE, "cannot load"),
    "unknown_dtype": (
        "gessl.losses:infonce",
        _BASE + '\n[dtypes]\nstability = ["float8"]\n',
        "unknown dtype 'float8'",
    ),
    "gradcheck_in_float32": (
        "gessl.losses:infonce",
        _BASE.replace('"finite"', '"gradcheck"') + '\n[dtypes]\ngradcheck = ["float32"]\n',
        "float64 only",
    ),
    "sweep_reversed": (
        "gessl.losses:infonce",
        _BASE.replace("[0.1, 1.0]", "[1.0, 0.1]"),
        "sweep 'temperature' must be [low, high]",
    ),
    "sweep_not_a_range": (
        "gessl.losses:infonce",
        _BASE.replace("[0.1, 1.0]", '"low"'),
        "sweep 'temperature' must be [low, high]",
    ),
    "sweep_unknown_option": (
        "gessl.losses:infonce",
        _BASE.replace("temperature =", "temprature ="),
        "unexpected keyword argument 'temprature'",
    ),
}


@pytest.fixture(scope="module")
def card_error_runs(tmp_path_factory):
    """Run every case's command at once (each costs an interpreter start), collect the results."""
    tmp = tmp_path_factory.mktemp("card_errors")
    procs = {}
    for case, (target, text, _) in CARD_ERRORS.items():
        card = tmp / f"{case}.toml"
        if text is not None:
            card.write_text(text)
        cmd = _command(target, "--card", str(card), "--max-examples", "3")
        procs[case] = (
            str(card),
            subprocess.Popen(
                cmd, cwd=REPO, env=_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            ),
        )
    out = {}
    for case, (card, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        out[case] = (card, proc.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("case", list(CARD_ERRORS))
def test_card_error_exits_2_with_one_line(case, card_error_runs):
    card, rc, stdout, stderr = card_error_runs[case]
    expected = CARD_ERRORS[case][2]
    assert rc == 2, (stdout, stderr)
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    assert expected in lines[0], lines[0]
    if not case.startswith("missing_target"):
        assert lines[0].startswith(f"error: {card}: "), lines[0]


# more card errors, found before or during the run: the same exit, checked in-process
CARD_ERRORS_IN_PROCESS = {
    "reference_signature": (
        "gessl.losses:infonce",
        _BASE.replace("references:infonce", "references:byol"),
        "reference 'gessl.testing.references:byol' cannot be called",
    ),
    "expression_unknown_variable": (
        "gessl.losses:infonce",
        'properties = ["range"]\nrange = [0, "log(N) / tau"]\n',
        "unknown variable 'tau'",
    ),
    "expression_not_evaluable": (
        "gessl.losses:infonce",
        'properties = ["range"]\nrange = [0, "1 / (N - N)"]\n',
        "division by zero",
    ),
    "expression_nan": (
        "gessl.losses:byol",
        'properties = ["range"]\nrange = ["inf - inf", 4]\n',
        "evaluates to nan",
    ),
    "conditioning_unsatisfiable": (
        "gessl.losses:byol",
        'properties = ["finite"]\nconditioning = 3.9\n',
        "no example of 'finite' satisfies conditioning",
    ),
    "reference_not_callable": (
        "gessl.losses:infonce",
        _BASE.replace("references:infonce", "references:__name__"),
        "is not callable",
    ),
}


@pytest.mark.parametrize("case", list(CARD_ERRORS_IN_PROCESS))
def test_more_card_errors_exit_2_with_one_line(case, tmp_path, capsys):
    target, text, expected = CARD_ERRORS_IN_PROCESS[case]
    card = _card(tmp_path, text)
    assert main([target, "--card", str(card), "--max-examples", "3"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {card}: ") and expected in err, err


def test_card_errors_raise_from_check_loss_instead_of_failing_the_loss():
    card = PropertyCard(name="x", properties=("reference",), reference="no_such_module_xyz:f")
    with pytest.raises(CardError, match="cannot be loaded"):
        check_loss(get_loss("byol"), card)

    card = PropertyCard(
        name="x", properties=("reference",), reference="tests.gessl.naive_losses:broken_reference"
    )
    with pytest.raises(CardError, match="raised RuntimeError: broken reference"):
        check_loss(get_loss("byol"), card, shrink=False)


def test_dtype_validation():
    with pytest.raises(CardError, match="unknown dtype 'float128'"):
        PropertyCard(name="x", properties=("finite",), dtypes=("float128",))
    with pytest.raises(CardError, match="dtypes for unknown property 'stabilty'"):
        PropertyCard(name="x", properties=("stability",), dtypes={"stabilty": ("float32",)})
    with pytest.raises(CardError, match="non-empty list"):
        PropertyCard(name="x", properties=("finite",), dtypes="float32")
    with pytest.raises(CardError, match="float64 only"):
        PropertyCard(name="x", properties=("gradcheck",), dtypes={"gradcheck": ("float32",)})


# ------------------------------------------------------------------- (d) dtypes are honoured


def test_default_dtypes():
    card = load_card(builtin_card_path("infonce"))
    assert card.dtypes is None
    assert {p: card.dtypes_for(p) for p in card.properties} == {
        **dict.fromkeys(FLOAT64_PROPERTIES, ("float64",)),
        "stability": ("float32",),
    }


def test_stability_listed_in_float64_runs_in_float64(tmp_path):
    text = NAIVE_CARD + '\n[dtypes]\nstability = ["float64"]\n'
    card = load_card(_card(tmp_path, text))
    report = check_loss(naive_infonce, card, properties=["stability"], max_examples=10)
    assert [(r.name, r.dtype) for r in report.results] == [("stability", "float64")]
    assert report.passed, report.format()  # exp(100) is finite in float64


def test_dtype_list_applies_to_every_property_but_gradcheck(tmp_path):
    text = NAIVE_CARD.replace("[sweep]", 'dtypes = ["float64", "float32"]\n\n[sweep]')
    card = load_card(_card(tmp_path, text))
    report = check_loss(
        naive_infonce,
        card,
        properties=["gradcheck", "collapse", "stability"],
        max_examples=10,
        shrink=False,
    )
    assert [(r.name, r.dtype) for r in report.results] == [
        ("gradcheck", "float64"),
        ("collapse", "float64"),
        ("collapse", "float32"),
        ("stability", "float64"),
        ("stability", "float32"),
    ]
    assert report["stability", "float64"].passed
    assert report["stability", "float32"].status == "failed"
    assert report["collapse", "float64"].passed
    assert re.search(r"PASSED +stability +float64", report.format())


def test_exact_properties_see_tensors_of_the_listed_dtype():
    seen: list[torch.dtype] = []
    card = PropertyCard(
        name="cos",
        properties=("finite", "rotation", "stability"),
        dtypes={"finite": ("float32",), "rotation": ("float16",), "stability": ("bfloat16",)},
    )
    loss = dtype_recorder(seen)
    for prop, dtype in (
        ("finite", torch.float32),
        ("rotation", torch.float16),
        ("stability", torch.bfloat16),
    ):
        seen.clear()
        report = check_loss(loss, card, properties=[prop], max_examples=5, shrink=False)
        assert report.passed, report.format()
        assert set(seen) == {dtype}


def test_float32_tolerance_still_catches_a_false_invariance():
    card = PropertyCard(name="vicreg", properties=("rotation",), dtypes=("float32",))
    result = check_loss(get_loss("vicreg"), card, shrink=False)["rotation", "float32"]
    assert result.status == "failed" and result.example["dtype"] == "float32"
