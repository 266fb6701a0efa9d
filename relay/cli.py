"""The ``relay`` command. Settings are built here, once, and passed down."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar
from urllib.parse import urlsplit

import click
from pydantic import ValidationError

from relay.errors import InvalidInput, RelayError
from relay.logs import configure_logging
from relay.settings import Settings, describe_validation_error, published_secrets, unknown_variables

if TYPE_CHECKING:  # the commands import what they use when they run: `relay --help` stays quick
    from relay.remote import Remote
    from relay.replay import Operations

T = TypeVar("T")

EMBEDDED_WARNING = (
    "RELAY_REDIS_URL is unset: using the EMBEDDED in-process store. It is NOT durable: "
    "everything is lost when this process stops. Set RELAY_REDIS_URL for production."
)


def fail(message: str) -> NoReturn:
    click.echo(f"relay: {message}", err=True)
    sys.exit(2)


def load_settings(**overrides: Any) -> Settings:
    for warning in unknown_variables(os.environ):
        click.echo(f"relay: warning: {warning}", err=True)
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        fail(f"invalid configuration: {describe_validation_error(error)}")
    for warning in published_secrets(settings):
        click.secho(f"relay: WARNING: {warning}", fg="red", err=True)
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
    """Run ``main`` on the fast event loop; a ``RelayError`` it raises (a project that does not
    exist, a purchase with no webhook) is the command's one-line error, exit 1."""
    use_fast_event_loop()
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except KeyboardInterrupt:
        sys.exit(130)
    except RelayError as error:
        raise click.ClickException(error.detail) from None


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
    """relay: verified payment-gateway callbacks in, signed webhooks out (items, shop payments,
    subscriptions and their refunds).

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
    sys.exit(run_async(lambda: run_demo(ClickNarrator())))


class ClickNarrator:
    """The demo's story on the terminal (``relay.demo.Narrator``)."""

    def step(self, text: str) -> None:
        click.secho(f"\n==> {text}", fg="cyan", bold=True)

    def show(self, text: str) -> None:
        click.echo(f"    {text}")

    def end(self, text: str, *, ok: bool) -> None:
        click.secho(f"\n{text}", fg="green" if ok else "red", bold=ok, err=not ok)


# --- operator commands ----------------------------------------------------------------------
# Thin: each parses its options and calls one use case of relay.replay.Operations, straight against
# Redis, then prints. Errors are the use cases' own (RelayError), printed as one line.


class IsoTime(click.ParamType[datetime]):
    """An ISO 8601 instant, as the API takes it and as the CLI prints it (``2026-05-06T10:00:00Z``,
    ``2026-05-06T10:00:00.123+07:00``, ``2026-05-06``); UTC when it has no offset."""

    name = "ISO-8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        from relay.api.parsing import parse_time

        try:
            return parse_time(str(value), name=param.name if param and param.name else "time")
        except InvalidInput as error:
            self.fail(error.detail, param, ctx)


def since_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--since",
        type=IsoTime(),
        help="Only dead letters from this time on, e.g. 2026-05-06T10:00:00Z (UTC when no offset).",
    )(func)


def project_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--project", "project_id", help="Only this project's dead letters.")(func)


@asynccontextmanager
async def operations(settings: Settings, *, writes: bool = False) -> AsyncIterator[Operations]:
    """The use cases over a connection to ``settings``' Redis, closed after. A command that
    ``writes`` reports success only once RELAY_REDIS_MIN_REPLICAS_ACK replicas hold its writes
    (else its one-line error, exit 1), as the API acknowledges nothing before."""
    from relay.connections import open_connections
    from relay.replay import Operations
    from relay.replicas import Replicas
    from relay.stores import make_stores

    connections = open_connections(settings)
    try:
        yield Operations(make_stores(connections.redis, settings), connections.arq)
        if writes:
            replicas = Replicas.configured(connections.redis, settings)
            try:
                await replicas.confirm()
            finally:
                await replicas.aclose()
    finally:
        await connections.close()


@main.group()
def dlq() -> None:
    """Inspect, replay and purge the dead-letter queue: in Redis (RELAY_REDIS_URL), or through a
    running relay (RELAY_URL with RELAY_ADMIN_TOKEN; it wins over RELAY_REDIS_URL)."""


@dlq.command("list")
@project_option
@since_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def dlq_list(project_id: str | None, since: datetime | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    settings = operator_settings("dlq list", remote=True)
    columns = ("event_id", "type", "project_id", "order_id", "attempts", "dead_at", "last_error")
    if settings.url:

        async def listed(client: Remote) -> list[dict[str, Any]]:
            found = await client.dead_letters(project_id=project_id, since=since)
            return [_without_last_attempt(row) for row in found]

        print_rows(run_remote(settings, listed), as_json, columns)
        return

    async def rows() -> list[dict[str, Any]]:
        async with operations(settings) as ops:
            records = [event async for event in ops.all_dead_letters(project_id=project_id, since=since)]
            views = await ops.dead_letter_views(records)
        return [
            view.model_dump(mode="json", exclude={"last_attempt"})
            | {"last_error": view.last_attempt.error if view.last_attempt else None}
            for view in views
        ]

    print_rows(run_async(rows), as_json, columns)


def _without_last_attempt(row: dict[str, Any]) -> dict[str, Any]:
    """A dead letter as the API shows it, as ``dlq list`` prints it: its last error, not its attempt."""
    last = row.get("last_attempt")
    shown = {key: value for key, value in row.items() if key != "last_attempt"}
    return shown | {"last_error": last.get("error") if isinstance(last, dict) else None}


@dlq.command("replay")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter matching the filters.")
@project_option
@since_option
def dlq_replay(
    event_ids: tuple[str, ...], replay_all: bool, project_id: str | None, since: datetime | None
) -> None:
    """Send dead letters again, with the same webhook-id and a fresh retry budget."""
    check_selection(event_ids, replay_all, project_id or since)
    settings = operator_settings("dlq replay", remote=True)
    if settings.url:

        async def sent(client: Remote) -> int:
            ids = list(dict.fromkeys(event_ids))
            return await client.replay_dead_letters(
                ids, everything=replay_all, project_id=project_id, since=since
            )

        click.echo(f"replayed {run_remote(settings, sent)}")
        return

    async def replay() -> tuple[int, list[str]]:
        async with operations(settings, writes=True) as ops:
            ids = await ops.dead_letter_ids(project_id=project_id, since=since) if replay_all else event_ids
            ids = list(dict.fromkeys(ids))  # each event once
            with click.progressbar(length=len(ids), label="replaying") as bar:
                replayed = await ops.replay(ids, progress=bar)
        return replayed.count, replayed.missing

    done, missing = run_async(replay)
    if missing:
        raise click.ClickException(f"replayed {done}; no such event: {', '.join(missing)}")
    click.echo(f"replayed {done}")


@dlq.command("purge")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "purge_all", is_flag=True, help="Purge every dead letter matching the filter.")
@project_option
def dlq_purge(event_ids: tuple[str, ...], purge_all: bool, project_id: str | None) -> None:
    """Remove dead letters for good (the purchase keeps its attempt log)."""
    check_selection(event_ids, purge_all, project_id)
    settings = operator_settings("dlq purge", remote=True)
    if settings.url:

        async def purged(client: Remote) -> int:
            ids = event_ids
            if purge_all:
                ids = tuple(
                    row["event_id"] for row in await client.dead_letters(project_id=project_id, since=None)
                )
            ids = tuple(dict.fromkeys(ids))
            purged = 0
            with click.progressbar(length=len(ids), label="purging", file=sys.stderr) as bar:
                for event_id in ids:
                    purged += await client.purge(event_id)  # one replayed meanwhile is no longer there
                    bar.update(1)
            return purged

        click.echo(f"purged {run_remote(settings, purged)}")
        return

    async def purge() -> int:
        async with operations(settings, writes=True) as ops:
            ids = await ops.dead_letter_ids(project_id=project_id, since=None) if purge_all else event_ids
            ids = list(dict.fromkeys(ids))  # each event once
            with click.progressbar(length=len(ids), label="purging") as bar:
                return await ops.purge(ids, progress=bar)

    click.echo(f"purged {run_async(purge)}")


@main.group()
def purchases() -> None:
    """List a project's orders of every kind (items, shop payments, subscription periods) and
    re-send their webhooks: in Redis (RELAY_REDIS_URL), or through a running relay (RELAY_URL with
    RELAY_ADMIN_TOKEN, or a project's RELAY_API_KEY; RELAY_URL wins over RELAY_REDIS_URL)."""


@purchases.command("list")
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.option(
    "--webhook-status",
    type=click.Choice(["pending", "delivered", "retrying", "failed", "no_endpoint"]),
    help="Only purchases whose webhook is in this state.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def purchases_list(project_id: str, webhook_status: str | None, as_json: bool) -> None:
    """List orders of every kind, newest first, as the API shows them: a shop payment by the
    merchant's own order_id, with its gateway_order_id."""
    from relay.models import WebhookStatus

    settings = operator_settings("purchases list", remote=True)
    status = WebhookStatus(webhook_status) if webhook_status else None
    columns = ("order_id", "kind", "status", "webhook_status", "amount", "buyer_email", "paid_at")
    if settings.url:

        async def listed(client: Remote) -> list[dict[str, Any]]:
            return await client.purchases(project_id, webhook_status=webhook_status)

        print_rows(run_remote(settings, listed, admin=False), as_json, (*columns, "gateway_order_id"))
        return

    async def rows() -> list[dict[str, Any]]:
        async with operations(settings) as ops:
            found = await ops.purchases(project_id, webhook_status=status, limit=1000)
        return [purchase.view() for purchase in found]

    print_rows(run_async(rows), as_json, (*columns, "gateway_order_id"))


@purchases.command("show")
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.argument("order_id")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the order, attempts included, as one JSON object."
)
def purchases_show(project_id: str, order_id: str, as_json: bool) -> None:
    """One order and its webhook's attempts: when, the status, the error and its class, the
    latency and the first bytes of the endpoint's answer (its headers with --json). ORDER_ID is
    the gateway's order id or a shop payment's own."""
    settings = operator_settings("purchases show", remote=True)

    async def shown() -> dict[str, Any]:
        async with operations(settings) as ops:
            found = await ops.purchase(project_id, await ops.order_id(project_id, order_id))
            [view] = await ops.with_attempts([found])
        return view

    async def fetched(client: Remote) -> dict[str, Any]:
        return await client.purchase(project_id, order_id)

    view = run_remote(settings, fetched, admin=False) if settings.url else run_async(shown)
    if as_json:
        click.echo(json.dumps(view))
        return
    for name in ("order_id", "kind", "status", "webhook_status", "event_id", "amount", "paid_at"):
        click.echo(f"{name}: {view.get(name) if view.get(name) is not None else '-'}")
    columns = ("at", "status_code", "error_class", "error", "duration_ms", "response")
    rows = [attempt | {"response": (attempt["response"] or "")[:60]} for attempt in view["attempts"]]
    print_rows(rows, False, columns)


@purchases.command("retry")
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.argument("purchase_id")
def purchases_retry(project_id: str, purchase_id: str) -> None:
    """Send an order's webhook again (failed or not), with the same webhook-id. PURCHASE_ID is
    the order_id as `relay purchases list` shows it (a shop payment's own, or its gateway_order_id)."""
    settings = operator_settings("purchases retry", remote=True)

    async def retry() -> str:
        async with operations(settings, writes=True) as ops:
            order_id = await ops.order_id(project_id, purchase_id)
            purchase = await ops.retry_purchase(project_id, order_id)
        return str(purchase.event_id)

    async def retried(client: Remote) -> str:
        return str((await client.retry(project_id, purchase_id))["event_id"])

    click.echo(
        f"queued {run_remote(settings, retried) if settings.url else run_async(retry)} for {purchase_id}"
    )


@main.group()
def subscriptions() -> None:
    """List a project's subscriptions (needs RELAY_REDIS_URL)."""


@subscriptions.command("list")
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def subscriptions_list(project_id: str, as_json: bool) -> None:
    """List the project's subscriptions, newest first (the newest 1000)."""
    settings = operator_settings("subscriptions list")

    async def rows() -> list[dict[str, Any]]:
        async with operations(settings) as ops:
            found = await ops.recent_subscriptions(project_id, limit=1000)
        return [subscription.model_dump(mode="json", exclude={"version"}) for subscription in found]

    columns = ("id", "plan_name", "status", "current_period_end", "cancel_at_period_end", "buyer_email")
    print_rows(run_async(rows), as_json, columns)


@main.group()
def events() -> None:
    """Send a window of events again: in Redis (RELAY_REDIS_URL), or through a running relay
    (RELAY_URL with RELAY_ADMIN_TOKEN; it wins over RELAY_REDIS_URL)."""


@events.command("replay")
@click.option("--project", "project_id", required=True, help="The project's id.")
@click.option("--since", type=IsoTime(), required=True, help="Events created from this time on.")
@click.option("--until", type=IsoTime(), help="Events created up to this time (default: now).")
@click.option(
    "--webhook-status",
    type=click.Choice(["pending", "delivered", "retrying", "failed", "no_endpoint"]),
    help="Only events whose webhook is in this state (default: all, delivered ones too).",
)
def events_replay(
    project_id: str, since: datetime, until: datetime | None, webhook_status: str | None
) -> None:
    """Send every event of a project created in [--since, --until] again, delivered ones too (a
    merchant restored a backup), each with its own webhook-id and a fresh retry budget."""
    from relay.models import WebhookStatus
    from relay.replay import Window

    if until is not None and until < since:
        fail("--until is before --since")
    settings = operator_settings("events replay", remote=True)
    status = WebhookStatus(webhook_status) if webhook_status else None
    if settings.url:

        async def sent(client: Remote) -> int:
            return await client.replay_window(
                project_id, since=since, until=until, webhook_status=webhook_status
            )

        click.echo(f"replayed {run_remote(settings, sent)}")
        return

    async def replay() -> int:
        async with operations(settings, writes=True) as ops:
            ids = await ops.window(Window(project_id, since, until, status))
            with click.progressbar(length=len(ids), label="replaying", file=sys.stderr) as bar:
                return (await ops.replay(ids, progress=bar)).count

    click.echo(f"replayed {run_async(replay)}")


@main.command("export")
@click.option("--since", type=IsoTime(), required=True, help="Orders created from this time on.")
@click.option("--until", type=IsoTime(), help="Orders created up to this time (default: now).")
@click.option("--project", "project_id", help="Only this project's orders (default: every project's).")
@click.option(
    "--output",
    "-o",
    type=click.File("w", encoding="utf-8", lazy=True),
    default="-",
    help="Write to this file (default: standard output).",
)
def export(since: datetime, until: datetime | None, project_id: str | None, output: TextIO) -> None:
    """Write orders with their events and attempt logs as JSON lines, one order per line, to
    archive them before RELAY_RETENTION deletes them. A progress bar shows on a terminal."""
    from relay.archive import export_orders, order_count

    if until is not None and until < since:
        fail("--until is before --since")
    settings = operator_settings("export")

    async def write() -> int:
        async with operations(settings) as ops:
            project_ids = (
                [(await ops.project(project_id)).id] if project_id else await ops.store.project_ids()
            )
            total = await order_count(ops.store, project_ids, since=since, until=until)
            written = 0
            with click.progressbar(length=total, label="exporting", file=sys.stderr) as bar:
                async for line in export_orders(ops.store, ops.events, project_ids, since=since, until=until):
                    output.write(json.dumps(line, ensure_ascii=False) + "\n")
                    written += 1
                    bar.update(1)
            output.flush()
        return written

    written = run_async(write)
    click.echo(f"exported {written} orders", err=True)


@main.group()
def retention() -> None:
    """Retention of finished orders (RELAY_RETENTION and friends; needs RELAY_REDIS_URL)."""


@retention.command("backfill")
def retention_backfill() -> None:
    """Put orders stored before this version on the expiry and retention schedules, so retention
    deletes them too; run once after upgrading (running it again changes nothing)."""
    settings = operator_settings("retention backfill")

    async def backfill() -> tuple[int, int, int]:
        async with operations(settings, writes=True) as ops:
            retention = ops.retention
            project_ids = await ops.store.project_ids()
            total = await retention.stored_orders(project_ids)
            with click.progressbar(length=total, label="scheduling", file=sys.stderr) as bar:
                return await retention.backfill_all(project_ids, clock=ops.clock, progress=bar)

    expiring, retained, counted = run_async(backfill)
    click.echo(f"scheduled {expiring} to expire and {retained} for deletion; {counted} orders stored")


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
    settings = operator_settings("keys rotate")

    async def rotate() -> int:
        async with operations(settings, writes=True) as ops:
            project_ids = await ops.store.project_ids()
            done = 0
            with click.progressbar(project_ids, label="re-encrypting") as bar:
                for project_id in bar:
                    try:
                        done += await ops.store.reencrypt_project(project_id)
                    except RelayError as error:
                        raise RelayError(f"project {project_id}: {error.detail}") from None
        return done

    click.echo(f"re-encrypted {run_async(rotate)} projects")


LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def operator_settings(command: str, *, remote: bool = False) -> Settings:
    """The settings of an operator command: Redis's URL, or, for the ones that also work over
    HTTP (``remote``), RELAY_URL with a token, which wins over RELAY_REDIS_URL."""
    settings = load_settings(log_format="console")
    if remote and settings.url is not None:
        if settings.api_key is None and settings.admin_token is None:
            fail(f"{command} over RELAY_URL needs RELAY_ADMIN_TOKEN or a project's RELAY_API_KEY")
        return settings
    require_redis(settings, command)
    return settings


def run_remote(settings: Settings, work: Callable[[Remote], Awaitable[T]], *, admin: bool = True) -> T:
    """``work`` against the relay at RELAY_URL, with the admin token (``admin``: the command uses
    admin routes), else with RELAY_API_KEY when set, else the admin token; an error answer ends the
    command with the relay's own words."""
    from relay.remote import RemoteError, remote

    secret = settings.admin_token if admin else settings.api_key or settings.admin_token
    url = settings.url
    if secret is None or url is None:
        fail(
            "this command over RELAY_URL needs RELAY_ADMIN_TOKEN (a project's API key reaches no admin route)"
        )
    if urlsplit(url).scheme == "http" and urlsplit(url).hostname not in LOOPBACK_NAMES:
        click.echo(
            f"relay: warning: {url} is plain http: the token crosses the network unencrypted", err=True
        )

    async def main() -> T:
        async with remote(url, secret.get_secret_value()) as client:
            return await work(client)

    try:
        return run_async(main)
    except RemoteError as error:
        fail(f"the relay at {settings.url} answered {error}")


def check_selection(event_ids: tuple[str, ...], everything: bool, filters: object) -> None:
    if everything == bool(event_ids):
        fail("give EVENT_ID... or --all")
    if filters and not everything:
        fail("--project and --since filter --all; they cannot be combined with EVENT_IDs")


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """A cell as a terminal shows it: control characters (a merchant's answer may hold escape
    sequences) written as \\xNN, never sent to the terminal."""
    return CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def print_rows(rows: list[dict[str, Any]], as_json: bool, columns: tuple[str, ...]) -> None:
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("(none)")
        return
    table = [
        [_printable(str(row.get(column) if row.get(column) is not None else "-")) for column in columns]
        for row in rows
    ]
    widths = [max(len(column), *(len(line[index]) for line in table)) for index, column in enumerate(columns)]
    click.echo("  ".join(column.upper().ljust(width) for column, width in zip(columns, widths, strict=True)))
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
