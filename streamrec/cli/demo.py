"""``streamrec demo``: the main job end to end (see streamrec/demo.py)."""

from __future__ import annotations

import argparse

from rich.console import Console

from core.config import Settings


def register(subs: argparse._SubParsersAction, help_text: str) -> None:
    p = subs.add_parser("demo", help=help_text, description=help_text)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.demo import run_demo

    run_demo(settings, Console())
    return 0
