"""`rag-server keys create|list|update|revoke`: straight on the database (open_runtime), no server needed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rag_server.cli_args import whole_number
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime, run_with_runtime


def register_keys_command(sub: Any) -> None:
    p = sub.add_parser("keys", help="create, list, update or revoke API keys", description=__doc__)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="a new key, printed once on the last line")
    create.set_defaults(handler=cmd_create, creates_database=True)
    create.add_argument("--name", required=True, help="who or what uses it (unique among active keys)")
    create.add_argument("--role", required=True, choices=["reader", "editor", "admin"])
    create.add_argument(
        "--collections", default=None, help="comma-separated names or ids (default: every collection)"
    )
    listing = actions.add_parser("list", help="the keys (never the keys themselves)")
    listing.set_defaults(handler=cmd_list)
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.add_argument(
        "--limit", type=whole_number(1, 10_000), default=None, help="at most this many (default: every key)"
    )
    listing.add_argument("--offset", type=whole_number(0, 2**31 - 1), default=0, help="keys to skip")
    update = actions.add_parser(
        "update", help="change an active key's role or collections (the key itself stays the same)"
    )
    update.set_defaults(handler=cmd_update)
    update.add_argument("name", help="the active key's name")
    update.add_argument("--role", default=None, choices=["reader", "editor", "admin"], help="its new role")
    reach = update.add_mutually_exclusive_group()
    reach.add_argument(
        "--collections", default=None, help="comma-separated names or ids: replace the key's collections"
    )
    reach.add_argument(
        "--every-collection", action="store_true", help="the key reaches every collection, new ones too"
    )
    revoke = actions.add_parser("revoke", help="revoke the active key of this name, at once")
    revoke.set_defaults(handler=cmd_revoke)
    revoke.add_argument("name")


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from rag_server.access.keys import create_key
    from rag_server.access.models import CreateKey
    from rag_server.cli_args import refusal

    collections = None if args.collections is None else [c.strip() for c in args.collections.split(",")]
    try:
        body = CreateKey(name=args.name, role=args.role, collections=collections)
    except ValidationError as exc:
        labels = {"name": "--name", "role": "--role", "collections": "--collections"}
        print(f"error: {refusal(exc, CreateKey, labels)}", file=sys.stderr)
        return 1

    async def work(runtime: Runtime) -> None:
        created = await create_key(runtime.pool, body)
        reach = "every collection" if created.collections is None else ", ".join(created.collections)
        print(f"created {created.role} key {created.name!r} for {reach}")
        print("store it now: it is shown this once (only its hash is kept)")
        print(created.key)

    return run_with_runtime(settings, work)


def cmd_update(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from rag_server.access.keys import update_key
    from rag_server.access.models import UpdateKey
    from rag_server.cli_args import refusal

    # Validated as the API's body: `collections` left out keeps the key's own, null is every collection.
    fields: dict[str, Any] = {"role": args.role}
    if args.collections is not None or args.every_collection:
        fields["collections"] = (
            None if args.every_collection else [c.strip() for c in args.collections.split(",")]
        )
    try:
        body = UpdateKey.model_validate(fields)
    except ValidationError as exc:
        labels = {"role": "--role", "collections": "--collections"}
        print(f"error: {refusal(exc, UpdateKey, labels)}", file=sys.stderr)
        return 1

    async def work(runtime: Runtime) -> None:
        updated = await update_key(runtime.pool, args.name, body)
        reach = "every collection" if updated.collections is None else ", ".join(updated.collections)
        article = "an" if updated.role[0] in "aeiou" else "a"
        print(f"key {updated.name!r} is now {article} {updated.role} key for {reach}")

    return run_with_runtime(settings, work)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.access.keys import list_keys

    async def work(runtime: Runtime) -> None:
        listing = await list_keys(
            runtime.pool, include_revoked=args.all, limit=args.limit, offset=args.offset
        )
        print(f"{'name':<24} {'role':<7} {'prefix':<13} {'last used':<20} {'revoked':<20} collections")
        for k in listing.items:
            used = k.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if k.last_used_at else "never"
            revoked = k.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if k.revoked_at else "-"
            reach = "*" if k.collections is None else ",".join(k.collections) or "(none left)"
            print(f"{k.name:<24} {k.role:<7} {k.key_prefix:<13} {used:<20} {revoked:<20} {reach}")
        shown = len(listing.items)
        if shown < listing.total:  # a page of them: which one
            first, last = args.offset + 1, args.offset + shown
            print(f"keys {first}-{last} of {listing.total}" if shown else f"no key past {listing.total}")

    return run_with_runtime(settings, work)


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.access.keys import HOW_TO_CREATE, list_keys, revoke_key

    async def work(runtime: Runtime) -> None:
        revoked = await revoke_key(runtime.pool, args.name)
        print(f"revoked key {revoked.name!r} ({revoked.key_prefix}...)")
        if (await list_keys(runtime.pool)).total == 0:
            print(f"no active key is left: the API now answers nobody (it never reopens); {HOW_TO_CREATE}")

    return run_with_runtime(settings, work)
