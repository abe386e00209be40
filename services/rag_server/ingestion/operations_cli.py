"""`rag-server tasks list|retry|cancel` and `rag-server queue archive`: pipeline administration straight on
the database (open_runtime, the system scope: every collection), no server needed. `tasks retry --all`:
every failed task of every collection (as POST /admin/tasks/retry {"all": true})."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from uuid import UUID

from rag_server.cli_args import whole_number
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime, run_with_runtime
from rag_server.ingestion.archive import MAX_AGE_DAYS
from rag_server.ingestion.models import TASK_STATUSES

# Refusals of the CLI itself (bad arguments), on stderr and exit 1 like the domain's.
_SELECTION_HELP = "exactly one of TASK_ID, --batch and --collection"
_RETRY_HELP = "exactly one of TASK_ID, --batch, --collection and --all"
# --limit of a listing: a page on a terminal (the API pages by up to 500). Checked when parsed: 0 and
# below were quietly read as 1, a number past int64 reached the database (asyncpg's DataError).
LIMIT = whole_number(1, 10_000)


def register_operations_commands(sub: Any) -> None:
    p = sub.add_parser("tasks", help="list, retry or cancel ingestion tasks", description=__doc__)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="tasks, newest first (stuck ones say why)")
    listing.set_defaults(handler=cmd_list)
    listing.add_argument("--status", choices=TASK_STATUSES, default=None)
    listing.add_argument("--stuck", action="store_true", help="only tasks that do not move")
    listing.add_argument("--collection", default=None, help="name or id")
    listing.add_argument("--batch", type=UUID, default=None, help="an upload batch id")
    listing.add_argument("--limit", type=LIMIT, default=100)
    for name, handler, what, choices in (
        ("retry", cmd_retry, "queue failed tasks again (the stored file is processed anew)", _RETRY_HELP),
        (
            "cancel",
            cmd_cancel,
            "cancel queued tasks (they fail with 'Cancelled by an operator')",
            _SELECTION_HELP,
        ),
    ):
        action = actions.add_parser(name, help=what, description=f"{what}: {choices}")
        action.set_defaults(handler=handler)
        action.add_argument("task_id", nargs="?", type=UUID, default=None, metavar="TASK_ID")
        action.add_argument("--batch", type=UUID, default=None, help="every such task of this batch")
        action.add_argument("--collection", default=None, help="every such task of this collection")
        if name == "retry":
            action.add_argument("--all", action="store_true", help="every failed task of every collection")
    q = sub.add_parser("queue", help="the queue's dead-message archive", description=__doc__)
    queue_actions = q.add_subparsers(dest="action", required=True, metavar="ACTION")
    arch = queue_actions.add_parser("archive", help="list the archived messages, or purge them")
    arch.set_defaults(handler=cmd_archive)
    arch.add_argument("--purge", action="store_true", help="delete archived messages")
    arch.add_argument(
        "--older-than-days",
        type=whole_number(0, MAX_AGE_DAYS),
        default=None,
        help="with --purge: only older ones",
    )
    arch.add_argument("--limit", type=LIMIT, default=50)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.ingestion.operations import list_tasks

    async def work(runtime: Runtime) -> None:
        listing = await list_tasks(
            runtime.pool,
            runtime.queue,
            status=args.status,
            collection=args.collection,
            batch_id=args.batch,
            stuck=args.stuck,
            limit=args.limit,
        )
        print(f"{'task':<36}  {'status':<10} {'att':>3} {'fail':>4}  {'collection':<16} {'file':<28} why")
        for t in listing.items:
            why = t.stuck or t.error or ""
            print(
                f"{t.task_id!s:<36}  {t.status:<10} {t.attempts:>3} {t.failures:>4}  "
                f"{t.collection[:16]:<16} {t.filename[:28]:<28} {why}"
            )
        print(f"{len(listing.items)} of {listing.total} tasks")

    return run_with_runtime(settings, work)


def _selection_error(args: argparse.Namespace) -> str | None:
    named = [v for v in (args.task_id, args.batch, args.collection) if v is not None]
    every = getattr(args, "all", False)  # retry's only
    if len(named) + every == 1:
        return None
    return f"error: name {_RETRY_HELP if 'all' in args else _SELECTION_HELP}"


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.ingestion import operations, operations_bulk
    from rag_server.ingestion.operations_models import RetrySelection

    if (problem := _selection_error(args)) is not None:
        print(problem, file=sys.stderr)
        return 1

    async def work(runtime: Runtime) -> None:
        if args.task_id is not None:
            task = await operations.retry_task(runtime.pool, runtime.queue, args.task_id)
            print(f"task {task.task_id} ({task.filename}) queued again")
            return
        selection = RetrySelection(batch_id=args.batch, collection=args.collection, all=args.all)
        _print_bulk(await operations_bulk.retry_tasks(runtime.pool, runtime.queue, selection), "queued again")

    return run_with_runtime(settings, work)


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.ingestion import operations, operations_bulk
    from rag_server.ingestion.operations_models import TaskSelection

    if (problem := _selection_error(args)) is not None:
        print(problem, file=sys.stderr)
        return 1

    async def work(runtime: Runtime) -> None:
        if args.task_id is not None:
            task = await operations.cancel_task(runtime.pool, runtime.queue, args.task_id, None)
            print(f"task {task.task_id} ({task.filename}) cancelled")
            return
        selection = TaskSelection(batch_id=args.batch, collection=args.collection)
        _print_bulk(
            await operations_bulk.cancel_tasks(runtime.pool, runtime.queue, selection, None), "cancelled"
        )

    return run_with_runtime(settings, work)


def _print_bulk(result: Any, verb: str) -> None:
    for task_id in result.done:
        print(f"task {task_id} {verb}")
    for skipped in result.skipped:
        print(f"task {skipped.task_id} skipped: {skipped.reason}")
    if result.truncated:  # the lists stop at MAX_LISTED each; the counts are all of them
        print(f"(the first {len(result.done)} {verb} and {len(result.skipped)} skipped are listed)")
    print(f"{result.done_count} {verb}, {result.skipped_count} skipped")


def cmd_archive(args: argparse.Namespace, settings: Settings) -> int:
    from rag_server.ingestion.archive import list_archive, purge_archive

    if args.older_than_days is not None and not args.purge:  # its range is checked when parsed
        print("error: --older-than-days goes with --purge", file=sys.stderr)
        return 1

    async def work(runtime: Runtime) -> None:
        if args.purge:
            purged = await purge_archive(runtime.pool, runtime.queue, args.older_than_days)
            print(f"deleted {purged.deleted} archived messages")
            return
        listing = await list_archive(runtime.pool, runtime.queue, limit=args.limit)
        print(f"{'msg':>8}  {'archived at':<19}  {'task':<36}  {'file':<28} error")
        for m in listing.items:
            task = str(m.task_id) if m.task_id else "-"
            print(
                f"{m.msg_id:>8}  {m.archived_at:%Y-%m-%d %H:%M:%S}  {task:<36}  "
                f"{(m.filename or '-')[:28]:<28} {m.error or ''}"
            )
        print(f"{len(listing.items)} of {listing.total} archived messages")

    return run_with_runtime(settings, work)
