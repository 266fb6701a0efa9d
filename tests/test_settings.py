"""relay/settings.py: RELAY_* parsing, validation messages, and the derived Midtrans values."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from relay.settings import (
    DEFAULT_RETRY_SCHEDULE,
    MIDTRANS_SANDBOX_API,
    Settings,
    describe_validation_error,
    published_secrets,
    unknown_variables,
)

TOKEN = "admin-token-0123456789"


# Settings reads RELAY_* variables: every test starts from none, whatever the developer has set.
pytestmark = pytest.mark.usefixtures("clean_environment")


def test_defaults() -> None:
    settings = Settings()
    assert settings.retry_schedule == DEFAULT_RETRY_SCHEDULE
    assert settings.redis_url is None
    assert settings.embedded
    assert settings.sandbox_mode  # no gateway key at all
    assert not settings.sandbox
    assert settings.allow_private_targets is False
    assert settings.midtrans_api_base == MIDTRANS_SANDBOX_API


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5,300,1800", (5.0, 300.0, 1800.0)),
        ("5, 300 ,1800", (5.0, 300.0, 1800.0)),
        ("0.05,0.1", (0.05, 0.1)),
        ("0", (0.0,)),
        ("604800", (604800.0,)),
    ],
)
def test_retry_schedule_from_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[float, ...]
) -> None:
    monkeypatch.setenv("RELAY_RETRY_SCHEDULE", value)
    schedule = Settings().retry_schedule
    assert schedule == expected
    assert all(isinstance(delay, float) for delay in schedule)


@pytest.mark.parametrize("value", ["5,abc", "-1", "5,-1", "604801", "5,inf", "5,nan", "abc"])
def test_bad_retry_schedule_fails(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RELAY_RETRY_SCHEDULE", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "RELAY_RETRY_SCHEDULE" in describe_validation_error(caught.value)


def test_retry_schedule_keyword_is_parsed_too() -> None:
    assert Settings(retry_schedule="5,300").retry_schedule == (5.0, 300.0)


@pytest.mark.parametrize("token", ["", "short", "x" * 15])
def test_short_admin_token_fails(monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    monkeypatch.setenv("RELAY_ADMIN_TOKEN", token)
    with pytest.raises(ValidationError):
        Settings()


def test_admin_token_of_16_characters_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_ADMIN_TOKEN", "0123456789abcdef")
    token = Settings().admin_token
    assert token is not None
    assert token.get_secret_value() == "0123456789abcdef"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379/0", "https://redis.example.com", "127.0.0.1:6379", "localhost"]
)
def test_redis_url_must_be_a_redis_url(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("RELAY_REDIS_URL", url)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://user:pw@redis.example.com:6380/1", "unix:///run/redis.sock"]
)
def test_redis_url_schemes_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("RELAY_REDIS_URL", url)
    settings = Settings()
    assert settings.redis_url == url
    assert not settings.embedded


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("RELAY_REDIS_URL", "http://127.0.0.1:6379", "RELAY_REDIS_URL:"),
        ("RELAY_ADMIN_TOKEN", "short", "RELAY_ADMIN_TOKEN:"),
        ("RELAY_RETRY_SCHEDULE", "5,abc", "RELAY_RETRY_SCHEDULE:"),
        ("RELAY_DELIVERY_TIMEOUT", "0", "RELAY_DELIVERY_TIMEOUT:"),
        ("RELAY_MAX_BODY_BYTES", "12", "RELAY_MAX_BODY_BYTES:"),
        ("RELAY_LOG_FORMAT", "xml", "RELAY_LOG_FORMAT:"),
        ("RELAY_MIDTRANS_API_BASE", "ftp://example.com", "RELAY_MIDTRANS_API_BASE:"),
    ],
)
def test_describe_validation_error_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert describe_validation_error(caught.value).startswith(named)


def test_describe_validation_error_lists_every_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_REDIS_URL", "http://127.0.0.1:6379")
    monkeypatch.setenv("RELAY_ADMIN_TOKEN", "short")
    with pytest.raises(ValidationError) as caught:
        Settings()
    lines = describe_validation_error(caught.value).split("; ")
    assert sorted(line.split(":")[0] for line in lines) == ["RELAY_ADMIN_TOKEN", "RELAY_REDIS_URL"]


@pytest.mark.parametrize(
    ("api_base", "snap_base", "expected"),
    [
        ("https://api.sandbox.midtrans.com", None, "https://app.sandbox.midtrans.com"),
        ("https://api.sandbox.midtrans.com/", None, "https://app.sandbox.midtrans.com"),
        ("https://api.midtrans.com", None, "https://app.midtrans.com"),
        ("http://127.0.0.1:9999", None, "http://127.0.0.1:9999"),
        ("http://fake-midtrans.test:8000/", None, "http://fake-midtrans.test:8000"),
        ("https://api.sandbox.midtrans.com", "http://127.0.0.1:9998", "http://127.0.0.1:9998"),
        ("http://127.0.0.1:9999", "http://127.0.0.1:9998/", "http://127.0.0.1:9998"),
    ],
)
def test_snap_base(api_base: str, snap_base: str | None, expected: str) -> None:
    settings = Settings(midtrans_api_base=api_base, midtrans_snap_base=snap_base)
    assert settings.snap_base == expected


def test_snap_base_default() -> None:
    assert Settings().snap_base == "https://app.sandbox.midtrans.com"


def test_a_midtrans_server_key_turns_the_sandbox_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_MIDTRANS_SERVER_KEY", "SB-Mid-server-real-key")
    settings = Settings(admin_token=TOKEN)
    assert not settings.sandbox_mode
    assert settings.midtrans_server_key is not None
    assert settings.midtrans_server_key.get_secret_value() == "SB-Mid-server-real-key"


def test_keyword_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_ALLOW_PRIVATE_TARGETS", "true")
    assert Settings().allow_private_targets is True
    assert Settings(allow_private_targets=False).allow_private_targets is False


def test_public_base_url_defaults_to_the_address_a_request_reached() -> None:
    assert Settings().public_base_url is None
    assert (
        Settings(public_base_url="https://relay.example.com/").public_base_url == "https://relay.example.com"
    )


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("RELAY_REDIS_ULR", "did you mean RELAY_REDIS_URL?"),
        ("RELAY_ADMIN_TOKN", "did you mean RELAY_ADMIN_TOKEN?"),
        ("relay_retry_schedul", "did you mean RELAY_RETRY_SCHEDULE?"),
        ("RELAY_SOMETHING_ELSE_ENTIRELY", ""),
    ],
)
def test_an_unknown_relay_variable_is_named_with_the_closest_setting(name: str, hint: str) -> None:
    [warning] = unknown_variables({name: "x", "RELAY_REDIS_URL": "redis://x", "HOME": "/root"})
    assert warning.startswith(f"{name} is not a relay setting")
    assert warning.endswith(hint or "ignored")


def test_every_setting_and_the_test_variables_are_known() -> None:
    every = {f"RELAY_{name.upper()}": "x" for name in Settings.model_fields}
    assert unknown_variables(every | {"RELAY_TEST_REDIS_URL": "redis://x", "OTHER": "y"}) == []


def test_kubernetes_service_links_are_not_taken_for_misspellings() -> None:
    # What a pod gets for the relay-ingress Service of deploy/k8s.
    links = {
        "RELAY_INGRESS_SERVICE_HOST": "10.0.0.7",
        "RELAY_INGRESS_SERVICE_PORT": "80",
        "RELAY_INGRESS_SERVICE_PORT_HTTP": "80",
        "RELAY_INGRESS_PORT": "tcp://10.0.0.7:80",
        "RELAY_INGRESS_PORT_80_TCP": "tcp://10.0.0.7:80",
        "RELAY_INGRESS_PORT_80_TCP_ADDR": "10.0.0.7",
        "RELAY_INGRESS_PORT_80_TCP_PORT": "80",
        "RELAY_INGRESS_PORT_80_TCP_PROTO": "tcp",
    }
    assert unknown_variables(links) == []
    assert unknown_variables(links | {"RELAY_WORKER_MAX_JOB": "5"}) == [
        "RELAY_WORKER_MAX_JOB is not a relay setting and is ignored; did you mean RELAY_WORKER_MAX_JOBS?"
    ]


def test_the_published_example_secrets_are_named() -> None:
    from relay.settings import PUBLISHED_EXAMPLES

    published = Settings(
        admin_token=PUBLISHED_EXAMPLES["admin_token"],
        encryption_keys=f"{Fernet.generate_key().decode()},{PUBLISHED_EXAMPLES['encryption_keys']}",
    )
    warnings = published_secrets(published)
    assert [warning.split()[0] for warning in warnings] == ["RELAY_ADMIN_TOKEN", "RELAY_ENCRYPTION_KEYS"]
    own = Settings(admin_token="a-token-of-my-very-own-0123", encryption_keys=Fernet.generate_key().decode())
    assert published_secrets(own) == []


@pytest.mark.parametrize(
    "key",
    [
        {"xendit_callback_token": "xnd-token-0123456789"},
        {"tripay_private_key": "tripay-key-0123456789"},
        {"doku_client_id": "MCH-0001", "doku_secret_key": "SK-0123456789"},
        {
            "duitku_merchant_code": "D0001",
            "duitku_api_key": "0123456789abcdef",
            "duitku_api_base": "https://sandbox.duitku.com",
        },
        {"midtrans_server_key": "Mid-server-0123456789"},
    ],
    ids=lambda key: next(iter(key)),
)
def test_the_sandbox_fails_closed_once_any_real_gateway_key_is_set(key: dict[str, str]) -> None:
    assert Settings().sandbox_mode
    assert not Settings(**key).sandbox_mode
    if "midtrans_server_key" not in key:
        assert Settings(**key, sandbox=True).sandbox_mode  # on purpose


def test_the_sandbox_cannot_run_beside_a_real_midtrans_key() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(sandbox=True, midtrans_server_key="Mid-server-0123456789")
    message = describe_validation_error(raised.value)
    assert message.startswith("RELAY_SANDBOX: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("short-token", "at least 16 characters"),
        ("aaaaaaaaaaaaaaaaaaaa", "too little entropy"),
        ("abcabcabcabcabcabcabc", "too little entropy"),
        ("0123456789012345", None),
        ("rk_0123456789abcdef", "must not start with rk_"),  # a project API key's prefix
    ],
)
def test_an_admin_token_with_too_little_entropy_is_refused(token: str, problem: str | None) -> None:
    if problem is None:
        assert Settings(admin_token=token).admin_token is not None
        return
    with pytest.raises(ValidationError) as raised:
        Settings(admin_token=token)
    assert problem in describe_validation_error(raised.value)
    assert describe_validation_error(raised.value).startswith("RELAY_ADMIN_TOKEN: ")


def test_trusted_proxies_are_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
    assert [str(net) for net in Settings().trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32"]
    monkeypatch.setenv("RELAY_TRUSTED_PROXIES", "not-a-network")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert describe_validation_error(raised.value).startswith("RELAY_TRUSTED_PROXIES")


def test_duitku_needs_its_status_api_outside_a_sandbox() -> None:
    keys = {"duitku_merchant_code": "D0001", "duitku_api_key": "0123456789abcdef"}
    with pytest.raises(ValidationError) as raised:
        Settings(**keys)
    assert describe_validation_error(raised.value).startswith("RELAY_DUITKU_API_BASE: ")
    assert Settings(**keys, duitku_api_base="https://passport.duitku.com").duitku_api_base
    assert Settings(**keys, sandbox=True).duitku_api_base is None  # test setups


def test_lifetimes_default_to_the_contract() -> None:
    settings = Settings()
    assert settings.retention == timedelta(days=30)
    assert settings.dead_letter_retention == timedelta(days=90)
    assert settings.purchase_expiry == timedelta(hours=24)
    assert settings.endpoint_disable_after == timedelta(days=5)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("90", timedelta(seconds=90)),
        ("0.5", timedelta(milliseconds=500)),
        ("P30D", timedelta(days=30)),
        ("PT24H", timedelta(hours=24)),
        (" PT1M30S ", timedelta(seconds=90)),
    ],
)
def test_durations_take_seconds_or_iso_8601(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: timedelta
) -> None:
    for name in ("RETENTION", "DEAD_LETTER_RETENTION", "PURCHASE_EXPIRY", "ENDPOINT_DISABLE_AFTER"):
        monkeypatch.setenv(f"RELAY_{name}", value)
    settings = Settings()
    assert settings.lifetimes.retention == expected
    assert settings.lifetimes.dead_letter_retention == expected
    assert settings.lifetimes.purchase_expiry == expected
    assert settings.lifetimes.endpoint_disable_after == expected


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf", "nan", "P-1D"])
def test_a_duration_must_be_a_positive_length_of_time(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RELAY_RETENTION", value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert describe_validation_error(raised.value).startswith("RELAY_RETENTION: ")


WHSEC = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"


def test_the_operator_webhook_needs_its_secret_and_the_egress_rules() -> None:
    settings = Settings(operator_webhook_url="https://ops.example.com/alerts", operator_webhook_secret=WHSEC)
    assert settings.operator_webhook_url == "https://ops.example.com/alerts"
    with pytest.raises(ValidationError, match="set both"):
        Settings(operator_webhook_url="https://ops.example.com/alerts")
    with pytest.raises(ValidationError, match="whsec_"):
        Settings(operator_webhook_url="https://ops.example.com/alerts", operator_webhook_secret="s3cret")
    with pytest.raises(ValidationError, match="RELAY_OPERATOR_WEBHOOK_URL: points at a loopback"):
        Settings(operator_webhook_url="http://127.0.0.1:9/alerts", operator_webhook_secret=WHSEC)
    local = Settings(
        operator_webhook_url="http://127.0.0.1:9/alerts",
        operator_webhook_secret=WHSEC,
        allow_private_targets=True,
    )
    assert local.operator_webhook_url == "http://127.0.0.1:9/alerts"


@pytest.mark.parametrize(
    ("share", "max_jobs", "slots"), [("0.5", "100", 50), ("0.25", "10", 2), ("0.01", "10", 1), ("1", "7", 7)]
)
def test_the_stuck_share_is_a_part_of_the_slots_and_at_least_one(
    monkeypatch: pytest.MonkeyPatch, share: str, max_jobs: str, slots: int
) -> None:
    monkeypatch.setenv("RELAY_WORKER_STUCK_SHARE", share)
    monkeypatch.setenv("RELAY_WORKER_MAX_JOBS", max_jobs)
    assert Settings().stuck_slots == slots


@pytest.mark.parametrize("share", ["0", "1.5", "-0.1", "half"])
def test_the_stuck_share_is_a_fraction(monkeypatch: pytest.MonkeyPatch, share: str) -> None:
    monkeypatch.setenv("RELAY_WORKER_STUCK_SHARE", share)
    with pytest.raises(ValidationError):
        Settings()
