"""Code tests: the README documents every setting and the commands that exist."""

from __future__ import annotations

from pathlib import Path

from core.settings_doc import END, START, markdown

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_configuration_table_is_current():
    table = README[README.index(START) + len(START) : README.index(END)]
    assert table == markdown(), "regenerate with `python -m core.settings_doc` (make docs)"


def test_quickstart_is_two_make_commands_and_ci_runs_the_test_one():
    assert "make demo" in README and "make test" in README
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"
