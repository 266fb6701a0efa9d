"""relay/logs.py TurnWriter: the log lines of one event-loop turn written together, in order."""

from __future__ import annotations

import asyncio
import io

from relay.logs import TurnWriter


class CountingFile(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_lines_of_one_turn_are_written_together_in_order() -> None:
    out = CountingFile()
    writer = TurnWriter(out)
    for n in range(5):
        writer.msg(f"line {n}")
    assert out.getvalue() == ""  # not yet: at the end of this turn
    await asyncio.sleep(0)
    writer.info("next turn")
    await asyncio.sleep(0)
    assert out.getvalue().splitlines() == [f"line {n}" for n in range(5)] + ["next turn"]
    assert out.writes == 2


def test_outside_an_event_loop_a_line_is_written_at_once() -> None:
    out = CountingFile()
    TurnWriter(out).msg("now")
    assert out.getvalue() == "now\n"
