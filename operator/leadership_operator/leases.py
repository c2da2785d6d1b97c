"""One shared watch of every Lease in a scope (a namespace, or the whole cluster).

The operator follows thousands of Leases, so it must not watch each one: this lists the
Leases once, then watches them all from the list's resourceVersion, with bookmarks, feeding
each event to `State.lease_event` (one `ExpiryTracker` per Lease). It re-lists after a 410 or
an error, with backoff, and when a confirming read found a change the watch had not
delivered and the watch then stays silent (`suspect()`): a busy API server's watch lags
behind its reads, and re-listing thousands of Leases for that would only slow it further.
It only reads. `last_activity` (monotonic) tells the health check it is alive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from .metrics import OperatorMetrics
from .state import State

log = logging.getLogger("leadership.operator")
#: The server ends each watch after this long, and the client gives up 30 s later.
WATCH_SECONDS = (240, 300)
#: A suspected watch is restarted unless it delivers something (a bookmark will do) within
#: this many seconds: an ordered stream that delivers anything is alive, merely behind.
SUSPECT_GRACE = 5.0


class LeaseWatch:
    def __init__(self, api: Any, namespace: str | None, state: State,
                 on_change: Callable[[], None], metrics: OperatorMetrics) -> None:
        self.api, self.namespace, self.state = api, namespace, state
        self.on_change, self.metrics = on_change, metrics
        self.last_activity = time.monotonic()
        #: set once the first list has been taken in.
        self.synced = asyncio.Event()
        self._stream: asyncio.Task[None] | None = None
        self._suspicion: asyncio.Task[None] | None = None
        self._rng = random.Random()

    @property
    def path(self) -> str:
        base = "/apis/coordination.k8s.io/v1"
        return f"{base}/namespaces/{self.namespace}/leases" if self.namespace else f"{base}/leases"

    def restart(self) -> None:
        if self._stream is not None:
            self._stream.cancel()

    def suspect(self, grace: float = SUSPECT_GRACE) -> None:
        """A read showed a change this watch has not delivered: it is lagging (a busy API
        server) or dead (a half-open connection). Restart it unless it delivers anything
        within `grace` seconds."""
        if self._suspicion is None or self._suspicion.done():
            self._suspicion = asyncio.ensure_future(self._check(time.monotonic(), grace))

    async def _check(self, since: float, grace: float) -> None:
        await asyncio.sleep(grace)
        if self.last_activity <= since:
            self.restart()

    async def _open(self, query: list[tuple[str, str]], request_timeout: Any) -> Any:
        serialized = self.api.param_serialize(
            method="GET", resource_path=self.path, query_params=query,
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        if asyncio.iscoroutine(serialized):
            serialized = await serialized
        rest = await self.api.call_api(*serialized, _preload_content=False,
                                       _request_timeout=request_timeout)
        response = rest.response
        if response.status >= 400:
            body = await response.read()
            response.release()
            raise WatchError(response.status, body[:300].decode(errors="replace"))
        return response

    async def _list(self) -> str:
        response = await self._open([], 30)
        try:
            data = json.loads(await response.read())
        finally:
            response.release()
        seen = set()
        for item in data.get("items") or []:
            meta = item.setdefault("metadata", {})
            meta.pop("managedFields", None)
            meta.setdefault("namespace", self.namespace)
            key = self.state.lease_event("ADDED", item)
            if key:
                seen.add(key)
        for key in list(self.state.trackers):
            if key not in seen and (self.namespace is None or key[0] == self.namespace):
                self.state.forget_lease(key)
        self.synced.set()
        self.on_change()
        return str((data.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, version: str) -> None:
        import aiohttp

        seconds = self._rng.randint(*WATCH_SECONDS)
        response = await self._open(
            [("watch", "true"), ("allowWatchBookmarks", "true"),
             ("resourceVersion", version), ("timeoutSeconds", str(seconds))],
            aiohttp.ClientTimeout(total=seconds + 30, connect=10))
        try:
            while True:
                line = await response.content.readline()
                if not line:
                    return
                self.last_activity = time.monotonic()
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise WatchError(int(obj.get("code") or 500), str(obj.get("message")))
                if kind == "BOOKMARK":
                    continue
                obj.get("metadata", {}).pop("managedFields", None)
                self.state.lease_event(kind, obj)
                self.on_change()
        finally:
            response.close()

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                version = await self._list()
                self.last_activity = time.monotonic()
                attempt = 0
                while True:
                    opened = time.monotonic()
                    self._stream = asyncio.ensure_future(self._watch(version))
                    try:
                        await asyncio.wait([self._stream])
                    finally:
                        if not self._stream.done():
                            self._stream.cancel()
                            await asyncio.gather(self._stream, return_exceptions=True)
                    if self._stream.cancelled():
                        self.metrics.watch_restarts.inc()
                        log.warning("lease watch (%s): silent since a read showed a change "
                                    "it had not delivered; restarting it",
                                    self.namespace or "all")
                        break  # re-list at once
                    self._stream.result()  # raises what ended it
                    # The server ended it: re-list, cheap and always valid.
                    lasted = time.monotonic() - opened
                    if lasted < WATCH_SECONDS[0] - 5:  # not its timeout: a server drops
                        self.metrics.watch_restarts.inc()  # a watcher that falls behind
                        log.warning("lease watch (%s): ended by the server after %.0fs, "
                                    "before its timeout; re-listing",
                                    self.namespace or "all", lasted)
                    break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.watch_restarts.inc()
                delay = min(5.0, 0.2 * 2 ** attempt) * (0.5 + self._rng.random())
                attempt += 1
                log.warning("lease watch (%s) failed: %s; re-listing in %.1fs",
                            self.namespace or "all", exc, delay)
                await asyncio.sleep(delay)


class WatchError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
