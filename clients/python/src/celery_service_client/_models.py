"""What the service answers, as frozen dataclasses built from its JSON.

Fields the service adds later are ignored, so an older client keeps working against a newer
service; a field the API promises that is missing or of the wrong type is a
:class:`~celery_service_client.TransportError`, raised where the answer is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

from ._errors import TransportError

#: A JSON value as ``json.loads`` gives it.
Json: TypeAlias = bool | int | float | str | list["Json"] | dict[str, "Json"] | None

#: The five keys of a crontab mapping, as ``celery.schedules.crontab`` takes them.
CRONTAB_KEYS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")

_T = TypeVar("_T")

# RFC 3339 with any number of fraction digits and `Z` or an offset; `datetime.fromisoformat` before
# Python 3.11 takes neither `Z` nor a fraction other than 3 or 6 digits.
_RFC3339 = re.compile(
    r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?(?P<tz>Z|z|[+-]\d\d:\d\d)?$"
)


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware :class:`datetime` (fractions past microseconds cut)."""
    m = _RFC3339.match(text.strip())
    if m is None:
        raise TransportError(f"not an RFC 3339 time: {text!r}")
    frac = (m.group("frac") or "")[:6].ljust(6, "0")
    tz = m.group("tz") or "+00:00"
    if tz in ("Z", "z"):
        tz = "+00:00"
    return datetime.fromisoformat(f"{m.group('base')}.{frac}{tz}")


def format_time(value: datetime) -> str:
    """The inverse of :func:`parse_time`, to the microsecond."""
    return value.isoformat(timespec="microseconds")


def field_of(obj: Mapping[str, Any], key: str, kind: type[_T], what: str) -> _T:
    """``obj[key]``, which must be of type ``kind``."""
    value = obj.get(key)
    # bool is an int in Python; a JSON `true` is never a number here.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TransportError(f"{what}: field {key!r} should be {kind.__name__}, got {value!r}")
    return value


def optional_field_of(obj: Mapping[str, Any], key: str, kind: type[_T], what: str) -> _T | None:
    """``obj[key]`` when it is there and not null (then of type ``kind``), else ``None``."""
    return None if obj.get(key) is None else field_of(obj, key, kind, what)


def object_of(value: Json, what: str) -> Mapping[str, Any]:
    """``value`` when it is a JSON object."""
    if not isinstance(value, dict):
        raise TransportError(f"{what} should be a JSON object, got {value!r}")
    return value


@dataclass(frozen=True)
class Route:
    """One route of ``GET /list``."""

    method: str
    path: str

    @classmethod
    def from_json(cls, value: Json) -> Route:
        obj = object_of(value, "route")
        return cls(
            method=field_of(obj, "method", str, "route"), path=field_of(obj, "path", str, "route")
        )


@dataclass(frozen=True)
class DiscoveryEntry:
    """One task of ``GET /discovery``: what a scheduler needs to schedule it.

    ``url`` is the task's route without the ``sync/``/``async/`` prefix (``tendb-cluster/demo1``);
    ``empty_param`` is the body to post on schedule; ``crontab`` is ``None`` for a task without a
    schedule, else the five ``celery.schedules.crontab`` keyword arguments.
    """

    name: str
    cluster_type: str
    url: str
    enable: bool
    empty_param: Json
    description: str = ""
    crontab: Mapping[str, str] | None = None

    @classmethod
    def from_json(cls, value: Json) -> DiscoveryEntry:
        what = "discovery entry"
        obj = object_of(value, what)
        crontab: dict[str, str] | None = None
        if obj.get("crontab") is not None:
            raw = object_of(obj["crontab"], "crontab")
            crontab = {key: field_of(raw, key, str, "crontab") for key in CRONTAB_KEYS}
        description = obj.get("description")
        return cls(
            name=field_of(obj, "name", str, what),
            cluster_type=field_of(obj, "cluster_type", str, what),
            url=field_of(obj, "url", str, what),
            enable=field_of(obj, "enable", bool, what),
            empty_param=obj.get("empty_param"),
            description=description if isinstance(description, str) else "",
            crontab=crontab,
        )


@dataclass(frozen=True)
class Session:
    """An async run, as ``/async/query`` and ``/async/kill`` answer it.

    ``message`` is the latest stdout line (progress while running, the result once done);
    ``error`` is ``""`` on success, else why it failed or was killed; ``end_at`` and
    ``exit_code`` are ``None`` while it runs (``exit_code`` stays ``None`` for a run killed by a
    signal, one that could not start and a built-in task). ``args`` is the posted body.
    """

    id: str
    message: str
    error: str
    done: bool
    start_at: datetime
    end_at: datetime | None
    exit_code: int | None
    task: str
    args: Json

    @property
    def ok(self) -> bool:
        """Whether it is done and succeeded."""
        return self.done and not self.error

    @classmethod
    def from_json(cls, value: Json) -> Session:
        what = "session"
        obj = object_of(value, what)
        end_at = optional_field_of(obj, "end_at", str, what)
        return cls(
            id=field_of(obj, "id", str, what),
            message=field_of(obj, "message", str, what),
            error=field_of(obj, "error", str, what),
            done=field_of(obj, "done", bool, what),
            start_at=parse_time(field_of(obj, "start_at", str, what)),
            end_at=None if end_at is None else parse_time(end_at),
            exit_code=optional_field_of(obj, "exit_code", int, what),
            task=field_of(obj, "task", str, what),
            args=obj.get("args"),
        )

    def to_json(self) -> dict[str, Json]:
        """The session as the service sends it: JSON-serialisable, times as RFC 3339 strings."""
        return {
            "id": self.id,
            "message": self.message,
            "error": self.error,
            "done": self.done,
            "start_at": format_time(self.start_at),
            "end_at": None if self.end_at is None else format_time(self.end_at),
            "exit_code": self.exit_code,
            "task": self.task,
            "args": self.args,
        }
