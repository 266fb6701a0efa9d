"""Arbitrary bytes, headers and JSON at every public route of a running relay (issue 12, item 6).

Whatever arrives: never a 5xx but 503, the error shape ``{"error", "detail"}`` on the API (an HTML
page on the console), and no ``unhandled_error`` or traceback in the logs. Requests are sent as raw
bytes, so header values can be anything HTTP lets through to the application (bytes 0x80-0xFF
included; control characters are refused by the HTTP parser itself, before the relay). Paths are
the routes' templates with random, percent-encoded parameters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tests.gateway_callbacks import GATEWAY_SETTINGS
from tests.helpers import ADMIN_TOKEN, Running, StartRelay, raw_request


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# {id} and {q}: a random path segment or query value, percent-encoded as a client would.
PUBLIC_ROUTES = [
    ("POST", "/callbacks/midtrans"),
    ("POST", "/callbacks/xendit"),
    ("POST", "/callbacks/tripay"),
    ("POST", "/callbacks/doku"),
    ("POST", "/callbacks/duitku"),
    ("POST", "/callbacks/custom/shop"),
    ("POST", "/callbacks/custom/{id}"),
    ("POST", "/callbacks/{id}"),
    ("GET", "/api/platform/public-items?client_id={q}"),
    ("POST", "/api/platform/public-items/purchase"),
    ("GET", "/sandbox/checkout/{id}?token={q}"),
    ("POST", "/sandbox/checkout/{id}?token={q}"),
    ("GET", "/console/login"),
    ("POST", "/console/login"),
    ("GET", "/console"),
    ("GET", "/console/projects/{id}"),
    ("POST", "/console/dead-letters/replay-all"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
]
# Without a token or with a garbage one (the header strategy sends either).
ADMIN_ROUTES = [
    ("GET", "/metrics"),
    ("GET", "/api/admin/dead-letters?project_id={q}&since={q}&limit={q}&cursor={q}"),
    ("POST", "/api/admin/dead-letters/replay"),
    ("DELETE", "/api/admin/dead-letters/{id}"),
    ("PUT", "/api/platform/projects"),
    ("GET", "/api/platform/projects/{id}"),
    ("POST", "/api/platform/projects/{id}/webhook-secret/rotate"),
    ("PUT", "/api/platform/items"),
    ("GET", "/api/platform/items?project_id={q}"),
    ("GET", "/api/platform/projects/{id}/item-purchases/{id}"),
    ("POST", "/api/platform/projects/{id}/item-purchases/{id}/retry-webhook"),
]
ROUTES = PUBLIC_ROUTES + ADMIN_ROUTES
JSON_ROUTES = [route for route in ROUTES if route[0] in {"POST", "PUT"} and "console" not in route[1]]

HEADER_NAMES = [
    "Authorization",
    "Cookie",
    "Content-Type",
    "X-Request-Id",
    "x-callback-token",
    "X-Callback-Signature",
    "X-Callback-Event",
    "Client-Id",
    "Request-Id",
    "Request-Timestamp",
    "Signature",
    "X-Shop-Signature",
    "X-Shop-Timestamp",
    "Idempotency-Key",
    "X-Forwarded-For",
    "Accept",
]
CONTENT_TYPES = [
    b"application/json",
    b"application/json; charset=latin-1",
    b"application/x-www-form-urlencoded",
    b"application/x-www-form-urlencoded; charset=utf-16",
    b"application/x-www-form-urlencoded; charset=no-such-charset",
    b"multipart/form-data; boundary=x",
    b"multipart/form-data",
    b"text/plain",
]


def header_bytes(raw: bytes) -> bytes:
    """What an HTTP parser passes on in a header value: tab, printable ASCII and 0x80-0xFF."""
    return bytes(byte for byte in raw if byte == 9 or 32 <= byte < 127 or byte >= 128).strip()


header_values = st.one_of(
    st.binary(max_size=60).map(header_bytes),
    st.text(max_size=40).map(lambda text: header_bytes(text.encode("utf-8", "surrogatepass"))),
    st.sampled_from(CONTENT_TYPES),
    st.binary(max_size=40).map(lambda raw: b"Bearer " + header_bytes(raw)),
    st.binary(max_size=40).map(lambda raw: b"relay_console=" + header_bytes(raw)),
    st.binary(max_size=40).map(lambda raw: b"__Host-relay_console=" + header_bytes(raw)),
)
headers = st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=6)

# JSON text built piece by piece, so it can hold what json.dumps would never write.
SPECIAL = [
    "9" * 4301,
    "-" + "1" * 5000,
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\ud83d\\ude00"',
    "[" * 300 + "]" * 300,
    '{"a":' * 200 + "1" + "}" * 200,
    "1e999",
    "-0.0",
    "NaN",
    "Infinity",
    '"0001-01-01T00:00:00+07:00"',
    '"9999-12-31 23:59:59"',
    '"0001-01-01 00:00:00"',
    '"\\u0000"',
]
KEYS = [
    "order_id",
    "status_code",
    "gross_amount",
    "signature_key",
    "transaction_status",
    "settlement_time",
    "external_id",
    "status",
    "paid_at",
    "paid_amount",
    "merchant_ref",
    "total_amount",
    "client_id",
    "item_id",
    "buyer_email",
    "amount",
    "metadata",
    "name",
    "webhook_url",
    "event_ids",
    "all",
    "\\ud800",
]
json_scalars = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=30).map(lambda text: json.dumps(text)),
    st.sampled_from(["true", "false", "null", '""']),
)
json_text = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(st.sampled_from(KEYS), children), max_size=5).map(
            lambda pairs: "{" + ",".join(f'"{key}":{value}' for key, value in pairs) + "}"
        ),
    ),
    max_leaves=12,
)
forms = st.dictionaries(
    st.sampled_from(["token", "action", "csrf_token", "merchantOrderId", "resultCode"]),
    st.text(max_size=20),
    max_size=4,
).map(lambda form: urlencode(form).encode())
bodies = st.one_of(
    st.binary(max_size=300), json_text.map(lambda text: text.encode("utf-8", "surrogatepass")), forms
)
# Percent-encoded as a client would (quote never encodes unreserved characters; "/" stays a
# separator, since the relay refuses an encoded one: tests/test_api_middleware.py).
segments = st.text(max_size=30).map(lambda text: quote(text.encode("utf-8", "surrogatepass"), safe="/"))


def fill(template: str, values: list[str]) -> str:
    for value in values:
        template = template.replace("{id}", value or "x", 1).replace("{q}", value, 1)
    return template.replace("{id}", "x").replace("{q}", "")


def http(method: str, path: str, headers: dict[str, bytes], body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n".encode()
    head += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    for name, value in headers.items():
        head += name.encode() + b": " + value + b"\r\n"
    return head + b"\r\n" + body


class Errors(logging.Handler):
    """Error records of the standard library's loggers (aiohttp logs what escapes an application)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def stdlib_errors() -> Iterator[Errors]:
    errors = Errors()
    root = logging.getLogger()
    root.addHandler(errors)
    yield errors
    root.removeHandler(errors)


@pytest.fixture
async def fuzzed(start_relay: StartRelay) -> Running:
    """Every gateway configured and the sandbox on: every public route exists."""
    return await start_relay(worker=False, **GATEWAY_SETTINGS)


async def assert_handled(
    running: Running, errors: Errors, method: str, path: str, sent: dict[str, bytes], body: bytes
) -> None:
    with capture_logs() as logs:
        answer = await raw_request(running.url, http(method, path, sent, body), timeout=15)
    where = (method, path, sent, body[:200], answer.status, answer.body[:300])
    assert answer.status < 500 or answer.status == 503, where
    if answer.status >= 400:
        if path.startswith("/console"):
            assert answer.headers["content-type"].startswith("text/html"), where
        else:
            assert answer.headers["content-type"].startswith("application/json"), where
            error = json.loads(answer.body)
            assert set(error) == {"error", "detail"}, where
            assert isinstance(error["error"], str), where
            assert isinstance(error["detail"], str), where
    assert not [entry for entry in logs if entry["event"] == "unhandled_error" or "exc_info" in entry], where
    assert not errors.records, [record.getMessage() for record in errors.records]


@fuzz(300)
@given(
    route=st.sampled_from(ROUTES),
    values=st.lists(segments, min_size=4, max_size=4),
    sent=headers,
    body=bodies,
)
async def test_anything_anywhere(
    fuzzed: Running,
    stdlib_errors: Errors,
    route: tuple[str, str],
    values: list[str],
    sent: dict[str, bytes],
    body: bytes,
) -> None:
    method, template = route
    await assert_handled(
        fuzzed, stdlib_errors, method, fill(template, values), sent, body if method != "GET" else b""
    )


@fuzz(150)
@given(route=st.sampled_from(JSON_ROUTES), text=json_text)
async def test_hostile_json_on_every_json_route(
    fuzzed: Running, stdlib_errors: Errors, route: tuple[str, str], text: str
) -> None:
    """JSON that Python cannot parse whole (4,300+ digit integers, deep nesting, lone surrogates)
    is a 400 at most. Admin routes get the admin token here, so the JSON reaches their parsing
    (garbage tokens, and the failed-auth limit they run into, are the test above's)."""
    method, template = route
    sent = {"Content-Type": b"application/json"}
    if route in ADMIN_ROUTES:
        sent["Authorization"] = f"Bearer {ADMIN_TOKEN}".encode()
    body = text.encode("utf-8", "surrogatepass")
    await assert_handled(fuzzed, stdlib_errors, method, fill(template, ["x"] * 4), sent, body)
