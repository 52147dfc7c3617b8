"""Generate the Grafana dashboards of infra/grafana/dashboards/ from code (package ``dashgen``).

python infra/grafana/generate.py          # rewrite the JSON files
python infra/grafana/generate.py --check  # exit 1 if a file differs (CI, tests)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON."""
    # dashgen sits beside this file, which is run as a script or loaded by path (tests), so
    # its directory is put on the path here rather than making infra/ a package.
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from dashgen import dashboards as build

    return build()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    parser.add_argument("--out", type=Path, default=OUT, help="output directory")
    args = parser.parse_args(argv)
    boards = dashboards()
    from dashgen.panels import render  # importable once dashboards() set up the path

    stale = []
    for name, board in boards.items():
        path = args.out / name
        text = render(board)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        sys.stderr.write(f"stale: {', '.join(stale)}; run python infra/grafana/generate.py\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
