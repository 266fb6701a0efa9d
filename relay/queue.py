"""Enqueueing delivery jobs on arq. Every attempt is its own job, so no job lives longer than one
backoff step (arq job keys expire about a day after their due time)."""

from __future__ import annotations

from datetime import datetime

from arq.connections import ArqRedis

DELIVER = "deliver"
SWEEP = "sweep"


def job_id(event_id: str, seq: int) -> str:
    """The first attempt's job id is the event id itself; each later scheduling gets ``:{seq}``."""
    return event_id if seq == 0 else f"{event_id}:{seq}"


async def enqueue_delivery(arq: ArqRedis, event_id: str, seq: int, *, at: datetime | None = None) -> bool:
    """Enqueue the job for ``(event_id, seq)``; False when that job is already queued or running."""
    job = await arq.enqueue_job(DELIVER, event_id, seq, _job_id=job_id(event_id, seq), _defer_until=at)
    return job is not None
