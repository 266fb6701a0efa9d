"""The baselines run on the event loop the relay processes use, so the comparison stays fair."""

from __future__ import annotations


def same_event_loop_as_relay() -> None:
    try:
        from relay.cli import use_fast_event_loop
    except ImportError:  # a relay from before uvloop (bench --product)
        return
    use_fast_event_loop()
