"""The built-in sandbox checkout (only when RELAY_MIDTRANS_SERVER_KEY is unset).

``GET /sandbox/checkout/{order_id}`` shows the purchase with "Pay" and "Expire" buttons. Each button
carries a Midtrans-format notification signed with the sandbox key and posts it, from the browser,
to the relay's own ``/callbacks/midtrans``: the same route and checks a real gateway goes through.
"""

from __future__ import annotations

import html

from aiohttp import web

from relay.api.context import CLOCK, SETTINGS, STORE
from relay.api.middleware import not_found
from relay.gateways.midtrans import settlement_payload, sign_notification
from relay.jsonutil import dumps

routes = web.RouteTableDef()

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
<tr><th align="left">Status</th><td id="status">{status}</td></tr>
</table>
<p>
<button id="pay" data-notification="{pay}">Pay</button>
<button id="expire" data-notification="{expire}">Expire</button>
</p>
<p id="result" role="status"></p>
<script>
for (const button of document.querySelectorAll("button[data-notification]")) {{
  button.addEventListener("click", async () => {{
    const response = await fetch("/callbacks/midtrans", {{
      method: "POST", headers: {{"content-type": "application/json"}},
      body: button.dataset.notification}});
    const body = await response.json();
    document.getElementById("result").textContent =
      response.ok ? "Gateway notification accepted (" + button.id + ")." : body.error + ": " + body.detail;
    if (response.ok) location.reload();
  }});
}}
</script>
</body></html>
"""


@routes.get("/sandbox/checkout/{order_id}")
async def checkout(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    order_id = request.match_info["order_id"]
    purchase = await request.app[STORE].get_purchase(order_id) if settings.sandbox else None
    if purchase is None:
        raise not_found("order", order_id)
    now = request.app[CLOCK]()

    def notification(status: str) -> str:
        signed = sign_notification(
            settlement_payload(purchase, status=status, now=now), settings.midtrans_key
        )
        return html.escape(dumps(signed), quote=True)

    page = PAGE.format(
        order_id=html.escape(purchase.order_id),
        item_name=html.escape(purchase.item_name),
        amount=purchase.amount,
        currency=html.escape(purchase.currency),
        status=html.escape(purchase.status.value),
        pay=notification("settlement"),
        expire=notification("expire"),
    )
    return web.Response(text=page, content_type="text/html")
