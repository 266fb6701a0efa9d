"""Prometheus metrics, one registry per process (no import-time globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.callbacks = Counter(
            "relay_callbacks_total",
            "Gateway callbacks by gateway and outcome.",
            ["gateway", "outcome"],
            registry=self.registry,
        )
        self.events_created = Counter(
            "relay_events_created_total", "item.purchased events created.", registry=self.registry
        )
        self.purchases_created = Counter(
            "relay_purchases_created_total",
            "Purchases created through the public API.",
            registry=self.registry,
        )
        self.deliveries = Counter(
            "relay_deliveries_total",
            "Delivery attempts by outcome and HTTP status class.",
            ["outcome", "status_class"],
            registry=self.registry,
        )
        self.delivery_seconds = Histogram(
            "relay_delivery_duration_seconds",
            "Duration of one delivery attempt.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.replays = Counter(
            "relay_replays_total", "Events sent again by replay or retry-webhook.", registry=self.registry
        )
