"""Every Redis key relay reads or writes, named in one place.

relay's own keys live under one prefix (``RELAY_KEY_PREFIX``, default ``relay``, written ``{p}``
below). arq's keys carry arq's own names, imported from arq: relay writes arq's job keys in the
ingest script and arq's in-progress keys in the claim script, so it must agree with arq to the byte
(``workers.arq_compat`` holds the rest of what relay knows about arq).

    key                                  type    holds                                       written by
    {p}:project:{id}                     STRING  JSON Project, signing secrets encrypted     relay.store
    {p}:client:{client_id}               STRING  the project's id                            relay.store
    {p}:projects                         ZSET    project id -> created at (ms): the listing  relay.store
    {p}:projects:indexed                 STRING  set once projects made before it are listed relay.store
    {p}:item:{id}                        STRING  JSON Item                                   relay.store
    {p}:item:{id}:stock                  STRING  units left to sell (items with stock only)  relay.store,
                                                                                             create_purchase,
                                                                                             expire, ingest
    {p}:project:{id}:items               SET     the project's item ids                      relay.store
    {p}:category:{id}                    STRING  JSON Category                               relay.categories
    {p}:project:{id}:categories          SET     the project's category ids                  relay.categories
    {p}:plan:{id}                        STRING  JSON Plan                                   relay.store
    {p}:project:{id}:plans               SET     the project's plan ids                      relay.store
    {p}:purchase:{order_id}              HASH    an order of any kind: doc (JSON of the      create_purchase,
                                                 fixed fields but metadata, unset ones left  ingest.lua,
                                                 out), metadata (JSON, the one copy),        finish.lua,
                                                 status, paid_at, webhook_status, event_id,  requeue.lua,
                                                 updated_at, invoice_url; until paid,        remember_invoice
                                                 event_head (relay.event_types); a refund
                                                 kept until paid: pending_refund; each
                                                 refund sent: refund:{key} -> its event id,
                                                 and refunded_amount, refund_count.
                                                 Purchases stored before: metadata in doc
                                                 and in event_tail
    {p}:subscription:{id}                HASH    doc (JSON of the fixed fields), status,     relay.
                                                 current_period_start/_end, order_id,        subscriptions,
                                                 pending_order_id, invoice_url, paid_at,     ingest.lua,
                                                 cancel_at_period_end, version, updated_at   subscription_move
    {p}:project:{id}:subscriptions       ZSET    subscription id -> created at (ms)          relay.
                                                                                             subscriptions
    {p}:subscriptions:due                ZSET    subscription id -> its next timer (ms)      ingest.lua,
                                                                                             subscription_move
    {p}:project:{id}:purchases           ZSET    order id -> created at (ms)                 relay.store
    {p}:project:{id}:payment:{order_id}  STRING  a shop payment's gateway order id, by the   create_purchase,
                                                 merchant's own order id                     delete_finished
    {p}:unmatched                        LIST    JSON callbacks for unknown orders, newest   relay.store
                                                 first, capped
    {p}:expiry                           ZSET    order id -> when it expires if unpaid (ms)  create_purchase,
                                                                                             expire.lua
    {p}:retention                        ZSET    o:{order id} | e:{event id} -> when it is   finish, ingest,
                                                 deleted (ms); only finished ones            expire, requeue,
                                                                                             purge_dead_letter
    {p}:stats                            HASH    orders: purchases stored (a gauge)          create_purchase,
                                                                                             delete_finished
    {p}:project:{id}:events              ZSET    event id -> created at (ms)                 ingest.lua
    {p}:event:{id}                       HASH    EventRecord; ``seq`` fences delivery jobs   ingest, finish,
                                                                                             requeue, postpone
    {p}:event:{id}:attempts              LIST    JSON Attempt, oldest first, capped          finish.lua
    {p}:outbox                           ZSET    event id -> next attempt due (ms)           ingest, finish,
                                                                                             requeue, postpone
    {p}:dlq                              ZSET    event id -> dead-lettered at (ms)           finish, requeue,
    {p}:project:{id}:dlq                 ZSET    the same, one project's                     purge_dead_letter
    {p}:endpoint:{project}:{sha256(url)} HASH    an endpoint's health: url, last_success_at, finish.lua,
                                                 failing_since, last_error, disabled_at      relay.endpoints
    {p}:project:{id}:endpoints           SET     the digests of the project's endpoints      finish.lua
    {p}:project:{id}:disabled-endpoints  STRING  the digests of its disabled endpoints,      finish.lua,
                                                 comma-separated (read in the MGET of every  enable_endpoint
                                                 delivery's project and item)
    {p}:audit                            ZSET    audit entry id -> when (ms)                 relay.audit
    {p}:audit:entries                    HASH    audit entry id -> JSON AuditEntry           relay.audit
    {p}:api-key:{sha256(key)}            STRING  JSON ApiKey: id, project, name, prefix      relay.api_keys
    {p}:project:{id}:api-keys            HASH    key id -> the SHA-256 of its key            relay.api_keys
    {p}:project:{id}:api-keys-used       HASH    key id -> when it was last used (ISO)       relay.api_keys
    {p}:idempotency:{scope}:{sha256}     STRING  a creating POST's first response, or its    relay.idempotency
                                                 claim while in flight; expires after 24 h
    {p}:console:session:{sha256(sid)}    HASH    csrf, created_at; expires after 8 h         relay.sessions
    {p}:console:session:{sha256}:flash   STRING  the next page's notice; expires after 60 s  relay.sessions
    {p}:sandbox:key                      STRING  the sandbox checkout's random signing key   relay.api.sandbox
    {p}:portal:key                       STRING  the portal links' random signing key        relay.portal
    {p}:project:{id}:portal-generation   STRING  bumped to revoke the project's portal links relay.portal
    {p}:cooldown:{action}:{project}      STRING  set for a while after a test event or a     relay.ratelimit
                                                 portal bulk replay (one per period)
    {p}:replicated                       STRING  a counter written before each WAIT: its      relay.replicas
                                                 offset covers every write before it
    {p}:ratelimit:{subject}:{window}     STRING  requests in one window; subjects     relay.ratelimit,
                                                 purchase:{client_id}[:{address}],   rate_limit.lua
                                                 auth-failed:{address}, link-failed:{address};
                                                 expires after two windows
    arq:queue                            ZSET    job id -> due (ms)                          arq, ingest.lua
    arq:job:{job_id}                     STRING  arq's serialised job; expires               arq, ingest.lua
    arq:in-progress:{job_id}             STRING  a worker's claim; expires                   claim.lua, arq
    arq:queue:leases                     ZSET    job id -> when its claim runs out (ms): the  claim.lua,
                                                 jobs running, out of the queue              arq's finish
    arq:retry:{job_id}, arq:result:{..}  STRING  arq's try counter; a result (relay keeps    arq
                                                 none)

A delivery job's id is the event id for the first attempt and ``{event_id}:{seq}`` after
(``workers.arq_compat.job_id``). The scripts themselves are in ``relay/lua``.
"""

from __future__ import annotations

import functools
import hashlib

from arq.constants import default_queue_name, in_progress_key_prefix, job_key_prefix, result_key_prefix


class Keys:
    """Key names under one prefix. Ids are used as given: they are validated where they enter."""

    # arq's names, as arq spells them.
    arq_queue = default_queue_name
    arq_in_progress_prefix = in_progress_key_prefix
    arq_job_prefix = job_key_prefix

    @staticmethod
    def arq_leases(queue: str) -> str:
        """The jobs of ``queue`` that are running: claimed, out of the queue (claim.lua)."""
        return f"{queue}:leases"

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.outbox = f"{prefix}:outbox"
        self.dead_letters = f"{prefix}:dlq"
        self.unmatched = f"{prefix}:unmatched"
        self.expiry = f"{prefix}:expiry"
        self.retention = f"{prefix}:retention"
        self.stats = f"{prefix}:stats"
        self.subscriptions_due = f"{prefix}:subscriptions:due"
        self.audit = f"{prefix}:audit"
        self.audit_entries = f"{prefix}:audit:entries"
        self.replicated = f"{prefix}:replicated"

    # --- catalogue ---------------------------------------------------------------------------------

    def project(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}"

    @property
    def projects(self) -> str:
        return f"{self.prefix}:projects"

    @property
    def projects_indexed(self) -> str:
        return f"{self.prefix}:projects:indexed"

    def project_id_of(self, key: str) -> str | None:
        """The project id a ``project(...)`` key names; None for the project's other keys."""
        rest = key.removeprefix(self.project(""))
        return None if ":" in rest or rest == key else rest

    def client(self, client_id: str) -> str:
        return f"{self.prefix}:client:{client_id}"

    def item(self, item_id: str) -> str:
        return f"{self.prefix}:item:{item_id}"

    def category(self, category_id: str) -> str:
        return f"{self.prefix}:category:{category_id}"

    def project_categories(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:categories"

    def item_stock(self, item_id: str) -> str:
        return f"{self.prefix}:item:{item_id}:stock"

    def project_items(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:items"

    def plan(self, plan_id: str) -> str:
        return f"{self.prefix}:plan:{plan_id}"

    def project_plans(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:plans"

    # --- subscriptions -----------------------------------------------------------------------------

    def subscription(self, subscription_id: str) -> str:
        return f"{self.prefix}:subscription:{subscription_id}"

    def project_subscriptions(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:subscriptions"

    # --- purchases ---------------------------------------------------------------------------------

    def purchase(self, order_id: str) -> str:
        return f"{self.prefix}:purchase:{order_id}"

    def project_purchases(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:purchases"

    def project_payment(self, project_id: str, merchant_order_id: str) -> str:
        """A shop payment's gateway order id, by the merchant's own order id."""
        return f"{self.prefix}:project:{project_id}:payment:{merchant_order_id}"

    # --- events and their delivery -----------------------------------------------------------------

    def event(self, event_id: str) -> str:
        return f"{self.prefix}:event:{event_id}"

    def attempts(self, event_id: str) -> str:
        return f"{self.prefix}:event:{event_id}:attempts"

    def project_events(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:events"

    def project_dead_letters(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:dlq"

    def cooldown(self, action: str, subject: str) -> str:
        return f"{self.prefix}:cooldown:{action}:{subject}"

    @property
    def portal_key(self) -> str:
        return f"{self.prefix}:portal:key"

    def portal_generation(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:portal-generation"

    def dead_letters_of(self, project_id: str | None) -> str:
        """One project's dead-letter set, or everyone's."""
        return self.project_dead_letters(project_id) if project_id else self.dead_letters

    # --- endpoint health ------------------------------------------------------------------------------

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def endpoint_digest(url: str) -> str:
        """A fixed-length name for an endpoint URL (cached: every delivery asks for its own)."""
        return hashlib.sha256(url.encode()).hexdigest()[:32]

    def endpoint(self, project_id: str, url: str) -> str:
        return self.endpoint_at(project_id, self.endpoint_digest(url))

    def endpoint_at(self, project_id: str, digest: str) -> str:
        """The health of the endpoint whose URL has this digest (a member of project_endpoints)."""
        return f"{self.prefix}:endpoint:{project_id}:{digest}"

    def project_endpoints(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:endpoints"

    def project_disabled_endpoints(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:disabled-endpoints"

    # --- project API keys ----------------------------------------------------------------------------

    def api_key(self, digest: str) -> str:
        """A project API key's record, by the SHA-256 of the key (relay.api_keys)."""
        return f"{self.prefix}:api-key:{digest}"

    def project_api_keys(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:api-keys"

    def project_api_keys_used(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:api-keys-used"

    # --- idempotency keys ----------------------------------------------------------------------------

    def idempotency(self, scope: str, route: str, key: str) -> str:
        """A creating POST's record: per scope (a client or project id) and route; the client's
        key is hashed, so any text it sends makes a key name of fixed length."""
        digest = hashlib.sha256(f"{route}\n{key}".encode()).hexdigest()
        return f"{self.prefix}:idempotency:{scope}:{digest}"

    # --- console sessions and rate limits ----------------------------------------------------------

    def session(self, session_id: str) -> str:
        """Only the session id's SHA-256 is stored: whoever reads Redis cannot take a session over."""
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        return f"{self.prefix}:console:session:{digest}"

    def session_flash(self, session_id: str) -> str:
        return self.session(session_id) + ":flash"

    def rate_limit(self, subject: str, window: int) -> str:
        return f"{self.prefix}:ratelimit:{subject}:{window}"

    # --- the sandbox checkout ------------------------------------------------------------------------

    @property
    def sandbox_key(self) -> str:
        return f"{self.prefix}:sandbox:key"

    # --- arq -----------------------------------------------------------------------------------------

    @staticmethod
    def arq_job(job_id: str) -> str:
        return job_key_prefix + job_id

    @staticmethod
    def arq_result(job_id: str) -> str:
        return result_key_prefix + job_id

    @staticmethod
    def arq_in_progress(job_id: str) -> str:
        return in_progress_key_prefix + job_id
