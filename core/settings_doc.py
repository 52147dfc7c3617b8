"""Render the configuration table of the README from :class:`core.config.Settings`
(``python -m core.settings_doc``); a test checks the README lists every setting."""

from __future__ import annotations

import sys
from pathlib import Path

from core.config import Settings


def rows() -> list[tuple[str, str, str]]:
    out = []
    fields = Settings.model_fields
    # Settings' own sections first, then the sections it inherits (core/config_*.py): the
    # order the sections are read in.
    own = [n for n in fields if n in Settings.__annotations__]
    for name in own + [n for n in fields if n not in own]:
        field = fields[name]
        default = field.default
        if name == "home":
            default = "the checkout (or the working directory)"
        shown = "unset" if default is None else str(default)
        out.append((f"STREAMREC_{name.upper()}", shown, field.description or ""))
    return out


def markdown() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | `{d}` | {m} |" for n, d, m in rows()]
    return "\n".join(lines) + "\n"


START, END = "<!-- settings:start -->\n", "<!-- settings:end -->"


def write_into(path: Path) -> None:
    """Replace the table between the START/END markers of ``path``."""
    text = path.read_text()
    head, tail = text.index(START) + len(START), text.index(END)
    path.write_text(text[:head] + markdown() + text[tail:])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        write_into(Path(sys.argv[2]))
    else:
        sys.stdout.write(markdown())
