"""Enqueueing delivery jobs on arq. Every attempt is its own job, so no job lives longer than one
backoff step (arq job keys expire about a day after their due time)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

DELIVER = "deliver"
SWEEP = "sweep"


def job_id(event_id: str, seq: int) -> str:
    """The first attempt's job id is the event id itself; each later scheduling gets ``:{seq}``."""
    return event_id if seq == 0 else f"{event_id}:{seq}"


async def enqueue_delivery(arq: ArqRedis, event_id: str, seq: int, *, at: datetime | None = None) -> bool:
    """Enqueue the job for ``(event_id, seq)``; False when that job is already queued or running."""
    job = await arq.enqueue_job(DELIVER, event_id, seq, _job_id=job_id(event_id, seq), _defer_until=at)
    return job is not None


@dataclass(frozen=True)
class JobWrite:
    """The writes ``arq.enqueue_job`` makes for one job (same keys, payload, score and expiry), for
    a script that enqueues atomically with its own writes: ingest stores an event and enqueues its
    first delivery in one round trip instead of four (arq's WATCH, EXISTS, MULTI/EXEC)."""

    job_key: str
    result_key: str
    queue: str
    job_id: str
    payload: bytes
    score: int
    expires_ms: int


def job_write(arq: ArqRedis, event_id: str, seq: int) -> JobWrite:
    """What ``enqueue_delivery(arq, event_id, seq)`` would write, as ``arq.enqueue_job`` builds it."""
    job = job_id(event_id, seq)
    now = timestamp_ms()
    payload = serialize_job(DELIVER, (event_id, seq), {}, None, now, serializer=arq.job_serializer)
    return JobWrite(
        job_key=job_key_prefix + job,
        result_key=result_key_prefix + job,
        queue=arq.default_queue_name,
        job_id=job,
        payload=payload,
        score=now,
        expires_ms=arq.expires_extra_ms,
    )
