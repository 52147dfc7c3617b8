"""Generate the checked-in JSON Schema files (``python -m schemas.export``) and check that a
newer schema version stays backward compatible with older ones.

Files: ``schemas/jsonschema/<type>.v<N>.json``. A test fails when a model and its checked-in
file disagree, so a change to an event model must come with a regenerated file, and a
breaking change must come with a new version number.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.catalog import ItemRecord
from schemas.events import EVENT_TYPES, Event

SCHEMA_DIR = Path(__file__).parent / "jsonschema"
MODELS: dict[str, type[Event] | type[ItemRecord]] = {**EVENT_TYPES, "catalog": ItemRecord}


def schema_of(model: type[Event] | type[ItemRecord]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"streamrec/{schema['title']}/v{model.SCHEMA_VERSION}"
    return schema


def file_for(name: str, version: int) -> Path:
    return SCHEMA_DIR / f"{name}.v{version}.json"


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def incompatibilities(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why documents valid under ``old`` might be rejected under ``new`` (empty: compatible).

    Rules: no new required field; no field removed while extra fields are forbidden; a kept
    field keeps its type; an enum or const may only widen; numeric bounds only loosen."""
    problems = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for field in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        problems.append(f"{field}: newly required")
    for field, old_spec in old_props.items():
        if field not in new_props:
            if new.get("additionalProperties") is False:
                problems.append(f"{field}: removed")
            continue
        new_spec = new_props[field]
        if _types(old_spec) - _types(new_spec):
            problems.append(
                f"{field}: type {sorted(_types(old_spec))} -> {sorted(_types(new_spec))}"
            )
        old_enum = set(
            map(str, old_spec.get("enum", [old_spec["const"]] if "const" in old_spec else []))
        )
        new_enum = set(
            map(str, new_spec.get("enum", [new_spec["const"]] if "const" in new_spec else []))
        )
        if new_enum and (old_enum - new_enum or not old_enum):
            problems.append(f"{field}: allowed values narrowed")
        for bound, tighter in (
            ("minimum", max),
            ("maximum", min),
            ("maxLength", min),
            ("minLength", max),
            ("exclusiveMinimum", max),
            ("exclusiveMaximum", min),
        ):
            if bound in new_spec and (
                bound not in old_spec
                or tighter(old_spec[bound], new_spec[bound]) != old_spec[bound]
            ):
                problems.append(f"{field}: {bound} tightened")
    return problems


def _types(spec: dict[str, Any]) -> set[str]:
    if "type" in spec:
        t = spec["type"]
        return set(t) if isinstance(t, list) else {t}
    out: set[str] = set()
    for alt in spec.get("anyOf", []):
        out |= _types(alt) or {"object"}
    return out or ({"string"} if "const" in spec or "enum" in spec else set())


def write_all() -> list[Path]:
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for name, model in MODELS.items():
        path = file_for(name, model.SCHEMA_VERSION)
        path.write_text(render(schema_of(model)))
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_all():
        sys.stderr.write(f"wrote {p}\n")
