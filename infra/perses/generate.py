"""Convert the Grafana dashboards we publish (infra/grafana/dashboards/) into Perses dashboards
(infra/perses/dashboards/) with Perses' own Grafana migration (``percli migrate``).

python infra/perses/generate.py          # rewrite the JSON files
python infra/perses/generate.py --check  # exit 1 if a file differs (tests)

Needs percli and the CUE schemas of Perses v0.49.0, which this builds once into
~/.cache/streamrec/perses-v0.49.0/ if missing (as `streamrec stack up --service perses` does;
about 8 minutes on 2 cores, then cached).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GRAFANA = HERE.parent / "grafana" / "dashboards"
OUT = HERE / "dashboards"


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2) + "\n"


def dashboards(grafana: Path = GRAFANA) -> dict[str, dict[str, Any]]:
    """File name -> Perses dashboard, one per Grafana dashboard file."""
    from core.config import Settings
    from streamrec.stack.perses import PersesService

    perses = PersesService(Settings())
    return {path.name: perses.migrate(path) for path in sorted(grafana.glob("*.json"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    parser.add_argument("--out", type=Path, default=OUT, help="output directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    boards = dashboards()
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
    # A Grafana dashboard removed: its Perses copy must go too.
    extra = sorted(p.name for p in args.out.glob("*.json") if p.name not in boards)
    if args.check and extra:
        stale += extra
    elif extra:
        for name in extra:
            (args.out / name).unlink()
    if stale:
        sys.stderr.write(f"stale: {', '.join(stale)}; run python infra/perses/generate.py\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
