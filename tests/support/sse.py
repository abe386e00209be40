"""Server-Sent Events as the chat streams send them (`event:` and `data:` lines, a blank line after
each): the one reader of the tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any


async def read_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, its JSON data) for each complete event of `lines`. Breaking out of the loop leaves the
    rest unread: iterating the same generator again goes on from there."""
    event: str | None = None
    data: list[str] = []
    async for line in lines:
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif not line and event:
            yield event, json.loads("\n".join(data))
            event, data = None, []
