"""The client's models against the service's own OpenAPI document (openapi/openapi.json),
field by field: the same names, the same required fields, the same JSON types, null where the
document allows it."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from datetime import datetime
from typing import Any

import pytest

from celery_service_client import (
    CRONTAB_KEYS,
    Check,
    ConfigStatus,
    DiscoveryEntry,
    OutputLine,
    OutputPage,
    Readiness,
    Record,
    ReloadFailure,
    ResultsPage,
    Route,
    RunControlConfig,
    Session,
)

from harness import REPO

SCHEMAS: dict[str, Any] = json.loads((REPO / "openapi/openapi.json").read_text())["components"][
    "schemas"
]

# The client's model of each schema of the document's answers.
MODELS: list[tuple[type[Any], str]] = [
    (Route, "RouteInfo"),
    (DiscoveryEntry, "DiscoveryItem"),
    (Session, "SessionInfo"),
    (Record, "Record"),
    (ResultsPage, "ResultsPage"),
    (OutputLine, "OutputLine"),
    (OutputPage, "OutputPage"),
    (ConfigStatus, "ConfigStatus"),
    (ReloadFailure, "ReloadFailure"),
    (RunControlConfig, "RunControlConfig"),
    (Check, "Check"),
    (Readiness, "Readiness"),
]

# The JSON type of each Python type a model field may have (datetime: an RFC 3339 string).
JSON_TYPES = {str: "string", datetime: "string", int: "integer", bool: "boolean", list: "array"}


def schema_of(prop: dict[str, Any]) -> dict[str, Any]:
    """A property's own schema, through the `allOf: [$ref]` poem-openapi writes for a ref."""
    if "allOf" in prop:
        ref = prop["allOf"][0]["$ref"].rsplit("/", 1)[1]
        return {**SCHEMAS[ref], "nullable": prop.get("nullable", False), "ref": ref}
    if "$ref" in prop:
        ref = prop["$ref"].rsplit("/", 1)[1]
        return {**SCHEMAS[ref], "ref": ref}
    return prop


def split_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` as ``(X, True)``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


@pytest.mark.parametrize(("model", "schema_name"), MODELS, ids=[m[1] for m in MODELS])
def test_model_matches_the_openapi_schema(model: type[Any], schema_name: str) -> None:
    schema = SCHEMAS[schema_name]
    fields = {f.name: f for f in dataclasses.fields(model)}
    hints = typing.get_type_hints(model)
    assert set(fields) == set(schema["properties"]), schema_name
    required = set(schema.get("required", []))
    for name, prop in schema["properties"].items():
        prop = schema_of(prop)
        hint, optional = split_optional(hints[name])
        nullable = prop.get("nullable", False) or name not in required
        where = f"{schema_name}.{name}"
        if name == "crontab":
            # The five crontab() keyword arguments, all strings.
            assert set(prop["required"]) == set(CRONTAB_KEYS) == set(prop["properties"])
            assert optional, where
            continue
        if "type" not in prop and "ref" not in prop:
            # Any JSON (`args`, `empty_param`): the model keeps it as Json.
            assert hint == typing.get_type_hints(Session)["args"], where
            continue
        assert optional == nullable, f"{where}: nullable {nullable}, model optional {optional}"
        if "ref" in prop:
            assert hint.__name__ in {prop["ref"], prop["ref"].replace("Info", "")}, where
            continue
        origin = typing.get_origin(hint) or hint
        assert JSON_TYPES[origin] == prop["type"], where
        if prop.get("format") == "date-time" or name in ("start_at", "end_at", "loaded_at", "at"):
            assert hint is datetime, where
        if prop["type"] == "array":
            item = schema_of(prop["items"])
            assert typing.get_args(hint)[0].__name__ == item["ref"], where


def test_every_answer_schema_has_a_model() -> None:
    covered = {name for _, name in MODELS}
    answers = {
        name[len("Envelope_") :].removeprefix("list_")
        for name in SCHEMAS
        if name.startswith("Envelope_") and name not in ("Envelope_string", "Envelope_string_uuid")
    }
    # /-/store is for operators; the client does not read it.
    assert answers - covered == {"StoreStatus"}
