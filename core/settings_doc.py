"""Render the configuration table of the README from :class:`core.config.Settings` and its
sections (``python -m core.settings_doc``); a test checks the README lists every setting."""

from __future__ import annotations

import sys
from pathlib import Path

from core.config import Settings, flat_names, sections


def rows() -> list[tuple[str, str, str, str]]:
    """(variable, field in code, default, meaning), in the order of :class:`Settings`: its own
    fields, then each section's."""
    out = []
    for flat, (section, name) in flat_names().items():
        field = (sections()[section] if section else Settings).model_fields[name]
        default = field.default
        if flat == "home":
            default = "the checkout (or the working directory)"
        shown = "unset" if default is None else str(default)
        where = f"{section}.{name}" if section else name
        out.append((f"STREAMREC_{flat.upper()}", where, shown, field.description or ""))
    return out


def markdown() -> str:
    lines = ["| variable | in code: `settings.` | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{n}` | `{w}` | `{d}` | {m} |" for n, w, d, m in rows()]
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
