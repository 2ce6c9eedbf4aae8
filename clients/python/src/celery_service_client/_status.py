"""What the service says about its runs and itself: result records, output pages, the loaded
config and the probes, as frozen dataclasses built from its JSON (see :mod:`._models` for the
rules: unknown fields ignored, a promised field missing or mistyped is a
:class:`~celery_service_client.TransportError`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ._models import Json, field_of, object_of, optional_field_of, parse_time

__all__ = [
    "Check",
    "ConfigStatus",
    "OutputLine",
    "OutputPage",
    "Readiness",
    "Record",
    "ReloadFailure",
    "ResultsPage",
    "RunControlConfig",
]


@dataclass(frozen=True)
class Record:
    """One run as the result store keeps it (``GET /results``): every run, sync or async, of
    every replica, kept for ``--result-retention``.

    ``path`` is the task's url (``tendb-cluster/demo1``); ``status`` is ``running``, ``ok``,
    ``failed``, ``killed``, ``cancelled``, ``timed_out``, ``shutdown``, ``replaced`` or ``lost``;
    times are milliseconds since the Unix epoch (``start``/``end`` give them as datetimes).
    """

    session_id: str
    task: str
    cluster_type: str
    path: str
    mode: str
    args: Json
    command: str
    host: str
    instance: str
    version: str
    status: str
    done: bool
    start_ms: int
    end_ms: int | None
    duration_ms: int | None
    exit_code: int | None
    signal: int | None
    stdout_last: str
    stderr_last: str
    error: str
    heartbeat_ms: int
    kill_requested: bool

    @property
    def start(self) -> datetime:
        """``start_ms`` as an aware UTC datetime."""
        return _from_ms(self.start_ms)

    @property
    def end(self) -> datetime | None:
        """``end_ms`` as an aware UTC datetime, ``None`` while it runs."""
        return None if self.end_ms is None else _from_ms(self.end_ms)

    @classmethod
    def from_json(cls, value: Json) -> Record:
        what = "record"
        obj = object_of(value, what)
        strings = (
            "session_id",
            "task",
            "cluster_type",
            "path",
            "mode",
            "command",
            "host",
            "instance",
            "version",
            "status",
            "stdout_last",
            "stderr_last",
            "error",
        )
        fields: dict[str, Any] = {k: field_of(obj, k, str, what) for k in strings}
        for key in ("start_ms", "heartbeat_ms"):
            fields[key] = field_of(obj, key, int, what)
        for key in ("end_ms", "duration_ms", "exit_code", "signal"):
            fields[key] = optional_field_of(obj, key, int, what)
        for key in ("done", "kill_requested"):
            fields[key] = field_of(obj, key, bool, what)
        return cls(args=obj.get("args"), **fields)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


@dataclass(frozen=True)
class ResultsPage:
    """One page of ``GET /results``, newest first; ``next`` is the cursor of the next (older)
    page, ``None`` on the last one."""

    records: list[Record]
    next: str | None

    @classmethod
    def from_json(cls, value: Json) -> ResultsPage:
        obj = object_of(value, "results page")
        records = field_of(obj, "records", list, "results page")
        return cls(
            records=[Record.from_json(r) for r in records],
            next=optional_field_of(obj, "next", str, "results page"),
        )


@dataclass(frozen=True)
class OutputLine:
    """One line a run printed: when, on which ``stream`` (``stdout``/``stderr``), and its text."""

    time: datetime
    stream: str
    text: str

    @classmethod
    def from_json(cls, value: Json) -> OutputLine:
        obj = object_of(value, "output line")
        return cls(
            time=parse_time(field_of(obj, "time", str, "output line")),
            stream=field_of(obj, "stream", str, "output line"),
            text=field_of(obj, "text", str, "output line"),
        )


@dataclass(frozen=True)
class OutputPage:
    """A page of a run's output: its ``lines``, the ``next_offset`` to ask for next, and
    whether the run has ended and every line of it has been given (``done``)."""

    lines: list[OutputLine]
    next_offset: int
    done: bool

    @classmethod
    def from_json(cls, value: Json) -> OutputPage:
        obj = object_of(value, "output page")
        return cls(
            lines=[OutputLine.from_json(x) for x in field_of(obj, "lines", list, "output page")],
            next_offset=field_of(obj, "next_offset", int, "output page"),
            done=field_of(obj, "done", bool, "output page"),
        )


@dataclass(frozen=True)
class ReloadFailure:
    """Why the newest version of the config file was rejected (every error, one a line)."""

    message: str
    at: datetime

    @classmethod
    def from_json(cls, value: Json) -> ReloadFailure:
        obj = object_of(value, "reload failure")
        return cls(
            message=field_of(obj, "message", str, "reload failure"),
            at=parse_time(field_of(obj, "at", str, "reload failure")),
        )


@dataclass(frozen=True)
class RunControlConfig:
    """The run-control flags the service runs with; durations as the service spells them
    (``30s``, ``10m``), ``None`` for no default timeout or no ``--max-running``."""

    process_tracking: str
    process_tracking_detail: str
    default_timeout: str | None
    max_running: int | None
    idempotency_window: str
    shutdown_timeout: str

    @classmethod
    def from_json(cls, value: Json) -> RunControlConfig:
        what = "run control"
        obj = object_of(value, what)
        return cls(
            process_tracking=field_of(obj, "process_tracking", str, what),
            process_tracking_detail=field_of(obj, "process_tracking_detail", str, what),
            default_timeout=optional_field_of(obj, "default_timeout", str, what),
            max_running=optional_field_of(obj, "max_running", int, what),
            idempotency_window=field_of(obj, "idempotency_window", str, what),
            shutdown_timeout=field_of(obj, "shutdown_timeout", str, what),
        )


@dataclass(frozen=True)
class ConfigStatus:
    """The served task config (``GET /-/config``, ``POST /-/reload``): ``generation`` counts
    successful loads from 1; ``last_error`` is why the newest file was rejected, if it was;
    ``run_control`` is given by ``/-/config`` only."""

    generation: int
    loaded_at: datetime
    checksum: str
    task_count: int
    config_path: str
    last_error: ReloadFailure | None
    run_control: RunControlConfig | None

    @classmethod
    def from_json(cls, value: Json) -> ConfigStatus:
        what = "config status"
        obj = object_of(value, what)
        last_error = obj.get("last_error")
        run_control = obj.get("run_control")
        return cls(
            generation=field_of(obj, "generation", int, what),
            loaded_at=parse_time(field_of(obj, "loaded_at", str, what)),
            checksum=field_of(obj, "checksum", str, what),
            task_count=field_of(obj, "task_count", int, what),
            config_path=field_of(obj, "config_path", str, what),
            last_error=None if last_error is None else ReloadFailure.from_json(last_error),
            run_control=None if run_control is None else RunControlConfig.from_json(run_control),
        )


@dataclass(frozen=True)
class Check:
    """One check of a probe: its ``name`` (``config``, ``store``…), whether it passed, and
    what it found."""

    name: str
    ready: bool
    detail: str

    @classmethod
    def from_json(cls, value: Json) -> Check:
        obj = object_of(value, "check")
        return cls(
            name=field_of(obj, "name", str, "check"),
            ready=field_of(obj, "ready", bool, "check"),
            detail=field_of(obj, "detail", str, "check"),
        )


@dataclass(frozen=True)
class Readiness:
    """What ``/healthz`` and ``/readyz`` answer: ``ready`` when every check passed."""

    ready: bool
    checks: list[Check]

    @classmethod
    def from_json(cls, value: Json) -> Readiness:
        obj = object_of(value, "readiness")
        return cls(
            ready=field_of(obj, "ready", bool, "readiness"),
            checks=[Check.from_json(c) for c in field_of(obj, "checks", list, "readiness")],
        )
