"""``python -m experiments.runs`` on the file record: list, show, compare, unknown ids.

No database here; these always run (the database side is in ``test_records_db.py``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import runs as runs_cli
from experiments.runs import RunView, headline
from experiments.tracking import add_text_artifacts, make_experiment, run_experiment

REPO = Path(__file__).resolve().parents[2]


def toy_experiment(fail: bool = False):
    """A seeded, instant experiment with metrics (explicit and automatic steps), info, an
    artifact, printed output and a nested result."""
    ex = make_experiment("toy")

    @ex.config
    def config():
        n = 3  # noqa: F841
        lr = 0.1  # noqa: F841
        seed = 0  # noqa: F841  # declared: Sacred seeds the run with it (the command refuses
        # a seed an experiment does not declare)

    @ex.main
    def main(n, lr, _run):
        for i in range(n):
            _run.log_scalar("loss", 1.0 / (i + 1), 10 * (i + 1))
            _run.log_scalar("acc", 0.5 + 0.1 * i)
        _run.info["note"] = {"n": n}
        add_text_artifacts(_run, {"table.md": f"| n | {n} |\n"})
        print(f"toy n={n}")
        if fail:
            raise RuntimeError("toy failure")
        return {"total": n * lr, "n": n, "nested": {"a": 1.5, "b": [1, 2]}}

    return ex


def make_runs(runs_dir: Path, **db) -> None:
    """Runs 1 and 2 completed (n=3, n=4), run 3 failed; seeded."""
    run_experiment(toy_experiment(), {"n": 3, "seed": 1}, str(runs_dir), wandb=False, **db)
    run_experiment(toy_experiment(), {"n": 4, "seed": 1}, str(runs_dir), wandb=False, **db)
    with pytest.raises(RuntimeError, match="toy failure"):
        run_experiment(toy_experiment(True), {"n": 2, "seed": 1}, str(runs_dir), False, **db)


def section(text: str, title: str) -> dict[str, str]:
    """``key  value`` lines under ``title:`` in ``show`` output, as a dict."""
    lines = text.splitlines()
    start = lines.index(f"{title}:") + 1
    out = {}
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        key, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        out[key] = value
    return out


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = runs_cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _no_team_db(monkeypatch):
    monkeypatch.delenv("GESSL_DB_URL", raising=False)
    monkeypatch.delenv("GESSL_DB_OPTIONAL", raising=False)


@pytest.fixture
def three_runs(tmp_path) -> Path:
    make_runs(tmp_path)
    return tmp_path


def test_list_show_compare_from_the_runs_folder(three_runs, capsys):
    code, out, _ = cli(capsys, "list", "--runs", str(three_runs))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "id",
        "experiment",
        "status",
        "start",
        "(UTC)",
        "duration",
        "headline",
    ]
    rows = [line.split()[:3] for line in lines[2:-1]]
    assert rows == [["1", "toy", "COMPLETED"], ["2", "toy", "COMPLETED"], ["3", "toy", "FAILED"]]
    assert "n 3, total 0.3" in lines[2] and "n 4, total 0.4" in lines[3]
    assert lines[-1] == "3 runs"

    code, out, _ = cli(capsys, "list", "--runs", str(three_runs), "--status", "failed")
    assert code == 0 and out.splitlines()[-1] == "1 run" and "FAILED" in out

    code, out, _ = cli(capsys, "show", "1", "--runs", str(three_runs))
    assert code == 0
    assert "experiment   toy" in out and "status       COMPLETED" in out
    assert "commit" in out and "version" in out
    assert section(out, "config") == {"n": "3", "lr": "0.1", "seed": "1"}
    assert section(out, "result") == {
        "n": "3",
        "nested.a": "1.5",
        "nested.b": "[1, 2]",
        "total": "0.30000000000000004",  # exact
    }
    assert section(out, "metrics") == {
        "acc": "3 points, last 0.7 at step 2",  # Sacred's automatic steps 0, 1, 2
        "loss": "3 points, last 0.333333 at step 30",
    }
    assert section(out, "artifacts") == {"table.md": "10 bytes"}

    code, out, _ = cli(capsys, "show", "3", "--runs", str(three_runs))
    assert code == 0 and "failure      RuntimeError: toy failure" in out and "result: —" in out

    code, out, _ = cli(capsys, "compare", "1", "2", "--runs", str(three_runs))
    assert code == 0
    config = out[out.index("config:") : out.index("result:")].splitlines()
    assert config[0] == "config: 1 of 3 differ"
    assert config[1].split() == ["*", "n", "3", "4"]  # the differing key first, marked
    assert config[2].split()[:2] == ["lr", "0.1"] and not config[2].startswith("  *")
    result = out[out.index("result:") :].splitlines()
    assert result[0] == "result: 2 of 4 differ"
    assert {result[1].split()[1], result[2].split()[1]} == {"n", "total"}


def test_unknown_run_and_missing_folder_are_one_line_exit_2(three_runs, tmp_path, capsys):
    code, out, err = cli(capsys, "show", "99", "--runs", str(three_runs))
    assert (code, out) == (2, "")
    assert err == f"error: no run 99 in {three_runs}\n"
    code, _, err = cli(capsys, "compare", "1", "x", "--runs", str(three_runs))
    assert code == 2 and err == f"error: no run x in {three_runs}\n"
    code, _, err = cli(capsys, "list", "--runs", str(tmp_path / "nope"))
    assert code == 2 and err == f"error: no runs folder {tmp_path / 'nope'}\n"


def test_real_command_line_help_and_exit_codes(three_runs, capsys):
    env = {**os.environ, "PYTHONPATH": str(REPO), "GESSL_RUNS_DIR": str(three_runs)}
    env.pop("GESSL_DB_URL", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "experiments.runs", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
        )

    proc = run("--help")
    assert proc.returncode == 0 and "exit status:" in proc.stdout and "--db URL wins" in proc.stdout
    proc = run("list")  # $GESSL_RUNS_DIR
    assert proc.returncode == 0, proc.stderr
    assert cli(capsys, "list", "--runs", str(three_runs))[1] == proc.stdout
    proc = run("show", "7")
    assert proc.returncode == 2 and proc.stderr == f"error: no run 7 in {three_runs}\n"
    proc = run("frobnicate")
    assert proc.returncode == 2 and "usage:" in proc.stderr


def _view(experiment: str, result) -> RunView:
    return RunView("1", experiment, "COMPLETED", None, None, result=result)


def test_headlines_per_experiment():
    bounds = {
        "n_claims": 5,
        "holds": 2,
        "violated": ["x"],
        "inconclusive": [],
        "errors": [],
        "reproduction": {"r1": "reproduced", "r2": "not reproduced"},
    }
    assert headline(_view("bounds", bounds)) == "holds 2/3, violated 1, reproduced 1/2"
    sigma = {"final": {"sigma/held_out/plain": 4.5696, "sigma/held_out/gessl": 4.2392}, "steps": 2}
    assert headline(_view("sigma", sigma)) == "sigma held_out plain 4.57 gessl 4.239, steps 2"
    assert headline(_view("gessl_map", {"shard": "1/3", "jobs": 4, "jobs_total": 12})) == (
        "shard 1/3: jobs 4/12"
    )
    assert (
        headline(_view("pretrain", {"steps": 5, "knn": 0.51234, "x": 1})) == "steps 5, knn 0.5123"
    )
    # unknown experiments and results that do not fit their entry: a few scalars
    assert headline(_view("new", {"b": 2, "a": [1], "c": "z", "d": 1.0, "e": 9})) == "b 2, c z, d 1"
    assert headline(_view("bounds", {"holds": 1})) == "holds 1"
    assert headline(_view("toy", None)) == ""
