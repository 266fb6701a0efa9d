"""The relay's exceptions, and ``classify``: any exception as the ``RelayError`` it means.

Handlers raise, they never build error bodies. ``classify`` is the one mapping from an exception to
what a client is told: the JSON API (``relay.api.middleware``) and the console
(``relay.console.middleware``) render its answer each in their own way, so the two cannot drift.

    RelayError                      base for everything the HTTP edge turns into {"error", "detail"}
    ├── InvalidInput          400   malformed JSON, wrong types, failed validation
    ├── Unauthorized          401   missing or wrong bearer token
    ├── VerificationError     401   a gateway signature that does not verify
    ├── Forbidden             403   a console form without its session's CSRF token
    ├── NotFound              404   unknown project, item, purchase, event or route
    ├── Conflict              409   a request that contradicts stored state
    │   └── AmountMismatch    409   a callback whose amount differs from the purchase
    ├── MethodNotAllowed      405   a route that exists, with another method
    ├── RequestTimeout        408   a body that arrives too slowly
    ├── PayloadTooLarge       413   body over RELAY_MAX_BODY_BYTES
    ├── TooManyRequests       429   over a rate limit (with Retry-After)
    ├── HTTPError             4xx   any other client error aiohttp raises itself
    ├── InternalError         500   a bug: logged with its traceback, never shown
    ├── UpstreamUnavailable   502   a gateway API (e.g. Midtrans Snap) failed a buyer-facing call
    ├── GatewayUnavailable    503   a gateway status API failed while confirming a callback:
    │                               the gateway should retry the callback
    ├── Overloaded            503   this process holds as many request bodies as it may (Retry-After)
    ├── SecretUndecryptable   503   no key of RELAY_ENCRYPTION_KEYS opens a stored signing secret
    └── StoreUnavailable      503   Redis unreachable, loading, read-only or refusing writes
                                    (OOM, MISCONF, ...): the caller should retry

    DeliveryError                   one failed delivery attempt (never leaves the worker)
    ├── RetryableDelivery           non-2xx, timeout, connection error: schedule the next attempt
    └── PermanentDelivery           410 Gone, refused target: dead-letter at once
"""

from __future__ import annotations

import structlog
from aiohttp import web
from redis.exceptions import BusyLoadingError, OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What Redis being away looks like: down, restarting, loading, failed over to a replica.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, ConnectionError)

# Error replies that mean "cannot write now" rather than a bug: out of memory (maxmemory with
# noeviction), refusing writes after a failed snapshot, no master, too few replicas.
UNAVAILABLE_REPLIES = ("OOM", "MISCONF", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN", "TRYAGAIN")


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


def not_found(kind: str, key: str) -> NotFound:
    """``NotFound`` naming what was looked for (the key cut short: it may be anything a client sent)."""
    return NotFound(f"{kind} {key[:80]!r} does not exist")


class Conflict(RelayError):
    status = 409


class AmountMismatch(Conflict):
    pass


class SoldOut(Conflict):
    """The item has fewer units left than the purchase asks for (its stock)."""


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


class MethodNotAllowed(RelayError):
    status = 405


class HTTPError(RelayError):
    """A client error aiohttp raised itself (a malformed request line, an unsupported media type)."""

    def __init__(self, detail: str, *, status: int) -> None:
        super().__init__(detail)
        self.status = status


class InternalError(RelayError):
    status = 500


class TooManyRequests(RelayError):
    status = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


def store_refused(error: ResponseError) -> bool:
    """Whether an error reply means the store cannot take writes for now (not a bug)."""
    return isinstance(error, OutOfMemoryError) or str(error).startswith(UNAVAILABLE_REPLIES)


def classify(error: BaseException) -> RelayError:
    """The ``RelayError`` that ``error`` means to a client. Anything unforeseen is an
    ``InternalError``, whose caller logs the original with its traceback (``report``). aiohttp's own
    HTTP errors (404 for no route, 405, 413) keep their status; a redirect is not an error and is
    not passed here."""
    if isinstance(error, RelayError):
        return error
    if isinstance(error, REDIS_DOWN):
        return StoreUnavailable("the store is unavailable; retry later")
    if isinstance(error, ResponseError) and store_refused(error):
        return StoreUnavailable("the store refuses writes for now; retry later")
    if isinstance(error, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("the body is larger than this relay accepts")
    if isinstance(error, web.HTTPNotFound):
        return NotFound("no such route")
    if isinstance(error, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(error.reason)
    if isinstance(error, web.HTTPException) and error.status >= 400:
        return HTTPError(error.reason, status=error.status)
    return InternalError("an internal error occurred")


def report(error: BaseException, classified: RelayError, log: structlog.typing.FilteringBoundLogger) -> None:
    """Log, on the caller's ``log``, what a client is not told in full: the store being away or
    refusing writes, and bugs (with their traceback). A client's own mistakes are logged by the
    request's log line alone."""
    if isinstance(classified, InternalError):
        log.error("unhandled_error", exc_info=error)
    elif isinstance(error, REDIS_DOWN):
        log.warning("store_unavailable", error=type(error).__name__)
    elif isinstance(classified, StoreUnavailable) and classified is not error:
        log.warning("store_refused", reply=str(error)[:80])


class DeliveryError(Exception):
    """One delivery attempt failed; ``reason`` goes into the attempt log, with what kind of failure
    it was (``error_class``) and, when the endpoint answered, its headers and the first bytes of its
    body (``relay.models.Attempt``)."""

    def __init__(
        self,
        reason: str,
        *,
        error_class: str,
        status_code: int | None = None,
        response: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_class = error_class
        self.status_code = status_code
        self.response = response
        self.headers = headers


class RetryableDelivery(DeliveryError):
    def __init__(
        self,
        reason: str,
        *,
        error_class: str,
        status_code: int | None = None,
        retry_after: float | None = None,
        response: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            reason, error_class=error_class, status_code=status_code, response=response, headers=headers
        )
        self.retry_after = retry_after


class PermanentDelivery(DeliveryError):
    pass


class SecretUndecryptable(RelayError):
    """A stored signing secret that no key of RELAY_ENCRYPTION_KEYS opens (503: an operator must
    put the key it was stored under back; deliveries of its project are dead-lettered with reason
    ``secret_undecryptable``, everything else goes on)."""

    status = 503


class Overloaded(RelayError):
    """503: this process already holds as many request body bytes as it may
    (``relay.api.middleware.BodyBudget``, 256 x RELAY_MAX_BODY_BYTES); the client retries shortly."""

    status = 503

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}
