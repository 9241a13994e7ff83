"""The team database (``--sql URL``): same records as the file record, read back identically.

Tests marked ``needs_server`` use a fresh PostgreSQL database per test, created on the server of
``$GESSL_TEST_DB_URL`` (``.ci/run`` starts one and sets it) and dropped afterwards; they are
skipped when it is unset. The others need no server: an unreachable URL, ``--sql-optional``,
missing drivers, and the same record in a SQLite file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from experiments import runs as runs_cli
from experiments.records_db import DatabaseUnavailable, engine_url, mask_url, schema
from experiments.tracking import run_experiment, split_db_args
from tests.experiments.test_runs_cli import make_runs, section, toy_experiment

REPO = Path(__file__).resolve().parents[2]
TEST_DB = os.environ.get("GESSL_TEST_DB_URL")
UNREACHABLE = "postgresql://gessl:s3cret@127.0.0.1:1/gessl"  # nothing listens on port 1
BOUNDS = ["-m", "experiments.bounds", "with", "profile=tiny", 'claims=["infonce_mi_bound"]']
TOY = (  # the toy experiment behind the real command line (main_entry)
    "import sys\n"
    "from experiments.tracking import main_entry\n"
    "from tests.experiments.test_runs_cli import toy_experiment\n"
    "main_entry(toy_experiment())\n"
)

needs_server = pytest.mark.skipif(
    not TEST_DB,
    reason="GESSL_TEST_DB_URL is unset: set it to a PostgreSQL server URL where databases can "
    "be created (e.g. postgresql://gessl@127.0.0.1:55432/postgres; .ci/run starts one)",
)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_sqlalchemy = pytest.mark.skipif(
    not _have("sqlalchemy"), reason="SQLAlchemy is not installed (pip install 'gessl-lab[db]')"
)
needs_driver = pytest.mark.skipif(
    not (_have("sqlalchemy") and _have("psycopg")),
    reason="SQLAlchemy/psycopg are not installed (pip install 'gessl-lab[db]')",
)


@pytest.fixture(autouse=True)
def _no_team_db(monkeypatch):
    monkeypatch.delenv("GESSL_DB_URL", raising=False)
    monkeypatch.delenv("GESSL_DB_OPTIONAL", raising=False)


@pytest.fixture
def fresh_db():
    """The URL (plain ``postgresql://``) of a new, empty database; dropped afterwards."""
    import sqlalchemy as sa

    name = f"gessl_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(engine_url(TEST_DB), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(TEST_DB).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_cli(args: list[str], runs_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """``python <args>`` in the repository, records under ``runs_dir``, no team database."""
    base = {k: v for k, v in os.environ.items() if k not in ("GESSL_DB_URL", "GESSL_DB_OPTIONAL")}
    base.update(PYTHONPATH=str(REPO), GESSL_RUNS_DIR=str(runs_dir), WANDB_MODE="disabled", **env)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=base, timeout=300
    )


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = runs_cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _json(path: Path):
    return json.loads(path.read_text())


def _db_rows(url: str):
    """Every recorded run with its metrics (as metrics.json lays them out) and artifacts."""
    import sqlalchemy as sa

    t = schema()
    engine = sa.create_engine(engine_url(url))
    out = []
    with engine.connect() as conn:
        for run in conn.execute(sa.select(t.runs).order_by(t.runs.c.id)).mappings().all():
            metrics: dict = {}
            points = conn.execute(
                sa.select(t.metrics).where(t.metrics.c.run_id == run["id"]).order_by(t.metrics.c.id)
            ).mappings()
            for p in points:
                m = metrics.setdefault(p["name"], {"steps": [], "timestamps": [], "values": []})
                m["steps"].append(p["step"])
                m["values"].append(p["value"])
                m["timestamps"].append(p["timestamp"].isoformat())
            artifacts = conn.execute(
                sa.select(t.artifacts.c.name, t.artifacts.c.content)
                .where(t.artifacts.c.run_id == run["id"])
                .order_by(t.artifacts.c.id)
            ).all()
            sources = conn.execute(
                sa.select(t.run_sources.c.filename, t.sources.c.content)
                .join(t.sources, t.sources.c.id == t.run_sources.c.source_id)
                .where(t.run_sources.c.run_id == run["id"])
            ).all()
            out.append((dict(run), metrics, [tuple(a) for a in artifacts], dict(sources)))
    engine.dispose()
    return out


def _assert_same_as_files(url: str, runs_dir: Path) -> None:
    for run, metrics, artifacts, sources in _db_rows(url):
        d = runs_dir / run["file_id"]
        record = _json(d / "run.json")
        assert run["runs_dir"] == os.path.abspath(runs_dir)
        assert run["experiment"] == record["experiment"]["name"]
        assert run["status"] == record["status"]
        assert run["start_time"].isoformat() == record["start_time"]
        assert run["stop_time"].isoformat() == record["stop_time"]
        assert json.loads(run["config"]) == _json(d / "config.json")
        assert json.loads(run["result"]) == record.get("result")
        assert json.loads(run["info"]) == _json(d / "info.json")
        assert json.loads(run["host"]) == record["host"]
        assert run["gessl_commit"] == record["host"]["gessl_commit"]
        assert run["captured_out"] == (d / "cout.txt").read_text()
        assert (run["fail_trace"] or None) == ("".join(record.get("fail_trace", [])) or None)
        assert metrics == _json(d / "metrics.json")  # every series, step and timestamp
        assert artifacts == [(name, (d / name).read_bytes()) for name in record["artifacts"]]
        stored = {
            name: (runs_dir / path).read_text() for name, path in record["experiment"]["sources"]
        }
        assert sources == stored


# ---------------------------------------------------------------------------------- server


@needs_server
def test_two_command_line_runs_read_the_same_from_files_and_database(fresh_db, tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        proc = run_cli([*BOUNDS, f"seed={seed}", "jobs=1", "--sql", fresh_db], runs)
        assert proc.returncode == 0, proc.stderr[-3000:]
    listed = [
        run_cli(["-m", "experiments.runs", "list", *where], runs)
        for where in (["--runs", str(runs)], ["--db", fresh_db])
    ]
    assert [p.returncode for p in listed] == [0, 0], listed[1].stderr
    assert listed[0].stdout == listed[1].stdout
    rows = [line.split()[:3] for line in listed[0].stdout.splitlines()[2:-1]]
    assert rows == [["1", "bounds", "COMPLETED"], ["2", "bounds", "COMPLETED"]]
    assert listed[0].stdout.count("holds 1/1") == 2

    for args in (["show", "1"], ["show", "2"], ["compare", "1", "2"]):
        from_files = cli(capsys, *args, "--runs", str(runs))
        from_db = cli(capsys, *args, "--db", fresh_db)
        assert from_files[0] == from_db[0] == 0
        assert from_files[1] == from_db[1]
    assert "* seed" in from_db[1]
    _assert_same_as_files(fresh_db, runs)

    assert cli(capsys, "show", "99", "--db", fresh_db) == (
        2,
        "",
        f"error: no run 99 in {mask_url(fresh_db)}\n",
    )


@needs_server
def test_environment_variable_failed_run_and_source_precedence(
    fresh_db, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("GESSL_DB_URL", fresh_db)  # run_experiment's default database
    make_runs(tmp_path)
    capsys.readouterr()
    _assert_same_as_files(fresh_db, tmp_path)
    ((run3, *_),) = [r for r in _db_rows(fresh_db) if r[0]["file_id"] == "3"]
    assert run3["status"] == "FAILED" and "RuntimeError: toy failure" in run3["fail_trace"]

    from_env = cli(capsys, "show", "3")  # $GESSL_DB_URL
    assert from_env[0] == 0 and "failure      RuntimeError: toy failure" in from_env[1]
    assert cli(capsys, "show", "3", "--runs", str(tmp_path)) == from_env  # --runs beats the env
    monkeypatch.delenv("GESSL_DB_URL")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(capsys, "list", "--runs", str(empty), "--db", fresh_db) == cli(  # --db wins
        capsys, "list", "--runs", str(tmp_path)
    )


@needs_server
def test_sacreds_own_sql_flag_records_into_our_tables(fresh_db, tmp_path):
    import sqlalchemy as sa

    proc = run_cli(["-c", TOY, "-s", fresh_db, "with", "seed=3"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ((run, metrics, artifacts, _),) = _db_rows(fresh_db)
    assert (run["file_id"], run["status"], artifacts[0][0]) == ("1", "COMPLETED", "table.md")
    assert metrics["loss"]["steps"] == [10, 20, 30]
    engine = sa.create_engine(engine_url(fresh_db))
    assert not sa.inspect(engine).has_table("run")  # Sacred's SqlObserver never ran
    engine.dispose()


# ---------------------------------------------------------------------------------- no server


@needs_driver
def test_unreachable_database_stops_before_any_record(tmp_path):
    runs = tmp_path / "runs"
    proc = run_cli([*BOUNDS, "--sql", UNREACHABLE], runs)
    assert proc.returncode == 3 and proc.stdout == ""  # the environment's failure
    masked = "postgresql://gessl:***@127.0.0.1:1/gessl"
    assert proc.stderr.startswith(f"error: cannot reach database {masked} (")
    assert proc.stderr.count("\n") == 1 and "s3cret" not in proc.stderr
    assert not runs.exists() or not any(runs.iterdir())  # no file record, no W&B folder

    proc = run_cli(["-c", TOY, "--sql", UNREACHABLE, "--sql-optional", "with", "seed=3"], runs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "s3cret" not in proc.stderr
    assert warnings[0].startswith(f"warning: cannot reach database {masked} (")
    assert warnings[0].endswith("; running with the file record only")
    assert _json(runs / "1" / "run.json")["status"] == "COMPLETED"


@needs_driver
def test_unreachable_database_in_python_and_the_runs_command(tmp_path, monkeypatch, capsys):
    with pytest.raises(DatabaseUnavailable, match=r"postgresql://gessl:\*\*\*@127\.0\.0\.1:1/"):
        run_experiment(toy_experiment(), {"seed": 1}, str(tmp_path), wandb=False, sql=UNREACHABLE)
    assert not any(tmp_path.iterdir())
    code, out, err = cli(capsys, "list", "--db", UNREACHABLE)
    assert (code, out) == (3, "") and err.count("\n") == 1  # the environment's failure
    assert err.startswith("error: cannot reach database postgresql://gessl:***@127.0.0.1:1/gessl (")

    monkeypatch.setenv("GESSL_DB_OPTIONAL", "1")
    run = run_experiment(toy_experiment(), {"seed": 1}, str(tmp_path), False, sql=UNREACHABLE)
    assert run.status == "COMPLETED" and (tmp_path / "1" / "metrics.json").exists()
    assert "running with the file record only" in capsys.readouterr().err


@needs_sqlalchemy
def test_a_sqlite_store_reads_the_same_as_the_files(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    runs = tmp_path / "runs"
    make_runs(runs, sql=url)
    capsys.readouterr()
    _assert_same_as_files(url, runs)
    for args in (["list"], ["show", "1"], ["show", "3"], ["compare", "1", "2"]):
        from_files = cli(capsys, *args, "--runs", str(runs))
        assert from_files[0] == 0
        assert cli(capsys, *args, "--db", url) == from_files


def test_missing_drivers_name_the_extra(tmp_path, monkeypatch, capsys):
    hint = "pip install 'gessl-lab[db]'"
    body = "import sys\nsys.modules['sqlalchemy'] = None\n" + TOY
    proc = run_cli(["-c", body, "--sql", "postgresql://gessl@127.0.0.1/x"], tmp_path / "runs")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and hint in proc.stderr
    assert not (tmp_path / "runs").exists()
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    code, _, err = cli(capsys, "list", "--db", "postgresql://gessl@127.0.0.1/x")
    assert code == 2 and err == f"error: the database store needs SQLAlchemy and psycopg: {hint}\n"


@needs_sqlalchemy
def test_missing_psycopg_names_the_extra(monkeypatch):
    from experiments.records_db import connect

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(DatabaseUnavailable, match=r"pip install 'gessl-lab\[db\]'"):
        connect("postgresql://gessl@127.0.0.1:1/x")


def test_command_line_db_options_and_masking():
    argv = ["bounds", "with", "seed=1", "--sql", "postgresql://u:p@h/d", "-O", "-l", "INFO"]
    assert split_db_args(argv) == (
        ["bounds", "with", "seed=1", "-l", "INFO"],
        "postgresql://u:p@h/d",
        True,
    )
    assert split_db_args(["x", "-s", "sqlite://"]) == (["x"], "sqlite://", False)
    assert split_db_args(["x", "--sql=sqlite://"]) == (["x"], "sqlite://", False)
    with pytest.raises(ValueError, match="needs a database URL"):
        split_db_args(["x", "--sql"])
    assert mask_url("postgresql://u:p@ss@h:5/d?sslmode=require") == (
        "postgresql://u:***@h:5/d?sslmode=require"
    )
    assert mask_url("postgresql://u@h/d") == "postgresql://u@h/d"
    assert mask_url("postgresql://h/d?password=x&a=b") == "postgresql://h/d?password=***&a=b"
    assert engine_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert engine_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sacreds_sql_option_cannot_bypass_our_store(tmp_path):
    ex = toy_experiment()
    with pytest.raises(ValueError, match="SqlObserver cannot store these runs"):
        ex.run(options={"--sql": "sqlite://"})


@needs_sqlalchemy
def test_one_database_fed_by_two_runs_folders(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    for folder, n in (("a", 3), ("a", 4), ("b", 5)):
        run_experiment(
            toy_experiment(), {"n": n, "seed": 1}, str(tmp_path / folder), False, sql=url
        )
    capsys.readouterr()
    code, out, _ = cli(capsys, "list", "--db", url)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[2:-1]] == ["1#1", "1#3", "2"]
    code, out, err = cli(capsys, "show", "1", "--db", url)
    assert (code, out) == (2, "")
    assert err == f"error: run 1 is ambiguous in {url}: one of 1#1, 1#3\n"
    code, out, _ = cli(capsys, "show", "1#3", "--db", url)
    assert code == 0 and section(out, "config")["n"] == "5"


@needs_sqlalchemy
def test_a_database_failure_during_the_run_keeps_the_file_record(tmp_path, capsys):
    import sqlalchemy as sa

    from experiments.tracking import make_experiment

    url = f"sqlite:///{tmp_path / 'records.db'}"
    ex = make_experiment("outage")

    @ex.main
    def main(_run):
        engine = sa.create_engine(url)  # the database loses a table mid-run
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE gessl_metrics"))
        engine.dispose()
        _run.log_scalar("x", 1.0, 0)
        return {"ok": 1}

    run = run_experiment(ex, {"seed": 1}, str(tmp_path / "runs"), wandb=False, sql=url)
    assert run.status == "COMPLETED" and run.result == {"ok": 1}
    assert _json(tmp_path / "runs" / "1" / "metrics.json")["x"]["values"] == [1.0]
    warnings = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "database record stopped at metrics" in warnings[0]
    engine = sa.create_engine(url)  # the database record stopped where it failed
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT file_id, status FROM gessl_runs")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("1", "RUNNING")]
