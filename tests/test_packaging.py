"""The package's metadata admits what users have; constraints.txt pins a set inside those ranges."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [Requirement(r) for r in PROJECT["dependencies"]] + [
    Requirement(r) for extra in PROJECT["optional-dependencies"].values() for r in extra
]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line).groups()
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_python_versions_are_not_capped() -> None:
    spec = SpecifierSet(PROJECT["requires-python"])
    assert all(spec.contains(v) for v in ("3.11", "3.12", "3.13", "3.14"))
    assert not spec.contains("3.10")


def test_dependencies_are_ranges_not_pins() -> None:
    for req in REQUIREMENTS:
        assert not any(s.operator in ("==", "===") for s in req.specifier), str(req)


def test_torch_range_admits_recent_releases() -> None:
    (torch,) = [r for r in REQUIREMENTS if r.name == "torch"]
    assert all(torch.specifier.contains(v) for v in ("2.4.0", "2.6.0", "2.13.0"))
    assert not torch.specifier.contains("3.0.0")


def test_constraints_pin_every_dependency_inside_its_range() -> None:
    pins = _pins()
    for req in REQUIREMENTS:
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]} outside {req.specifier}"
        )
    assert pins["torch"] == Version("2.13.0")
