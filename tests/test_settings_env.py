"""Code tests: every `STREAMREC_*` variable the README documents still sets its field, now that
the settings are typed sections (issue 17: users have deployments that name these variables)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from core.config import Settings, flat_names, sections
from core.settings_doc import END, START

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
# Values tried in turn for a variable: the first one its field accepts that is not its default.
STRINGS = ["faust", "bm25", "none", "10,100", "cluster", "/tmp/streamrec-env-test", "value-x"]


def _documented() -> list[tuple[str, str]]:
    table = README[README.index(START) + len(START) : README.index(END)]
    return re.findall(r"^\| `(STREAMREC_[A-Z0-9_]+)` \| `([a-z0-9_.]+)` \|", table, re.M)


def _value(kind: type, name: str) -> tuple[str, object]:
    """A raw variable value other than the default, and the value the field then holds."""
    default = kind.model_fields[name].default
    if isinstance(default, bool):
        tries: list[object] = [not default]
    elif isinstance(default, int):
        tries = [default + 1, default - 1]
    elif isinstance(default, float):
        tries = [default / 2, default + 0.5]
    elif default is None:
        tries = [3.5, *STRINGS]
    else:
        tries = list(STRINGS)
    for raw in tries:
        try:
            held = kind.model_validate({name: raw}).__getattribute__(name)
        except ValidationError:
            continue
        if held != default:
            return str(raw).lower() if isinstance(raw, bool) else str(raw), held
    raise AssertionError(f"no test value for {kind.__name__}.{name}")


def test_every_documented_variable_sets_its_field(monkeypatch):
    documented = _documented()
    assert {v.removeprefix("STREAMREC_").lower() for v, _ in documented} == set(flat_names())
    expected = {}
    for var, where in documented:
        section, _, name = where.rpartition(".")
        raw, held = _value(sections()[section] if section else Settings, name)
        monkeypatch.setenv(var, raw)
        expected[var] = (section, name, held)
    s = Settings()
    for var, (section, name, held) in expected.items():
        got = getattr(getattr(s, section) if section else s, name)
        if isinstance(got, SecretStr):
            got, held = got.get_secret_value(), held.get_secret_value()
        assert got == held, f"{var} -> settings.{section}.{name} = {got!r}, not {held!r}"
    # the variables a child process is handed (streamrec.stack.apps) rebuild the same settings
    for var, _ in documented:
        monkeypatch.delenv(var)
    for var, raw in s.environment().items():
        monkeypatch.setenv(var, raw)
    assert Settings() == s


def test_with_sections_changes_only_what_it_names_and_refuses_what_does_not_exist(monkeypatch):
    monkeypatch.setenv("STREAMREC_KAFKA_BOOTSTRAP", "broker:1")
    s = Settings(data_dir=Path("/tmp/streamrec-with-sections"))
    before = s.model_dump()
    t = s.with_sections(kafka={"topic_prefix": "p"}, redis={"key_prefix": "x"})
    assert (t.kafka.topic_prefix, t.kafka.bootstrap, t.redis.key_prefix) == ("p", "broker:1", "x")
    assert s.model_dump() == before  # a copy
    assert t.with_sections(storage={"url": None}).storage.url == s.default_storage_url()
    for bad in ({"kafk": {}}, {"kafka": {"prefix": "p"}}):
        with pytest.raises(TypeError):
            s.with_sections(**bad)
    with pytest.raises(ValidationError):  # validated again, as the environment is
        s.with_sections(kafka={"topic_partitions": 0})
    assert not hasattr(s, "redis_url")  # the flat names are the variables' only
