"""The audit log: every change through the admin token, a project's API key or the console is
recorded (who, what, on what, when, from where), reads are not, and it is paged through
``GET /api/admin/audit`` and shown in the console; it keeps RELAY_RETENTION."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from relay.audit import AuditLog
from tests.console_client import console_client
from tests.helpers import T0, Api, Backend, StartRelay


async def audit(api: Api, **query: Any) -> dict[str, Any]:
    params = {key: str(value) for key, value in query.items()}
    body: dict[str, Any] = await api.call("GET", "/api/admin/audit", params=params)
    return body


async def test_changes_are_recorded_with_who_what_and_where_and_reads_are_not(
    start_relay: StartRelay,
) -> None:
    running = await start_relay()
    api = running.api
    project = await api.project()
    rotate = f"/api/platform/projects/{project['id']}/webhook-secret/rotate"
    await api.call("POST", rotate)
    await api.call("GET", f"/api/platform/projects/{project['id']}")  # a read: not recorded
    key = (await api.call("POST", f"/api/platform/projects/{project['id']}/api-keys", json={"name": "b"}))[
        "api_key"
    ]
    headers = {"Authorization": f"Bearer {key['key']}"}
    await api.call("POST", rotate, auth=False, headers=headers)
    await api.call("POST", rotate, auth=False, headers={"Authorization": "Bearer rk_wrong"}, expect=401)

    entries = (await audit(api))["entries"]
    actions = [(entry["actor"], entry["action"]) for entry in entries]
    assert actions == [
        ("admin", "PUT /api/platform/projects"),
        ("admin", "POST /api/platform/projects/{project_id}/webhook-secret/rotate"),
        ("admin", "POST /api/platform/projects/{project_id}/api-keys"),
        (f"key:{key['id']}", "POST /api/platform/projects/{project_id}/webhook-secret/rotate"),
    ]
    assert entries[0]["target"] == {"project_id": project["id"]}  # the project it made
    assert entries[2]["target"] == {"project_id": project["id"], "key_id": key["id"]}  # the key it made
    by_key = entries[-1]
    assert by_key["target"] == {"project_id": project["id"]}
    assert by_key["project_id"] == project["id"]
    assert by_key["address"] == "127.0.0.1"
    assert by_key["status"] == 200
    assert by_key["request_id"]
    # The key itself is never in the log.
    assert key["key"] not in str(entries)

    async with console_client(running.url) as console:
        await console.login()
        token = await console.csrf("/console/dead-letters")
        await console.post("/console/dead-letters/replay-all", {"csrf_token": token})
        page = await console.get("/console/audit")
    assert "/console/dead-letters/replay-all" in page
    assert (await audit(api))["entries"][-1]["actor"] == "console"


async def test_pages_walk_the_log_once_and_old_entries_leave(stores: Backend) -> None:
    log = AuditLog(stores.redis, prefix="t", retention=timedelta(days=1))
    for minute in range(7):
        await log.record(
            actor="admin",
            action="POST /x",
            target={},
            project_id=None,
            address="127.0.0.1",
            status=200,
            request_id=f"r{minute}",
            now=T0 + timedelta(minutes=minute),
        )
    seen, cursor = [], None
    while True:
        page = await log.page(limit=3, cursor=cursor)
        seen += [entry.request_id for entry in page.entries]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"r{minute}" for minute in range(7)]
    since = await log.page(since=T0 + timedelta(minutes=5))
    assert [entry.request_id for entry in since.entries] == ["r5", "r6"]
    # A day later, recording trims what is older than the retention.
    await log.record(
        actor="admin", action="POST /x", target={}, project_id=None, address="a", status=200,
        request_id="late", now=T0 + timedelta(days=1, minutes=3),
    )  # fmt: skip
    assert [entry.request_id for entry in (await log.page()).entries] == ["r3", "r4", "r5", "r6", "late"]


async def test_a_cursor_that_is_no_cursor_is_a_400(start_relay: StartRelay) -> None:
    api = (await start_relay()).api
    for cursor in ("1" * 4400 + ":x", "abc:x", "12"):
        body = await api.call("GET", "/api/admin/audit", params={"cursor": cursor}, expect=400)
        assert body["error"] == "InvalidInput"
        await api.call("GET", "/api/admin/dead-letters", params={"cursor": cursor}, expect=400)
