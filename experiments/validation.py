"""Every experiment's configuration, validated as a whole before a run (or a record) exists.

:func:`experiments.tracking.make_experiment` registers one Sacred config hook on every experiment.
It checks the keys the experiments share (data, model, GeSSL options, evaluation, training
lengths) wherever they appear, then the experiment's own keys (functions registered with
:func:`validates`). A bad value raises :class:`UsageError` with one line —
``<key>: <what is wrong> (allowed: …)`` — which the command line prints as ``error: …`` and
turns into exit status 2, before Sacred starts the run: no file record, no database record,
no W&B run.

Why a config hook and not a Sacred ingredient: an ingredient moves its keys under a prefix
(``data.dataset``), which would change every documented command; the hook sees the whole
configuration under the names users type.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from experiments.parallel import DaskEngine, check_reachable, default_jobs, engine
from experiments.pipeline import evaluate

__all__ = [
    "UsageError",
    "check_bool",
    "check_choice",
    "check_choices",
    "check_int",
    "check_keys",
    "check_number",
    "validate",
    "validates",
]


class UsageError(ValueError):
    """A bad configuration or command-line value (exit status 2 on the command line)."""


Validator = Callable[[Mapping[str, Any]], None]
_VALIDATORS: dict[str, list[Validator]] = {}


def _allowed(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _unknown(key: str, value: Any, allowed: list[Any]) -> UsageError:
    """``<key>: unknown value …`` with the closest allowed value, if one is close."""
    import difflib

    names = [str(a) for a in allowed]
    close = difflib.get_close_matches(str(value), names, n=1) if isinstance(value, str) else []
    hint = f"did you mean {close[0]!r}? " if close else ""
    return UsageError(f"{key}: unknown value {value!r} ({hint}allowed: {_allowed(allowed)})")


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise _unknown(key, value, allowed)


def check_choices(key: str, values: Any, allowed: Iterable[Any], empty: bool = True) -> None:
    """A list whose every item is one of ``allowed``."""
    allowed = list(allowed)
    if not isinstance(values, (list, tuple)):
        raise UsageError(f"{key}: expected a list, got {values!r} (allowed items: …)")
    if not values and not empty:
        raise UsageError(f"{key}: expected at least one value (allowed: {_allowed(allowed)})")
    for v in values:
        if v not in allowed:
            raise _unknown(key, v, allowed)


def check_int(key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{key}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise UsageError(f"{key}: must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise UsageError(f"{key}: must be <= {maximum}, got {value}")


def check_number(key: str, value: Any, gt: float | None = None, ge: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise UsageError(f"{key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{key}: expected a finite number, got {value!r}")
    if gt is not None and not value > gt:
        raise UsageError(f"{key}: must be > {gt:g}, got {value!r}")
    if ge is not None and not value >= ge:
        raise UsageError(f"{key}: must be >= {ge:g}, got {value!r}")


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise UsageError(f"{key}: expected True or False, got {value!r}")


def check_keys(key: str, mapping: Any, allowed: Iterable[str]) -> None:
    """A dictionary whose keys are all in ``allowed``."""
    allowed = sorted(allowed)
    if not isinstance(mapping, Mapping):
        raise UsageError(f"{key}: expected a dictionary, got {mapping!r}")
    for k in mapping:
        if k not in allowed:
            raise UsageError(f"{key}: unknown key {k!r} (allowed: {_allowed(allowed) or 'none'})")


def validates(experiment: Any) -> Callable[[Validator], Validator]:
    """Register ``fn(config)`` as a validator of ``experiment`` (run after the shared checks)."""

    def register(fn: Validator) -> Validator:
        _VALIDATORS.setdefault(experiment.path, []).append(fn)
        return fn

    return register


# ----------------------------------------------------------------------------- shared keys
def _methods() -> list[str]:
    from gessl.methods import available_methods

    return list(available_methods())


def _datasets() -> list[str]:
    from gessl.data import available_datasets

    return available_datasets()


def _encoders() -> list[str]:
    from gessl.models import available_backbones

    return available_backbones()


def check_method_options(key: str, method: str, options: Any) -> None:
    """Known option names, and values the method accepts: the method is built with them and
    its loss taken once on a small seeded batch (what the first training step would do), so a
    value it refuses (``temperature=-1``) is refused here, before any record."""
    import torch

    from gessl.methods import METHODS, build_method
    from gessl.models import Flatten

    check_keys(key, options, METHODS[method].defaults)
    if not options:
        return
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(8, 6, generator=gen)
    b = a + 0.1 * torch.randn(8, 6, generator=gen)
    try:
        m = build_method(method, Flatten(6), proj_dims=(6,), **options)
        m.loss(dict(m.online_params()), a, b, m.targets(a, b))
    except (ValueError, TypeError) as err:
        raise UsageError(f"{key}: {(str(err).splitlines() or [''])[0]}") from None


def check_gessl(key: str, options: Any, **extra: Any) -> None:
    """A dictionary of :class:`gessl.trainer.GeSSLConfig` fields that builds a valid config."""
    from gessl.trainer.config import GeSSLConfig

    fields = [f.name for f in dataclasses.fields(GeSSLConfig)]
    check_keys(key, options, fields)
    defaults = GeSSLConfig()
    for name, value in options.items():  # a number where the config has one, before building
        default = getattr(defaults, name)
        if isinstance(default, int | float) and not isinstance(default, bool):
            check_number(f"{key}.{name}", value)
    try:
        GeSSLConfig(**{**extra, **options})
    except (TypeError, ValueError) as err:
        raise UsageError(f"{key}: {str(err).splitlines()[0]}") from None


def _evaluation_keys() -> dict[str, inspect.Parameter]:

    params = inspect.signature(evaluate).parameters
    return {k: p for k, p in params.items() if k not in ("method", "splits", "seed")}


#: keys renamed since an earlier release: refused with the new name (one vocabulary)
RENAMED = {
    "evaluation.report_critic": "evaluation.sigma_critic",
    "evaluation.report_temperature": "evaluation.sigma_temperature",
}


def check_renamed(key: str, mapping: Any) -> None:
    """A key of ``mapping`` (the value of ``key``) that was renamed: one line with the new name."""
    if isinstance(mapping, Mapping):
        for k in mapping:
            old = f"{key}.{k}"
            if old in RENAMED:
                raise UsageError(f"{old} was renamed: use {RENAMED[old]}")


def check_evaluation(key: str, options: Any) -> None:
    from gessl.eval import PROVIDERS
    from gessl.tasks import CRITICS

    check_renamed(key, options)
    check_keys(key, options, _evaluation_keys())
    at_least = {
        "knn_k": 1,
        "few_shot_way": 2,
        "few_shot_shot": 1,
        "few_shot_episodes": 1,
        "report_tasks": 1,
        "report_samples": 2,
        "provider_steps": 1,
    }
    for k, v in options.items():
        if k in at_least:
            check_int(f"{key}.{k}", v, at_least[k])
        elif k in ("knn_temperature", "sigma_temperature"):
            check_number(f"{key}.{k}", v, gt=0)
        elif k == "provider":
            check_choice(f"{key}.provider", v, PROVIDERS)
        elif k == "sigma_critic":
            check_choice(f"{key}.sigma_critic", v, [*CRITICS, "method"])


def check_device_key(key: str, value: Any) -> None:
    """A device this machine has (``auto``, ``cpu``, ``cuda``, ``cuda:<i>``, ``mps``)."""
    from gessl.devices import resolve_device

    try:
        resolve_device(value)
    except ValueError as err:
        raise UsageError(f"{key}: {err}") from None


def _shared(config: Mapping[str, Any]) -> None:
    """The keys several experiments share, checked wherever they appear."""
    c = config
    if "seed" in c:  # numpy's generators take seeds in [0, 2**32)
        check_int("seed", c["seed"], 0, 2**32 - 1)
    if "method" in c:
        check_choice("method", c["method"], _methods())
        if "method_options" in c:
            check_method_options("method_options", c["method"], c["method_options"])
    if "methods" in c:
        check_choices("methods", c["methods"], _methods(), empty=False)
    if "mode" in c:
        check_choice("mode", c["mode"], ("gessl", "plain"))
    if "dataset" in c:
        check_choice("dataset", c["dataset"], _datasets())
    if c.get("data_root") is not None and not isinstance(c["data_root"], str):
        raise UsageError(f"data_root: expected a folder path, got {c['data_root']!r}")
    if "dataset" in c:  # its files, before any record: a missing folder is the environment's
        from gessl.data.datasets import dataset_entry

        locate = dataset_entry(c["dataset"]).locate
        if locate is not None:
            locate(c.get("data_root"))  # FileNotFoundError: exit 3, one line, no record
    # an experiment that reads a user's checkpoint also takes a "module:function" encoder, and
    # None for the dataset's default
    own = "checkpoint" in c and (c.get("encoder") is None or ":" in str(c.get("encoder")))
    if "encoder" in c and not own:
        check_choice("encoder", c["encoder"], _encoders())
    if "encoders" in c:
        check_choices("encoders", c["encoders"], _encoders(), empty=False)
    for key, minimum in (("width", 1), ("tasks_per_step", 1), ("n_samples", 2)):
        if key in c:
            check_int(key, c[key], minimum)
    if "steps" in c and c["steps"] is not None:
        check_int("steps", c["steps"], 1)
    if "outer_lr" in c:
        check_number("outer_lr", c["outer_lr"], gt=0)
    if "proj_dims" in c:
        dims = c["proj_dims"]
        if not isinstance(dims, (list, tuple)) or not dims:
            raise UsageError(f"proj_dims: expected a non-empty list of sizes, got {dims!r}")
        for i, d in enumerate(dims):
            check_int(f"proj_dims[{i}]", d, 1)
    if "seen_classes" in c and c["seen_classes"] is not None:
        seen = c["seen_classes"]
        if not isinstance(seen, (list, tuple)) or len(seen) < 2:
            raise UsageError(f"seen_classes: expected a list of at least 2 classes, got {seen!r}")
        classes = None
        if "dataset" in c:
            from gessl.data.datasets import dataset_entry

            classes = dataset_entry(c["dataset"]).classes
        for i, k in enumerate(seen):
            check_int(f"seen_classes[{i}]", k, 0, None if classes is None else classes - 1)
    if "gessl" in c:
        extra = {}
        if "tasks_per_step" in c:
            extra["tasks_per_step"] = c["tasks_per_step"]
        if "mode" in c:
            extra["mode"] = c["mode"]
        check_gessl("gessl", c["gessl"], **extra)
    if "evaluation" in c:
        check_evaluation("evaluation", c["evaluation"])
    if "checkpoint_every" in c:
        check_int("checkpoint_every", c["checkpoint_every"], 0)
    if "jobs" in c:
        check_int("jobs", c["jobs"], 0)
    if "scheduler" in c:  # the engine: before any record, the scheduler must answer
        _check_engine(c)
    elif "jobs" in c:
        _warn_jobs(c["jobs"])
    if "device" in c:
        check_device_key("device", c["device"])
    if "precision" in c:
        from gessl.devices import PRECISIONS

        check_choice("precision", c["precision"], PRECISIONS)
    for key in ("figures", "strict", "memory", "bounds_end_to_end"):
        if key in c:
            check_bool(key, c[key])


def _check_engine(c: Mapping[str, Any]) -> None:
    """The engine keys (``jobs``, ``scheduler``, ``cluster``, ``cluster_options``): a Dask
    engine needs the ``dask`` extra, and a named scheduler must accept a connection now."""

    for key in ("scheduler", "cluster"):
        if c.get(key) is not None and not isinstance(c[key], str):
            raise UsageError(f"{key}: expected a string or None, got {c[key]!r}")
    if c.get("cluster_options") is not None and not isinstance(c["cluster_options"], dict):
        raise UsageError(f"cluster_options: expected a dict, got {c['cluster_options']!r}")
    eng = engine(c.get("jobs", 0), c.get("scheduler"), c.get("cluster"), c.get("cluster_options"))
    if isinstance(eng, DaskEngine):
        if eng.scheduler is not None:
            check_reachable(eng.scheduler)
    else:
        _warn_jobs(c.get("jobs", 0))


#: the resident memory of one worker process (torch and the suite imported, one check running)
WORKER_MB = 420


def _warn_jobs(jobs: int) -> None:
    """One warning line when ``jobs`` asks for more workers than this process has cores."""
    import sys

    cores = default_jobs()
    if jobs > cores:
        print(
            f"warning: jobs={jobs} on {cores} usable core{'s' if cores != 1 else ''}: the workers "
            f"share them (no faster) and take about {jobs * WORKER_MB / 1024:.1f} GiB "
            f"({WORKER_MB} MB each); jobs=0 uses one per core",
            file=sys.stderr,
        )


def validate(experiment: str, config: Mapping[str, Any]) -> None:
    """Raise :class:`UsageError` for the first bad value of ``config`` (the shared keys first,
    then the experiment's own validators). Any ``ValueError`` a validator raises counts as one."""
    try:
        _shared(config)
        for fn in _VALIDATORS.get(experiment, []):
            fn(config)
    except UsageError:
        raise
    except ValueError as err:
        raise UsageError(str(err).splitlines()[0]) from None
