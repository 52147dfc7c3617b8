"""``streamrec models list|show|promote|rollback``: the model registry from the shell."""

from __future__ import annotations

import argparse

import orjson
from rich.console import Console
from rich.table import Table

from core.config import Settings


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser("models", help=help_text, description=help_text)
    p.add_argument("--name", help="registry model name (default STREAMREC_MODEL_NAME)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="versions, their kind, data and NDCG@10, and the aliases")
    show = sub.add_parser("show", help="the model card (manifest.json) of a version")
    show.add_argument("version", type=int)
    promote = sub.add_parser("promote", help="make a version production")
    promote.add_argument("version", type=int)
    promote.add_argument("--reason", default="manual promote")
    rollback = sub.add_parser("rollback", help="production back to the previous version")
    rollback.add_argument("--reason", default="manual rollback")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from models.registry import ModelRegistry

    registry = ModelRegistry.from_settings(settings.storage, args.name or settings.model_name)
    console = Console()
    if args.action == "list":
        return _list(registry, console)
    if args.action == "show":
        card = registry.manifest(args.version)
        console.print_json(orjson.dumps(card.model_dump(mode="json")).decode())
        return 0
    if args.action == "promote":
        doc = registry.promote(args.version, reason=args.reason, actor="cli")
        console.print(
            f"{registry.name}: production is now version {args.version} (revision {doc.revision})"
        )
        return 0
    doc = registry.rollback(reason=args.reason, actor="cli")
    last = doc.history[-1]
    console.print(
        f"{registry.name}: production rolled back from version {last.previous_version} "
        f"to {last.version} (revision {doc.revision})"
    )
    return 0


def _list(registry, console: Console) -> int:
    versions = registry.versions()
    aliases = registry.aliases()
    prod = aliases.production.version if aliases.production else None
    canary = aliases.canary
    table = Table(title=f"model {registry.name!r} in {registry.store.url}")
    for col in ("version", "alias", "kind", "created", "interactions", "NDCG@10"):
        table.add_column(col, no_wrap=True)
    table.add_column("notes", overflow="fold")
    for v in versions:
        card = registry.manifest(v)
        alias = []
        if v == prod:
            alias.append("production")
        if canary and v == canary.version:
            alias.append(f"canary {canary.weight:g}%")
        ndcg = card.metrics.get(card.kind, {}).get("ndcg@10")
        table.add_row(
            str(v),
            ", ".join(alias),
            card.kind,
            f"{card.created_at:%Y-%m-%d %H:%M}",
            f"{card.training_data.n_interactions:,}",
            "" if ndcg is None else f"{ndcg:.4f}",
            card.notes[:60],
        )
    console.print(table)
    canary_text = f"v{canary.version} at {canary.weight:g}%" if canary else "none"
    console.print(
        f"{len(versions)} version(s); production: {f'v{prod}' if prod else 'none'}; "
        f"canary: {canary_text}; alias document revision {aliases.revision}"
    )
    return 0
