"""The ``streamrec`` console command: a thin argparse layer over plain functions.

Each subcommand lives in ``streamrec/cli/<name>.py`` and exposes
``register(subparsers)``; its handler has the signature ``run(args, settings) -> int``.
Modules are imported lazily so ``streamrec stack status`` never imports LightGBM.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from schemas.errors import StreamrecError

# name -> module under streamrec.cli; the order is the order of `streamrec --help`.
SUBCOMMANDS: dict[str, str] = {
    "stack": "Start, stop and inspect the local Kafka/Redis/Prometheus stack.",
    "topics": "Create the event topics (idempotent) and list them.",
    "produce": "Validate and publish events from a JSONL or CMU log file.",
    "replay": "Replay a dataset (MovieLens-100K) through Kafka.",
    "stream": "Run the stream processor (Kafka -> Redis features + Parquet snapshots).",
    "train": "Train, evaluate and publish a model version.",
    "models": "List, show, promote and roll back model versions.",
    "serve": "Run the recommendation API.",
    "rollout": "Canary rollout of a model version: start, run (the controller), status, abort.",
    "simulate": "Closed-loop simulated users against the live API (watch events to Kafka).",
    "demo": "The main job: stack, replay, stream, train, serve, show recommendations.",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrec", description="Real-time recommendations on Apache Kafka."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        if only is not None and name != only:
            subs.add_parser(name, help=help_text, add_help=False)
            continue
        try:
            module = importlib.import_module(f"streamrec.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"streamrec.cli.{name}":
                raise
            continue  # subcommand not built yet
        module.register(subs, help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only import the module of the chosen subcommand (keeps `stack status` fast).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from core.config import get_settings
    from core.logs import setup_logging

    try:
        settings = get_settings()
        setup_logging("DEBUG" if args.verbose else settings.log_level)
        return int(args.func(args, settings) or 0)
    except StreamrecError as err:
        sys.stderr.write(f"streamrec {args.command}: error: {err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"streamrec {args.command}: interrupted\n")
        return 130
    except Exception as err:  # the last line of defence: one line, not a traceback
        logging.getLogger("streamrec").debug("unexpected error", exc_info=True)
        sys.stderr.write(
            f"streamrec {args.command}: unexpected error: {type(err).__name__}: {err} "
            "(run with -v for details)\n"
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
