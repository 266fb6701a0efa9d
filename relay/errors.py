"""The relay's exceptions.

Every error a client can cause maps to one HTTP status in one middleware (``relay.api.middleware``);
handlers raise, they never build error bodies.

    RelayError                      base for everything the HTTP edge turns into {"error", "detail"}
    ├── InvalidInput          400   malformed JSON, wrong types, failed validation
    ├── Unauthorized          401   missing or wrong bearer token
    ├── VerificationError     401   a gateway signature that does not verify
    ├── Forbidden             403   a console form without its session's CSRF token
    ├── NotFound              404   unknown project, item, purchase, event or route
    ├── Conflict              409   a request that contradicts stored state
    │   └── AmountMismatch    409   a callback whose amount differs from the purchase
    ├── RequestTimeout        408   a body that arrives too slowly
    ├── PayloadTooLarge       413   body over RELAY_MAX_BODY_BYTES
    ├── TooManyRequests       429   over a rate limit (with Retry-After)
    ├── UpstreamUnavailable   502   a gateway API (e.g. Midtrans Snap) failed a buyer-facing call
    ├── GatewayUnavailable    503   a gateway status API failed while confirming a callback:
    │                               the gateway should retry the callback
    └── StoreUnavailable      503   Redis unreachable: the caller should retry

    DeliveryError                   one failed delivery attempt (never leaves the worker)
    ├── RetryableDelivery           non-2xx, timeout, connection error: schedule the next attempt
    └── PermanentDelivery           410 Gone, refused target: dead-letter at once
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of the errors that become HTTP responses."""

    status = 500
    headers: dict[str, str] = {}

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(RelayError):
    status = 400


class Unauthorized(RelayError):
    status = 401


class VerificationError(RelayError):
    status = 401


class Forbidden(RelayError):
    status = 403


class NotFound(RelayError):
    status = 404


class Conflict(RelayError):
    status = 409


class AmountMismatch(Conflict):
    pass


class RequestTimeout(RelayError):
    status = 408


class PayloadTooLarge(RelayError):
    status = 413


class UpstreamUnavailable(RelayError):
    status = 502


class GatewayUnavailable(RelayError):
    status = 503


class StoreUnavailable(RelayError):
    status = 503


class TooManyRequests(RelayError):
    status = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


class DeliveryError(Exception):
    """One delivery attempt failed; ``reason`` goes into the attempt log."""

    def __init__(self, reason: str, *, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class RetryableDelivery(DeliveryError):
    def __init__(
        self, reason: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason, status_code=status_code)
        self.retry_after = retry_after


class PermanentDelivery(DeliveryError):
    pass
