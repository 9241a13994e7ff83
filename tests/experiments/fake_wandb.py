"""A stand-in for the ``wandb`` module that records every call (injected by the tests)."""

from __future__ import annotations

import types


class FakeRun:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.logged: list[dict] = []
        self.defined: dict[str, str | None] = {}
        self.summary: dict = {}
        self.finished: int | None = None
        self.saved: list = []
        self.dir = None

    def define_metric(self, name, step_metric=None):
        self.defined[name] = step_metric

    def log(self, row):
        if self.finished is not None:
            raise RuntimeError("log after finish")
        self.logged.append(dict(row))

    def save(self, *args, **kwargs):
        self.saved.append(args)

    def finish(self, exit_code=0):
        self.finished = exit_code


def make_fake_wandb(fail_on: str | None = None) -> types.ModuleType:
    """A module with ``init``, ``Image`` and ``Table``; ``fail_on="log"`` makes logging raise."""
    mod = types.ModuleType("wandb")
    mod.runs = []

    def init(**kwargs):
        run = FakeRun(**kwargs)
        if fail_on == "log":

            def broken(row):
                raise ConnectionError("simulated W&B outage")

            run.log = broken
        mod.runs.append(run)
        return run

    mod.init = init
    mod.Image = lambda path: ("image", path)
    mod.Table = lambda columns, data: ("table", list(columns), [list(r) for r in data])
    return mod
