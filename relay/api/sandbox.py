"""The built-in sandbox checkout (only when RELAY_MIDTRANS_SERVER_KEY is unset).

``GET /sandbox/checkout/{order_id}`` shows the purchase with "Pay" and "Expire" buttons.

For a Midtrans purchase each button carries a Midtrans-format notification signed with the sandbox
key (derived from the admin token, never a real key) and posts it, from the browser, to the relay's
own ``/callbacks/midtrans``: the same route and checks a real gateway goes through.

For any other gateway the keys are real ones, so nothing signed reaches the browser: the buttons
post a form to ``POST /sandbox/checkout/{order_id}`` (``action=pay|expire``), and the server builds
that gateway's callback (``Gateway.sandbox_callback``), posts it over HTTP to the relay's own
``/callbacks/<gateway>`` at the address this connection came in on (the socket's, never the Host
header's), and redirects back to the page.
"""

from __future__ import annotations

import hmac
import html
import re
from urllib.parse import quote

import aiohttp
from aiohttp import web

from relay.api.context import CLOCK, GATEWAYS, HTTP, SETTINGS, STORE
from relay.api.middleware import not_found
from relay.errors import Conflict, InvalidInput
from relay.gateways.midtrans import settlement_payload, sign_notification
from relay.jsonutil import dumps
from relay.models import Purchase, PurchaseStatus
from relay.settings import Settings

routes = web.RouteTableDef()

ACTIONS = {"pay": PurchaseStatus.PAID, "expire": PurchaseStatus.EXPIRED}
ACCEPTED = "accepted"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox checkout {order_id}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.5rem 1.5rem;margin-right:.5rem}}#result{{margin-top:1rem}}</style></head>
<body>
<h1>Sandbox checkout</h1>
<p>This page stands in for the payment gateway. Nothing is charged.</p>
<table>
<tr><th align="left">Order</th><td id="order">{order_id}</td></tr>
<tr><th align="left">Item</th><td>{item_name}</td></tr>
<tr><th align="left">Amount</th><td>{amount} {currency}</td></tr>
<tr><th align="left">Gateway</th><td id="gateway">{gateway}</td></tr>
<tr><th align="left">Status</th><td id="status">{status}</td></tr>
</table>
{buttons}
<p id="result" role="status">{result}</p>
{script}
</body></html>
"""

MIDTRANS_BUTTONS = """<p>
<button id="pay" data-notification="{pay}">Pay</button>
<button id="expire" data-notification="{expire}">Expire</button>
</p>"""

MIDTRANS_SCRIPT = """<script>
for (const button of document.querySelectorAll("button[data-notification]")) {
  button.addEventListener("click", async () => {
    const response = await fetch("/callbacks/midtrans", {
      method: "POST", headers: {"content-type": "application/json"},
      body: button.dataset.notification});
    const body = await response.json();
    document.getElementById("result").textContent =
      response.ok ? "Gateway notification accepted (" + button.id + ")." : body.error + ": " + body.detail;
    if (response.ok) location.reload();
  });
}
</script>"""

SIMULATION_OFF = """<p id="simulation-off">Simulating this gateway's callback is off: it would be signed
with the gateway key configured here. Set RELAY_SANDBOX_GATEWAYS=true only with test keys.</p>"""
FORM_BUTTONS = """<form method="post" action="{action}">
<button id="pay" name="action" value="pay">Pay</button>
<button id="expire" name="action" value="expire">Expire</button>
</form>"""


def checkout_path(settings: Settings, order_id: str) -> str:
    """The sandbox checkout link of an order, with the token that opens it."""
    return f"/sandbox/checkout/{quote(order_id, safe='')}?token={settings.sandbox_token(order_id)}"


async def _sandbox_purchase(request: web.Request) -> Purchase:
    order_id = request.match_info["order_id"]
    settings = request.app[SETTINGS]
    token = request.query.get("token", "")
    opened = settings.sandbox and hmac.compare_digest(
        token.encode(), settings.sandbox_token(order_id).encode()
    )
    purchase = await request.app[STORE].get_purchase(order_id) if opened else None
    if purchase is None:
        raise not_found("order", order_id)
    return purchase


def _may_simulate(settings: Settings, purchase: Purchase) -> bool:
    """Other gateways sign with real configured keys: simulating them lets anyone who can reach
    this page pay, so it is off unless RELAY_SANDBOX_GATEWAYS opts in (test keys only)."""
    return purchase.gateway == "midtrans" or settings.sandbox_gateways


def _result_line(result: str | None) -> str:
    if not result:
        return ""
    if result == ACCEPTED:
        return "Gateway callback accepted."
    return f"Gateway callback rejected: {html.escape(result[:64])}."


@routes.get("/sandbox/checkout/{order_id}")
async def checkout(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    purchase = await _sandbox_purchase(request)
    now = request.app[CLOCK]()

    def notification(status: str) -> str:
        signed = sign_notification(
            settlement_payload(purchase, status=status, now=now), settings.midtrans_key
        )
        return html.escape(dumps(signed), quote=True)

    if purchase.gateway == "midtrans":
        buttons = MIDTRANS_BUTTONS.format(pay=notification("settlement"), expire=notification("expire"))
        script = MIDTRANS_SCRIPT
    elif _may_simulate(settings, purchase):
        buttons = FORM_BUTTONS.format(
            action=html.escape(checkout_path(settings, purchase.order_id), quote=True)
        )
        script = ""
    else:
        buttons = SIMULATION_OFF
        script = ""
    page = PAGE.format(
        order_id=html.escape(purchase.order_id),
        item_name=html.escape(purchase.item_name),
        amount=purchase.amount,
        currency=html.escape(purchase.currency),
        gateway=html.escape(purchase.gateway),
        status=html.escape(purchase.status.value),
        buttons=buttons,
        result=_result_line(request.query.get("result")),
        script=script,
    )
    return web.Response(text=page, content_type="text/html")


@routes.post("/sandbox/checkout/{order_id}")
async def simulate(request: web.Request) -> web.Response:
    """Send the purchase's gateway callback to this relay's own route, then show the page again."""
    purchase = await _sandbox_purchase(request)
    if not _may_simulate(request.app[SETTINGS], purchase):
        raise Conflict("simulating this gateway is off (RELAY_SANDBOX_GATEWAYS)")
    action = (await request.post()).get("action")
    status = ACTIONS.get(action) if isinstance(action, str) else None
    if status is None:
        raise InvalidInput("action must be pay or expire")
    gateway = request.app[GATEWAYS].get(purchase.gateway)
    if gateway is None:
        raise not_found("gateway", purchase.gateway)
    body, headers = gateway.sandbox_callback(purchase, status, request.app[CLOCK]())
    url = f"{own_base_url(request)}/callbacks/{gateway.name}"
    try:
        async with request.app[HTTP].post(url, data=body, headers=headers) as response:
            answer = await response.json(content_type=None)
            accepted = response.status < 300
    except (aiohttp.ClientError, TimeoutError, ValueError) as failure:
        answer, accepted = {"error": type(failure).__name__}, False
    result = ACCEPTED
    if not accepted:
        name = answer.get("error") if isinstance(answer, dict) else None
        result = name if isinstance(name, str) and re.fullmatch(r"\w{1,64}", name) else "Error"
    location = f"{checkout_path(request.app[SETTINGS], purchase.order_id)}&result={result}"
    return web.Response(status=303, headers={"Location": location})


def own_base_url(request: web.Request) -> str:
    """The address this relay listens on, from the connection's socket (never the Host header,
    which the client chooses)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        raise InvalidInput("the sandbox checkout needs the relay to listen on TCP")
    host, port = str(sockname[0]), int(sockname[1])
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
