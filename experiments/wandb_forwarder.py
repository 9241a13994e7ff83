"""A Sacred observer that forwards a run to Weights & Biases.

Why our own: ``wandb.integration.sacred.WandbObserver`` starts a W&B run in its
constructor (even for ``print_config``), drops Sacred's step numbers and never finishes the run.
This forwarder starts W&B when the Sacred run starts, logs every metric against a custom x-axis
``sacred_step`` that keeps Sacred's steps, logs figures (image artifacts) and tables (from
``_run.info["wandb_tables"]``), and finishes the W&B run on completion, failure and interruption.

The W&B mode comes from ``WANDB_MODE``; when it is unset the forwarder sets it to ``offline``
before importing wandb, so nothing reaches the network unless the user asks for ``online``.
Any W&B error is reported once and disables the forwarder: the Sacred file record is the record
of truth and never depends on W&B.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any

from sacred.observers import RunObserver

__all__ = ["WandbForwarder"]

_IMAGE_TYPES = {".png", ".jpg", ".jpeg"}


class WandbForwarder(RunObserver):
    """Forward config, metrics, image artifacts, tables and the final status to W&B.

    Args:
        project: W&B project name.
        directory: where W&B writes its run folder (``<directory>/wandb/``).
        **init_kwargs: extra ``wandb.init`` arguments (never ``mode``: that is the environment's).
    """

    priority = 10  # below the file-storage observer (20): the file record is written first

    def __init__(
        self, project: str = "gessl-lab", directory: str | None = None, **init_kwargs: Any
    ) -> None:
        if "mode" in init_kwargs:
            raise ValueError("set WANDB_MODE in the environment instead of passing mode=")
        self.project = project
        self.directory = directory
        self.init_kwargs = init_kwargs
        self.run: Any = None
        self._wandb: Any = None
        self._defined: set[str] = set()
        self._tables: set[str] = set()
        self.disabled = False

    # ------------------------------------------------------------------ guarded calls
    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.disabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # W&B must never break or lose the Sacred run
            self.disabled = True
            print(
                f"[wandb-forwarder] {what} failed ({type(err).__name__}: {err}); W&B "
                "forwarding is off for this run, the Sacred record is unaffected",
                file=sys.stderr,
            )
            return None

    # ------------------------------------------------------------------ events
    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")  # one line from us instead of W&B's banner

        def start() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import wandb
            self._wandb = wandb
            if self.directory:
                os.makedirs(self.directory, exist_ok=True)
            self.run = wandb.init(
                project=self.project,
                name=f"{ex_info['name']}-{_id}",
                config={**dict(config), "sacred_id": _id, "sacred_command": command},
                dir=self.directory,
                **self.init_kwargs,
            )
            self.run.define_metric("sacred_step")

        self._guard("wandb.init", start)

    def log_metrics(self, metrics_by_name, info):
        if self.run is None:
            return

        def forward() -> None:
            for raw, m in metrics_by_name.items():
                name = raw.replace("*", "_")  # W&B reads '*' in define_metric as a glob
                if name not in self._defined:
                    self.run.define_metric(name, step_metric="sacred_step")
                    self._defined.add(name)
                for step, value in zip(m["steps"], m["values"], strict=True):
                    # no step=: metrics arrive grouped by name, so W&B's own step would not be
                    # monotonic across names; sacred_step is the x-axis instead
                    self.run.log({"sacred_step": step, name: value})

        self._guard("log", forward)

    def heartbeat_event(self, info, captured_out, beat_time, result):
        if self.run is None or not isinstance(info, dict):
            return
        tables = info.get("wandb_tables") or {}

        def forward() -> None:
            for name, table in tables.items():
                key = name + json.dumps(table, sort_keys=True, default=str)
                if key in self._tables:
                    continue
                self._tables.add(key)
                self.run.log(
                    {name: self._wandb.Table(columns=table["columns"], data=table["data"])}
                )

        self._guard("table", forward)

    def artifact_event(self, name, filename, metadata=None, content_type=None):
        if self.run is None:
            return
        ext = os.path.splitext(filename)[1].lower()

        def forward() -> None:
            if ext in _IMAGE_TYPES:
                self.run.log({f"figures/{os.path.splitext(name)[0]}": self._wandb.Image(filename)})
            else:
                self.run.save(filename, base_path=os.path.dirname(filename), policy="now")

        self._guard("artifact", forward)

    def _finish(self, status: str, exit_code: int, result: Any = None) -> None:
        if self.run is None:
            return

        def finish() -> None:
            self.run.summary["sacred_status"] = status
            if isinstance(result, dict):
                for k, v in result.items():
                    if isinstance(v, (int, float, str, bool)):
                        self.run.summary[f"result/{k}"] = v
            folder = getattr(self.run, "dir", None)
            mode = os.environ.get("WANDB_MODE", "offline")
            self.run.finish(exit_code=exit_code)
            if folder and mode == "offline":
                run_dir = os.path.dirname(os.path.normpath(folder))
                print(
                    f"W&B offline run: {run_dir} (upload later with `wandb sync {run_dir}`)",
                    file=sys.stderr,
                )

        self._guard("finish", finish)
        self.run = None

    def completed_event(self, stop_time, result):
        self._finish("COMPLETED", 0, result)

    def failed_event(self, fail_time, fail_trace):
        self._finish("FAILED", 1)

    def interrupted_event(self, interrupt_time, status):
        self._finish(status or "INTERRUPTED", 255)
