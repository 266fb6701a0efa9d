"""Where the pages one project's templates link and post to, in the console and in the portal.

The console and the merchant portal render the same templates (``relay/templates/parts``): the
orders, an order with its attempts, the endpoints, the dead letters. Those only name their links
through ``paths``, one of these, so the same table posts a retry to the console's route for an
operator and to the portal's for a merchant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import quote


def _part(value: str) -> str:
    return quote(value, safe="")


class ProjectPaths:
    """What both sites have, under their ``project`` page."""

    console: ClassVar[bool]  # the console's (with its session), or the portal's
    orders: ClassVar[str]  # the segment of an order's page under the project's

    @property
    def project(self) -> str:
        raise NotImplementedError

    def order(self, order_id: str) -> str:
        return f"{self.project}/{self.orders}/{_part(order_id)}"

    def retry(self, order_id: str) -> str:
        return f"{self.order(order_id)}/retry"

    def event(self, event_id: str) -> str:
        return f"{self.project}/events/{_part(event_id)}"

    @property
    def enable_endpoint(self) -> str:
        return f"{self.project}/endpoints/enable"

    @property
    def test_event(self) -> str:
        return f"{self.project}/test-event"


@dataclass(frozen=True)
class ConsolePaths(ProjectPaths):
    project_id: str
    console: ClassVar[bool] = True
    orders: ClassVar[str] = "purchases"

    @property
    def project(self) -> str:
        return f"/console/projects/{_part(self.project_id)}"

    def replay(self, event_id: str) -> str:
        return f"/console/dead-letters/{_part(event_id)}/replay"


@dataclass(frozen=True)
class PortalPaths(ProjectPaths):
    token: str  # the link's: every portal page and form is under it
    console: ClassVar[bool] = False
    orders: ClassVar[str] = "orders"

    @property
    def project(self) -> str:
        return f"/portal/{self.token}"

    def replay(self, event_id: str) -> str:
        return f"{self.project}/dead-letters/{_part(event_id)}/replay"

    @property
    def replay_all(self) -> str:
        return f"{self.project}/dead-letters/replay-all"

    @property
    def replay_window(self) -> str:
        return f"{self.project}/replay"

    @property
    def webhook_url(self) -> str:
        return f"{self.project}/webhook-url"

    @property
    def rotate_secret(self) -> str:
        return f"{self.project}/secret/rotate"

    def catalogue_url(self, kind: str, entry_id: str) -> str:
        """Where an item's (``kind`` "items") or plan's ("plans") own webhook URL is set."""
        return f"{self.project}/{kind}/{_part(entry_id)}/webhook-url"
