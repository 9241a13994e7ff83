"""Claims and the map on a Dask cluster: the same numbers as jobs=1, a worker killed mid-run,
an unreachable scheduler, a missing extra, a suite-started local cluster that dies with the
command, and the SLURM job script."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed", reason="the 'dask' extra is not installed")
psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[2]
#: cheap claims of several kinds (identity, bound, rate) for the bounds runs
CLAIMS = "claims=['sigma_excess_identity', 'infonce_mi_bound', 'uniformity_closed_form', 'spectral_identity', 'task_generalization_rate', 'collapse_values']"  # noqa: E501
MAP = [
    "profile=tiny",
    "families=['subspace']",
    "sweep={'inner_lr': [0.1, 0.3]}",
    "seeds=2",
    "steps=4",
    "figures=False",
]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GESSL_DASK_SCHEDULER", None)
    env.update(WANDB_MODE="disabled", GESSL_PROGRESS="0", PYTHONPATH=str(ROOT), **extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask(*args: str) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("dask")
    return subprocess.Popen(
        [str(exe), *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.fixture
def dask_cluster():
    """A real scheduler and two single-threaded worker processes on 127.0.0.1, started with the
    `dask` command-line programs; yields (address, worker processes)."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")]
    workers = []
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "the scheduler did not start"
                time.sleep(0.3)
        for _ in range(2):
            workers.append(_dask("worker", address, "--nthreads", "1", "--no-dashboard"))
        procs += workers
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address, workers
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


def _run(module: str, runs: Path, *config: str, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{module}", "-F", str(runs), "with", *config],
        cwd=ROOT,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.iterdir() if p.name.isdigit()]
    return run


def _untimed(value):
    """``value`` without its wall-clock entries (the only numbers an engine may change)."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if "seconds" not in k and k != "figure"}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _claims(runs: Path) -> dict:
    data = json.loads((_only_run(runs) / "claims.json").read_text())
    claims = data["claims"] if isinstance(data, dict) else data
    return {c["claim_id"]: _untimed(c) for c in claims}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    """The claims of :data:`CLAIMS` checked in one process (``jobs=1``): the reference."""
    runs = tmp_path_factory.mktemp("one")
    one = _run("bounds", runs, "profile=tiny", CLAIMS, "jobs=1", "figures=False")
    assert one.returncode == 0, one.stderr[-2000:]
    return _claims(runs)


def test_claims_and_the_map_on_a_dask_cluster_equal_one_process(
    tmp_path, dask_cluster, one_process
):
    address, _ = dask_cluster
    far = _run("bounds", tmp_path / "far", "profile=tiny", CLAIMS, f"scheduler={address}",
               "figures=False")  # fmt: skip
    assert far.returncode == 0, far.stderr[-2000:]
    a, b = one_process, _claims(tmp_path / "far")
    assert len(a) == 6 and a == b  # verdicts and every number
    info = json.loads((_only_run(tmp_path / "far") / "run.json").read_text())
    assert info["result"]["jobs"] == f"dask scheduler {address}"
    # the map: every job's result equal
    one = _run("gessl_map", tmp_path / "map1", *MAP, "jobs=1")
    far = _run("gessl_map", tmp_path / "map2", *MAP, f"scheduler={address}")
    assert one.returncode == 0 and far.returncode == 0, far.stderr[-2000:]
    ma, mb = (
        json.loads((_only_run(tmp_path / d) / "map.json").read_text())["results"]
        for d in ("map1", "map2")
    )
    assert len(ma) > 0 and _untimed(ma) == _untimed(mb)


def test_a_worker_killed_mid_run_is_replaced_and_the_numbers_stay(
    tmp_path, dask_cluster, one_process
):
    address, workers = dask_cluster
    runs = tmp_path / "far"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.bounds",
            "-F",
            str(runs),
            "with",
            "profile=tiny",
            CLAIMS,
            f"scheduler={address}",
            "figures=False",
        ],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # kill one worker while a unit is running on it
    victim = psutil.Process(workers[0].pid)
    pids = {victim.pid, *(p.pid for p in victim.children(recursive=True))}
    with distributed.Client(address, timeout="30s") as client:
        (mine,) = [a for a, pid in client.run(os.getpid).items() if pid in pids]
        deadline = time.time() + 120
        while not client.processing(workers=[mine])[mine]:
            assert time.time() < deadline and proc.poll() is None, "no unit reached the victim"
            time.sleep(0.05)
    for p in [*victim.children(recursive=True), victim]:
        p.kill()  # SIGKILL: the worker (and its nanny) die mid-unit
    _out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    assert _claims(runs) == one_process


def test_an_unreachable_scheduler_or_a_missing_extra_is_one_line_and_no_record(tmp_path):
    port = _free_port()  # nothing listens there
    proc = _run("bounds", tmp_path / "runs", "profile=tiny", f"scheduler=tcp://127.0.0.1:{port}")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"scheduler tcp://127.0.0.1:{port}: cannot connect" in lines[0]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("[0-9]*"))
    # the same from the environment variable
    env = _env(GESSL_DASK_SCHEDULER=f"tcp://127.0.0.1:{port}")
    proc = _run("universality", tmp_path / "runs", "profile=tiny", env=env)
    assert proc.returncode == 2 and "cannot connect" in proc.stderr
    # without the extra: a Python that cannot import distributed
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import sys

            class _Block:
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] in ("distributed", "dask_jobqueue"):
                        raise ImportError(f"No module named {name!r}")
                    return None

            sys.meta_path.insert(0, _Block())
            """
        )
    )
    env = _env()
    env["PYTHONPATH"] = f"{blocker}{os.pathsep}{ROOT}"
    proc = _run("gessl_map", tmp_path / "runs", "profile=tiny", "cluster=local", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "needs the 'dask' extra" in proc.stderr and "pip install -e '.[dask]'" in proc.stderr
    proc = _run("bounds", tmp_path / "runs", "cluster=kubernetes")
    assert proc.returncode == 2 and "cluster must be one of ('local', 'slurm')" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_a_suite_started_local_cluster_dies_with_the_command(tmp_path, sig):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.bounds",
            "-F",
            str(tmp_path / "runs"),
            "with",
            "profile=tiny",
            "cluster=local",
            "jobs=2",
            "figures=False",
        ],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    main = psutil.Process(proc.pid)
    deadline = time.time() + 120
    tree: list = []
    while len([p for p in tree if "python" in p.name().lower()]) < 2:  # the 2 worker processes
        assert time.time() < deadline and proc.poll() is None, "the cluster did not start"
        time.sleep(0.2)
        try:
            tree = main.children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
    time.sleep(1.0)
    tree = main.children(recursive=True)
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    # SIGTERM / SIGHUP are handled (futures cancelled, cluster closed): 143 / 129
    assert proc.returncode == {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGHUP: 129}[sig]
    time.sleep(5)
    alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [(p.pid, p.cmdline()[:4]) for p in alive]


def test_the_slurm_cluster_writes_the_job_script_of_its_options():
    pytest.importorskip("dask_jobqueue")
    from experiments.parallel import DaskEngine, engine, slurm_cluster

    eng = engine(3, cluster="slurm", cluster_options={"queue": "cpu", "account": "lab"})
    assert isinstance(eng, DaskEngine) and eng.workers == 3
    cluster = slurm_cluster({"queue": "cpu", "account": "lab", "walltime": "02:00:00"})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p cpu", "#SBATCH -A lab", "#SBATCH -t 02:00:00", "--nthreads 1"):
        assert line in script
    assert "#SBATCH --cpus-per-task=1" in script
