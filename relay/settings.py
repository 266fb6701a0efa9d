"""All configuration, read once from ``RELAY_*`` environment variables by the CLI and passed down."""

from __future__ import annotations

import base64
import difflib
import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from relay.gateways.custom import CustomSourceConfig, parse_sources
from relay.models import WebhookUrl
from relay.retention import Lifetimes
from relay.targets import check_webhook_url

MAX_DURATION = timedelta(days=36500)


def _duration(value: object) -> object:
    """Seconds (``90``, ``0.5``) or an ISO 8601 duration (``P30D``, ``PT24H``), left to pydantic."""
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            return text
        if not math.isfinite(seconds):
            raise ValueError("must be a number of seconds or an ISO 8601 duration such as P30D")
        if abs(seconds) > MAX_DURATION.total_seconds():
            raise ValueError("must be at most 100 years")
        return timedelta(seconds=seconds)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _duration(str(value))
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    if value > MAX_DURATION:
        raise ValueError("must be at most 100 years")
    return value


# A length of time in a setting: seconds or ISO 8601, above zero.
Duration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_positive)]

DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
MIDTRANS_SANDBOX_API = "https://api.sandbox.midtrans.com"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore", frozen=True)

    redis_url: str | None = None
    # Redis through Sentinel (DESIGN.md, "Failover without loss"): the Sentinels' host:port, comma-
    # separated, and the service they watch. RELAY_REDIS_URL is then optional; its user, password
    # and db (never its host) apply to the primary the Sentinels name.
    redis_sentinels: str | None = None
    redis_sentinel_service: str = Field(default="relay", min_length=1, max_length=100)
    redis_sentinel_password: SecretStr | None = None
    # Acknowledged means replicated: a write the relay acknowledges is first confirmed by this many
    # replicas (WAIT) within the timeout in seconds, else 503 (relay.replicas).
    redis_min_replicas_ack: int = Field(default=0, ge=0, le=100)
    redis_ack_timeout: float = Field(default=1.0, gt=0, le=60)
    admin_token: SecretStr | None = None
    # The CLI's operator commands (dlq, purchases, events replay) talk to a running relay at this URL
    # over HTTP, with the admin token or a project's API key, instead of to Redis (it wins over
    # RELAY_REDIS_URL there). Nothing else reads them.
    url: str | None = None
    api_key: SecretStr | None = None
    midtrans_server_key: SecretStr | None = None
    midtrans_api_base: str = MIDTRANS_SANDBOX_API
    midtrans_snap_base: str | None = None
    midtrans_confirm: bool = False
    # Unset: the address a request reached the relay at (what `relay run --port N` is bound to).
    public_base_url: str | None = None
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    delivery_timeout: float = Field(default=15.0, gt=0, le=300)
    allow_private_targets: bool = False
    allowed_target_cidrs: Annotated[tuple[IPvAnyNetwork, ...], NoDecode] = ()
    # Proxies whose X-Forwarded-For is believed when they are the peer (relay.api.clients).
    trusted_proxies: Annotated[tuple[IPvAnyNetwork, ...], NoDecode] = ()
    # The sandbox checkout on purpose (it also runs, without this, when no gateway key is set at all).
    sandbox: bool = False
    require_https: bool = False
    sandbox_gateways: bool = False
    body_timeout: float = Field(default=10.0, gt=0, le=300)
    purchase_rate_limit: int = Field(default=60, ge=0, le=1_000_000)
    encryption_keys: SecretStr | None = None
    max_body_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    log_format: Literal["json", "console"] | None = None
    key_prefix: str = Field(default="relay", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    worker_max_jobs: int = Field(default=100, ge=1, le=10000)
    worker_host_concurrency: int = Field(default=10, ge=1, le=10000)
    # The share of a worker's slots that endpoints not proven quick, and stuck requests, may hold
    # together (workers.isolation): dead merchants cannot take every slot, however many they are.
    worker_stuck_share: float = Field(default=0.5, gt=0, le=1)
    worker_poll_delay: float = Field(default=0.05, gt=0, le=5)
    worker_metrics_port: int | None = Field(default=9100, ge=0, le=65535)
    # Loopback unless set: the worker's metrics carry sales volume (deploy/ sets 0.0.0.0 where
    # Prometheus scrapes the pod).
    worker_metrics_host: str = "127.0.0.1"
    # relay_project_deliveries_total{project,outcome}: one series per project and outcome, so off
    # unless asked for (a cell with thousands of projects would multiply Prometheus's series).
    metrics_per_project: bool = False
    sweep_interval: int = Field(default=30, ge=1, le=60)
    # How long finished orders (and their events and attempt logs) are kept; dead-lettered ones,
    # and how long an unpaid purchase waits before it expires (Midtrans Snap's default, 24 h).
    retention: Duration = timedelta(days=30)
    dead_letter_retention: Duration = timedelta(days=90)
    purchase_expiry: Duration = timedelta(hours=24)
    # An endpoint whose every delivery failed for this long is disabled (relay.endpoints).
    endpoint_disable_after: Duration = timedelta(days=5)
    # A subscription's next invoice is made this long before its period ends (subscription.
    # renewal_due); unpaid this long after the period ended, the subscription expires.
    renewal_notice: Duration = timedelta(days=3)
    subscription_grace: Duration = timedelta(days=3)
    # Where the relay's own alerts go (message.attempt.exhausted, endpoint.disabled), signed with
    # the whsec_ secret like a merchant's webhook.
    operator_webhook_url: WebhookUrl = None
    operator_webhook_secret: SecretStr | None = None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None  # set but empty means unset: the embedded store
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = [part for part in value.split(",") if part.strip()]
        if not parts:
            raise ValueError("give the Sentinels as host:port, comma-separated")
        for part in parts:
            _host_port(part)
        return value

    @field_validator("midtrans_api_base", "midtrans_snap_base", "public_base_url", "duitku_api_base", "url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("allowed_target_cidrs", "trusted_proxies", mode="before")
    @classmethod
    def _parse_cidrs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = tuple(float(part) for part in value.split(",") if part.strip())
            except ValueError:
                raise ValueError("must be comma-separated seconds, e.g. 5,300,1800") from None
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _check_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("must list at least one delay, e.g. 5,300,1800")
        if not all(math.isfinite(delay) and 0 <= delay <= 7 * 86400 for delay in value):
            raise ValueError("each delay must be between 0 and 604800 seconds")
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        for key in value.get_secret_value().split(","):
            try:
                Fernet(key.strip().encode())
            except (ValueError, TypeError):
                raise ValueError("each key must be a Fernet key (`relay keys generate` makes one)") from None
        return value

    @field_validator("admin_token")
    @classmethod
    def _token_strength(cls, value: SecretStr | None) -> SecretStr | None:
        """A token a person chose can be guessed: at least 16 characters, 10 of them distinct."""
        if value is None:
            return None
        token = value.get_secret_value()
        if len(token) < 16:
            raise ValueError("must be at least 16 characters")
        if len(set(token)) < 10:
            raise ValueError("has too little entropy: use at least 10 distinct characters (a random string)")
        if token.startswith("rk_"):
            raise ValueError("must not start with rk_, which marks a project's API key")
        return value

    @field_validator("operator_webhook_secret")
    @classmethod
    def _operator_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        secret = value.get_secret_value().strip()
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            key = b""
        if not secret.startswith("whsec_") or len(key) < 16:
            raise ValueError("must be a whsec_ secret: whsec_ and at least 16 bytes in base64")
        return SecretStr(secret)

    @model_validator(mode="after")
    def _operator_webhook_pair(self) -> Settings:
        if (self.operator_webhook_url is None) != (self.operator_webhook_secret is None):
            raise ValueError(
                "RELAY_OPERATOR_WEBHOOK_URL and RELAY_OPERATOR_WEBHOOK_SECRET: set both (the alerts are "
                "signed), or neither"
            )
        if self.operator_webhook_url is not None:
            # The alerts go through the same egress rules as webhooks: refuse at start what every
            # delivery would refuse.
            try:
                self.check_target(self.operator_webhook_url)
            except ValueError as error:
                reason = str(error).removeprefix("webhook_url ")
                raise ValueError(f"RELAY_OPERATOR_WEBHOOK_URL: {reason}") from None
        return self

    @model_validator(mode="after")
    def _replicas_need_redis(self) -> Settings:
        if self.redis_min_replicas_ack and self.embedded:
            raise ValueError(
                "RELAY_REDIS_MIN_REPLICAS_ACK: the embedded store has no replicas; set RELAY_REDIS_URL or "
                "RELAY_REDIS_SENTINELS to a Redis with replicas, or leave it 0"
            )
        return self

    @model_validator(mode="after")
    def _sandbox_with_a_real_key(self) -> Settings:
        if self.sandbox and self.midtrans_server_key is not None:
            raise ValueError(
                "RELAY_SANDBOX: the sandbox checkout signs Midtrans notifications itself; it cannot run "
                "with RELAY_MIDTRANS_SERVER_KEY set (anyone could pay)"
            )
        return self

    @model_validator(mode="after")
    def _duitku_confirms(self) -> Settings:
        """Duitku's signature does not cover resultCode: a captured 01 callback flipped to 00
        verifies. Only its status API can tell, so outside a sandbox it is required."""
        if self.duitku_api_key is not None and self.duitku_api_base is None and not self.sandbox:
            raise ValueError(
                "RELAY_DUITKU_API_BASE: Duitku's signature does not cover resultCode, so every callback "
                "is confirmed with its transactionStatus API: set https://passport.duitku.com (or "
                "https://sandbox.duitku.com for a test merchant); only RELAY_SANDBOX=true runs without"
            )
        return self

    def check_target(self, url: str) -> None:
        """ValueError naming why deliveries would refuse ``url`` under these settings
        (relay.targets: private targets, the allowlist, https)."""
        check_webhook_url(
            url,
            allow_private=self.allow_private_targets,
            require_https=self.require_https,
            allowlist=self.allowed_target_cidrs,
        )

    @property
    def stuck_slots(self) -> int:
        """How many of a worker's slots RELAY_WORKER_STUCK_SHARE is (at least one)."""
        return max(1, round(self.worker_max_jobs * self.worker_stuck_share))

    @property
    def lifetimes(self) -> Lifetimes:
        return Lifetimes(
            retention=self.retention,
            dead_letter_retention=self.dead_letter_retention,
            purchase_expiry=self.purchase_expiry,
            endpoint_disable_after=self.endpoint_disable_after,
            renewal_notice=self.renewal_notice,
            subscription_grace=self.subscription_grace,
        )

    @property
    def fernet_keys(self) -> list[str]:
        raw = self.encryption_keys.get_secret_value() if self.encryption_keys else ""
        return [key.strip() for key in raw.split(",") if key.strip()]

    @property
    def embedded(self) -> bool:
        return self.redis_url is None and self.redis_sentinels is None

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The Sentinels of RELAY_REDIS_SENTINELS, as (host, port)."""
        return [_host_port(part) for part in (self.redis_sentinels or "").split(",") if part.strip()]

    @property
    def sandbox_mode(self) -> bool:
        """The built-in sandbox checkout runs: asked for (RELAY_SANDBOX), or no gateway key is set
        at all. It fails closed: one real gateway key and no RELAY_SANDBOX, and it is off."""
        return self.sandbox or not self.real_gateway_keys

    @property
    def real_gateway_keys(self) -> bool:
        return any(
            key is not None
            for key in (
                self.midtrans_server_key,
                self.xendit_callback_token,
                self.tripay_private_key,
                self.doku_secret_key,
                self.duitku_api_key,
            )
        ) or bool(self.custom_sources)

    @property
    def snap_base(self) -> str:
        """Snap lives on app.*.midtrans.com while the core API lives on api.*.midtrans.com."""
        if self.midtrans_snap_base:
            return self.midtrans_snap_base
        parts = urlsplit(self.midtrans_api_base)
        host = parts.hostname or ""
        if host.startswith("api.") and host.endswith("midtrans.com"):
            return self.midtrans_api_base.replace("//api.", "//app.", 1)
        return self.midtrans_api_base

    # --- gateways besides Midtrans
    xendit_callback_token: SecretStr | None = None
    tripay_private_key: SecretStr | None = None
    doku_client_id: str | None = None
    doku_secret_key: SecretStr | None = Field(default=None, validate_default=True)
    doku_request_target: str = Field(default="/callbacks/doku", pattern=r"^/[!-~]{0,1023}$")
    doku_timestamp_tolerance: int = Field(default=300, ge=1, le=86400)
    duitku_merchant_code: str | None = None
    duitku_api_key: SecretStr | None = Field(default=None, validate_default=True)
    duitku_api_base: str | None = None
    custom_sources: Annotated[dict[str, CustomSourceConfig], NoDecode] = Field(default_factory=dict)

    @field_validator(
        "xendit_callback_token",
        "tripay_private_key",
        "doku_client_id",
        "doku_secret_key",
        "duitku_merchant_code",
        "duitku_api_key",
        "duitku_api_base",
        mode="before",
    )
    @classmethod
    def _blank_gateway_setting_is_unset(cls, value: object) -> object:
        """An empty key means "not configured", never "the empty string is the key"."""
        if isinstance(value, SecretStr):
            return None if not value.get_secret_value().strip() else value
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("doku_secret_key", "duitku_api_key")
    @classmethod
    def _gateway_keys_in_pairs(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        partner = {"doku_secret_key": "doku_client_id", "duitku_api_key": "duitku_merchant_code"}
        other = partner[str(info.field_name)]
        if (value is None) != (info.data.get(other) is None):
            raise ValueError(f"set it together with RELAY_{other.upper()}, or neither")
        return value

    @field_validator("custom_sources", mode="before")
    @classmethod
    def _custom_sources(cls, value: object) -> dict[str, CustomSourceConfig]:
        return parse_sources(value)


ENV_PREFIX = "RELAY_"
# RELAY_* names that are not settings but are read on purpose: the test suite's Redis and browser.
NOT_SETTINGS = frozenset({"RELAY_TEST_REDIS_URL", "RELAY_TEST_CHROMIUM"})
# What Kubernetes sets in every pod for each Service of the namespace (deploy/k8s names them
# relay-*): RELAY_INGRESS_SERVICE_HOST, RELAY_INGRESS_PORT_80_TCP_ADDR, ...
SERVICE_LINK = re.compile(
    r"[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT|PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)"
)
# Values config/example.env ships with: published, so they protect nothing
# (tests/test_example_config.py keeps these and the file in step).
PUBLISHED_EXAMPLES = {
    "admin_token": "change-me-to-a-long-random-string",
    "encryption_keys": "4uBaDy4GWYB1-3VXbhBq6P8s0e3n4Kx6xNyc_OIqnfE=",
}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``RELAY_*`` variable that is no setting (a misspelling is otherwise
    silently ignored), naming the closest real one."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in NOT_SETTINGS:
            continue
        if SERVICE_LINK.fullmatch(upper):
            continue
        # Compared without the prefix every name shares, which would make any two look alike.
        close = difflib.get_close_matches(
            upper.removeprefix(ENV_PREFIX), [each.removeprefix(ENV_PREFIX) for each in known], n=1, cutoff=0.7
        )
        hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
        warnings.append(f"{name} is not a relay setting and is ignored{hint}")
    return warnings


def published_secrets(settings: Settings) -> list[str]:
    """A warning for each secret setting left at the value config/example.env publishes."""
    warnings = []
    for field, example in PUBLISHED_EXAMPLES.items():
        value: SecretStr | None = getattr(settings, field)
        if value is not None and example in value.get_secret_value().split(","):
            warnings.append(
                f"{ENV_PREFIX}{field.upper()} holds the example value published in config/example.env: "
                "it protects nothing; set your own (`relay keys generate` makes an encryption key)"
            )
    return warnings


def describe_validation_error(error: ValidationError) -> str:
    """One line per bad setting, named by its environment variable."""
    lines = []
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        if problem["loc"]:
            lines.append(f"RELAY_{str(problem['loc'][0]).upper()}: {message}")
        else:  # a check of several settings together names them itself
            lines.append(message)
    return "; ".join(lines)


def _host_port(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for an IPv6 address) as (host, port); ValueError otherwise."""
    host, colon, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text.strip()!r} is not host:port")
    return host, int(port)
