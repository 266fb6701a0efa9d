"""The routes of ``relay.api.billing`` in the OpenAPI document: shop payments, plans and
subscriptions (builder routes; the public subscribe route is with the other public ones)."""

from __future__ import annotations

from relay.openapi.parts import Schema, error, json_body, link, obj, ok, operation, path_param, ref
from relay.openapi.paths import IDEMPOTENCY_CONFLICT, PROJECT_ID, idempotency_key, invoice_answer

PAYMENT_ORDER_ID = path_param(
    "order_id",
    "The merchant's own order id, as the payment was created with.",
    {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
)
SUBSCRIPTION_ID = path_param("subscription_id", "The subscription's id (`sub_...`).")


def billing_paths() -> dict[str, Schema]:
    subscription = ok(obj(subscription=ref("Subscription")))
    return {
        "/api/platform/projects/{project_id}/payments": {
            "post": operation(
                "createPayment",
                "Start a shop payment: the merchant's own order id and amount, no item",
                tag="builder",
                admin=True,
                description="`order_id` is unique in the project: the same body again answers the same "
                "invoice, another body is a 409. Paid, it sends `payment.paid` to the project's "
                "`webhook_url` with this `order_id`; the gateway sees `gateway_order_id`.",
                parameters=[PROJECT_ID, idempotency_key("project")],
                body=json_body(ref("PaymentIn")),
                responses={
                    200: invoice_answer()
                    | {
                        "links": {
                            "GetPayment": link(
                                "getPayment",
                                project_id="$request.path.project_id",
                                order_id="$response.body#/order_id",
                            )
                        }
                    },
                    400: error(
                        400,
                        "`InvalidInput`: a body that does not validate, a gateway that is not configured, "
                        "or a malformed Idempotency-Key.",
                    ),
                    404: error(404, "`NotFound`: no such project."),
                    409: error(409, f"{IDEMPOTENCY_CONFLICT}; or the order_id exists with another body."),
                    502: error(502),
                },
            )
        },
        "/api/platform/projects/{project_id}/payments/{order_id}": {
            "get": operation(
                "getPayment",
                "A shop payment with its delivery attempts",
                tag="builder",
                admin=True,
                parameters=[PROJECT_ID, PAYMENT_ORDER_ID],
                responses={
                    200: ok(obj(payment=ref("Payment"))),
                    404: error(404, "`NotFound`: no such project, or no such payment in it."),
                },
            )
        },
        "/api/platform/plans": {
            "put": operation(
                "putPlan",
                "Create a plan, or update the fields given when `id` names an existing one",
                tag="builder",
                admin=True,
                description="A changed price or interval applies to subscriptions taken after the change.",
                body=json_body(ref("PlanIn")),
                responses={
                    200: ok(
                        obj(plan=ref("Plan")),
                        links={"ListPlans": link("listPlans", project_id="$response.body#/plan/project_id")},
                    ),
                    404: error(404, "`NotFound`: no such project."),
                    409: error(409, "`Conflict`: the plan belongs to another project."),
                },
            )
        },
        "/api/platform/projects/{project_id}/plans": {
            "get": operation(
                "listPlans",
                "A project's plans",
                tag="builder",
                admin=True,
                parameters=[PROJECT_ID],
                responses={200: ok(obj(plans={"type": "array", "items": ref("Plan")})), 404: error(404)},
            )
        },
        "/api/platform/projects/{project_id}/subscriptions/{subscription_id}": {
            "get": operation(
                "getSubscription",
                "A subscription: its status and current period",
                tag="builder",
                admin=True,
                parameters=[PROJECT_ID, SUBSCRIPTION_ID],
                responses={200: subscription, 404: error(404)},
            )
        },
        "/api/platform/projects/{project_id}/subscriptions/{subscription_id}/cancel": {
            "post": operation(
                "cancelSubscription",
                "Cancel a subscription at the end of its period",
                tag="builder",
                admin=True,
                description="An active subscription stays `active` with `cancel_at_period_end` until its "
                "period ends, then becomes `canceled` (`subscription.canceled`); a past_due one ends "
                "now (`subscription.canceled`), a pending one ends now without an event. Canceling "
                "again changes nothing.",
                parameters=[PROJECT_ID, SUBSCRIPTION_ID],
                responses={
                    200: subscription,
                    404: error(404),
                    409: error(
                        409, "`Conflict`: the subscription kept changing while it was canceled; retry."
                    ),
                },
            )
        },
    }
