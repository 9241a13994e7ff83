"""The generated docs (claims catalogue, experiment keys) are current and complete."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

from experiments.docs import (
    EXPERIMENTS,
    GENERATED,
    _attribute_docs,
    claims_markdown,
    config_entries,
    experiments_markdown,
)
from gessl.trainer.config import GeSSLConfig
from theory.claims import all_claims

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_checked_in_docs_are_current() -> None:
    """`python -m experiments.docs --check` (the real command) finds nothing stale."""
    r = _run("-m", "experiments.docs", "--check")
    assert r.returncode == 0, r.stderr
    for rel, make in GENERATED.items():
        assert (ROOT / rel).read_text() == make(), f"{rel} is stale"


def test_check_names_a_stale_file(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    for rel in GENERATED:
        shutil.copy(ROOT / rel, tmp_path / rel)
    stale = tmp_path / "docs" / "claims.md"
    stale.write_text(stale.read_text().replace("collapse_values", "old_name", 1))
    r = _run("-m", "experiments.docs", "--check", "--root", str(tmp_path))
    assert r.returncode == 1
    assert "docs/claims.md" in r.stderr and "docs/experiments.md" not in r.stderr
    r = _run("-m", "experiments.docs", "--root", str(tmp_path))  # regenerates it
    assert r.returncode == 0 and "wrote docs/claims.md" in r.stdout
    assert stale.read_text() == claims_markdown()


def test_catalogue_has_every_claim_with_its_fields() -> None:
    text = claims_markdown()
    for c in all_claims():
        assert f"\n## {c.id}\n" in text
        assert c.setting, f"claim {c.id} names no setting"
        section = text.split(f"\n## {c.id}\n", 1)[1].split("\n## ", 1)[0]
        for field in (c.statement, c.kind, c.provenance, c.source, c.setting):
            assert field in section, (c.id, field)


def test_bounds_list_prints_the_catalogue_and_leaves_no_record(tmp_path: Path) -> None:
    r = _run("-m", "experiments.bounds", "--list", env={"GESSL_RUNS_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    ids = [line.split()[0] for line in r.stdout.splitlines() if not line.startswith(" ")]
    assert ids == [c.id for c in all_claims()]
    assert list(tmp_path.iterdir()) == []


def test_every_config_key_is_documented() -> None:
    for name in EXPERIMENTS:
        entries = config_entries(name)
        assert entries, name
        undocumented = [key for key, _, doc in entries if not doc.strip()]
        assert not undocumented, f"{name}: keys without a meaning: {undocumented}"
    assert "| `gessl.inner_steps` | `1` | K, task-specific" in experiments_markdown()


def test_gessl_options_docs_parse_every_field() -> None:
    docs = _attribute_docs(GeSSLConfig)
    missing = [f.name for f in dataclasses.fields(GeSSLConfig) if not docs.get(f.name)]
    assert not missing
    assert docs["outer_lr"] == docs["weight_decay"]  # "outer_lr, optimizer, weight_decay: …"
    assert docs["lookahead_steps"].startswith("λ, the")
