"""The stream `Candidate.run_for_election` returns: the seed's elected channel, fixed.

Unbounded (a slow reader never blocks the campaign, the seed's deadlock), de-duplicating
(`True, True` is one value), single-consumer, and closed with a final `False` and, when the
campaign ended with an error, that error raised to the reader once.
"""

from __future__ import annotations

import asyncio
import collections


class ElectionStream:
    """An unbounded, de-duplicating, single-consumer queue of bools with a terminal state."""

    def __init__(self) -> None:
        self._items: collections.deque[bool] = collections.deque()
        self._last: bool | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None

    def push(self, value: bool) -> None:
        if self._closed or value == self._last:
            return
        self._last = value
        self._items.append(value)
        self._wake.set()

    def close(self, error: BaseException | None = None) -> None:
        if self._closed:
            return
        self.push(False)
        self._closed, self._error = True, error
        self._wake.set()

    def __aiter__(self) -> ElectionStream:
        return self

    async def __anext__(self) -> bool:
        while not self._items:
            if self._closed:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        return self._items.popleft()
