"""The ``relay`` command. Settings are built here, once, and passed down."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click
from pydantic import ValidationError

from relay.logs import configure_logging
from relay.settings import Settings, describe_validation_error

T = TypeVar("T")

EMBEDDED_WARNING = (
    "RELAY_REDIS_URL is unset: using the EMBEDDED in-process store. It is NOT durable: "
    "everything is lost when this process stops. Set RELAY_REDIS_URL for production."
)


def fail(message: str) -> NoReturn:
    click.echo(f"relay: {message}", err=True)
    sys.exit(2)


def load_settings(**overrides: Any) -> Settings:
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        fail(f"invalid configuration: {describe_validation_error(error)}")
    configure_logging(settings.log_format)
    return settings


def require_redis(settings: Settings, command: str) -> None:
    if settings.embedded:
        fail(
            f"`relay {command}` needs RELAY_REDIS_URL (the embedded store lives only inside "
            "`relay run`; use its admin API, or run `relay run` with RELAY_REDIS_URL)"
        )
    require_encryption_keys(settings, command)


def require_encryption_keys(settings: Settings, command: str) -> None:
    if not settings.embedded and not settings.fernet_keys:
        fail(
            f"`relay {command}` with RELAY_REDIS_URL needs RELAY_ENCRYPTION_KEYS (webhook secrets are "
            "stored encrypted); make one with `relay keys generate`"
        )


def require_admin_token(settings: Settings, command: str) -> None:
    if settings.admin_token is None:
        fail(f"`relay {command}` needs RELAY_ADMIN_TOKEN (16+ characters) for the builder and admin APIs")


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    use_fast_event_loop()
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except KeyboardInterrupt:
        sys.exit(130)


def use_fast_event_loop() -> None:
    """uvloop where it is installed (Linux, macOS): about a third more callbacks and deliveries per
    core than asyncio's own loop (tests/perf). Everything also runs on the standard loop."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """relay: verified payment-gateway callbacks in, signed item.purchased webhooks out.

    Configuration comes from RELAY_* environment variables (see the README). Start with
    `relay demo` for the whole story on loopback, or `relay run` for a working relay with no Redis.
    """


host_option = click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
port_option = click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 picks a free one).",
)


@main.command()
@host_option
@port_option
def serve(host: str, port: int) -> None:
    """Run the ingress HTTP service (callbacks, builder, public and admin APIs).

    Needs RELAY_REDIS_URL and RELAY_ADMIN_TOKEN. Deliveries are made by `relay worker`.
    """
    settings = load_settings()
    require_redis(settings, "serve")
    require_admin_token(settings, "serve")
    from relay.runner import serve_forever

    run_async(lambda: serve_forever(settings, host=host, port=port, worker=False))


@main.command()
def worker() -> None:
    """Run an arq delivery worker (needs RELAY_REDIS_URL). Run as many as you like."""
    settings = load_settings()
    require_redis(settings, "worker")
    from relay.runner import run_worker

    run_async(lambda: run_worker(settings))


@main.command()
@host_option
@port_option
def run(host: str, port: int) -> None:
    """Run ingress and a worker in one process.

    With RELAY_REDIS_URL unset this uses an embedded, NOT durable in-process store: good for trying
    relay out, not for production.
    """
    settings = load_settings()
    require_admin_token(settings, "run")
    require_encryption_keys(settings, "run")
    if settings.embedded:
        click.secho(EMBEDDED_WARNING, fg="yellow", err=True)
    from relay.runner import serve_forever

    run_async(lambda: serve_forever(settings, host=host, port=port, worker=True))


@main.command()
def demo() -> None:
    """Run the whole story on loopback and exit 0: create a project and an item, buy it through the
    sandbox checkout, deliver a verified item.purchased to a local merchant, send a failing endpoint
    through retries into the dead-letter queue, and replay it."""
    from relay.demo import run_demo

    configure_logging("console", level=40)
    sys.exit(run_async(run_demo))


# --- operator commands ----------------------------------------------------------------------


def since_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--since",
        type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
        help="Only dead letters from this time on (ISO 8601; UTC when no offset).",
    )(func)


def project_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--project", "project_id", help="Only this project's dead letters.")(func)


@main.group()
def dlq() -> None:
    """Inspect, replay and purge the dead-letter queue (needs RELAY_REDIS_URL)."""


@dlq.command("list")
@project_option
@since_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def dlq_list(project_id: str | None, since: datetime | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    from relay import ops

    settings = operator_settings("dlq list")
    rows = run_async(lambda: ops.list_dead_letters(settings, project_id=project_id, since=since))
    print_rows(rows, as_json, ("event_id", "project_id", "order_id", "attempts", "dead_at", "last_error"))


@dlq.command("replay")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter matching the filters.")
@project_option
@since_option
def dlq_replay(
    event_ids: tuple[str, ...], replay_all: bool, project_id: str | None, since: datetime | None
) -> None:
    """Send dead letters again, with the same webhook-id and a fresh retry budget."""
    from relay import ops

    check_selection(event_ids, replay_all, project_id or since)
    settings = operator_settings("dlq replay")
    done = run_async(
        lambda: ops.replay(
            settings, event_ids=list(event_ids), replay_all=replay_all, project_id=project_id, since=since
        )
    )
    click.echo(f"replayed {done}")


@dlq.command("purge")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "purge_all", is_flag=True, help="Purge every dead letter matching the filter.")
@project_option
def dlq_purge(event_ids: tuple[str, ...], purge_all: bool, project_id: str | None) -> None:
    """Remove dead letters for good (the purchase keeps its attempt log)."""
    from relay import ops

    check_selection(event_ids, purge_all, project_id)
    settings = operator_settings("dlq purge")
    done = run_async(
        lambda: ops.purge(settings, event_ids=list(event_ids), purge_all=purge_all, project_id=project_id)
    )
    click.echo(f"purged {done}")


@main.group()
def purchases() -> None:
    """List a project's purchases and re-send their webhooks (needs RELAY_REDIS_URL)."""


@purchases.command("list")
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.option(
    "--webhook-status",
    type=click.Choice(["pending", "delivered", "retrying", "failed", "no_endpoint"]),
    help="Only purchases whose webhook is in this state.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def purchases_list(project_id: str, webhook_status: str | None, as_json: bool) -> None:
    """List purchases, newest first."""
    from relay import ops

    settings = operator_settings("purchases list")
    rows = run_async(
        lambda: ops.list_purchases(settings, project_id=project_id, webhook_status=webhook_status)
    )
    print_rows(rows, as_json, ("order_id", "status", "webhook_status", "amount", "buyer_email", "paid_at"))


@purchases.command("retry")
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.argument("purchase_id")
def purchases_retry(project_id: str, purchase_id: str) -> None:
    """Send a purchase's webhook again (failed or not), with the same webhook-id."""
    from relay import ops

    settings = operator_settings("purchases retry")
    event_id = run_async(lambda: ops.retry_purchase(settings, project_id=project_id, order_id=purchase_id))
    click.echo(f"queued {event_id} for {purchase_id}")


@main.group()
def keys() -> None:
    """Encryption keys for secrets at rest (RELAY_ENCRYPTION_KEYS)."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new Fernet key. To rotate: put it first in RELAY_ENCRYPTION_KEYS, keep the old ones
    after it, restart, run `relay keys rotate`, then drop the old keys."""
    from relay.crypto import generate_key

    click.echo(generate_key())


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored secret under the first key of RELAY_ENCRYPTION_KEYS."""
    from relay import ops

    settings = operator_settings("keys rotate")
    done = run_async(lambda: ops.rotate_keys(settings))
    click.echo(f"re-encrypted {done} projects")


def operator_settings(command: str) -> Settings:
    settings = load_settings(log_format="console")
    require_redis(settings, command)
    return settings


def check_selection(event_ids: tuple[str, ...], everything: bool, filters: object) -> None:
    if everything == bool(event_ids):
        fail("give EVENT_ID... or --all")
    if filters and not everything:
        fail("--project and --since filter --all; they cannot be combined with EVENT_IDs")


def print_rows(rows: list[dict[str, Any]], as_json: bool, columns: tuple[str, ...]) -> None:
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("(none)")
        return
    table = [
        [str(row.get(column) if row.get(column) is not None else "-") for column in columns] for row in rows
    ]
    widths = [max(len(column), *(len(line[index]) for line in table)) for index, column in enumerate(columns)]
    click.echo("  ".join(column.upper().ljust(width) for column, width in zip(columns, widths, strict=True)))
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
