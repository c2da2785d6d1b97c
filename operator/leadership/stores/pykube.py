"""`PykubeLeaseStore`: Leases through a ``pykube.HTTPClient`` the caller already has.

pykube-ng has no Lease class and its object ``update()`` is a merge PATCH, so this store uses
the client's raw HTTP methods instead: GET, POST, and a real PUT for ``replace`` (a full
compare-and-swap write, exactly as client-go does). pykube is synchronous: every request runs
in a worker thread, off the event loop. Its ``HTTPClient(timeout=10)`` would also cut idle
watches after 10 s, so the watch passes its own (connect, read) timeouts.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import pykube
import requests

from ..errors import (
    StoreError,
    TransientStoreError,
    describe_error,
    error_for_status,
    request_verb,
)
from ..validation import check_client, validate_namespace, validate_seconds
from . import WATCH_SECONDS, JSONDict, WatchEvent
from ._wire import (
    decode_watch_line,
    status_message,
)

_VERSION = "coordination.k8s.io/v1"
_END = object()


class PykubeLeaseStore:
    """Leases of `namespace`, through a `pykube.HTTPClient` the caller owns."""

    def __init__(self, http_client: pykube.HTTPClient, namespace: str, *,
                 request_timeout: float = 10.0) -> None:
        check_client(http_client, pykube.HTTPClient, "http_client")
        self.http = http_client
        self.namespace = validate_namespace(namespace)
        self.request_timeout = validate_seconds(request_timeout, "request_timeout")
        self._rng = random.Random()
        self._granted: set[str] = set()  # verbs that succeeded: a 403 on them is transient

    def __repr__(self) -> str:
        return f"PykubeLeaseStore({self.http.url}, namespace={self.namespace!r})"

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.request_timeout)
        try:
            response: requests.Response = self.http.request(
                method, version=_VERSION, namespace=self.namespace, url=url, **kwargs)
        except (requests.ConnectionError, requests.Timeout, OSError) as exc:
            raise TransientStoreError(f"{method} leases/{url}: {describe_error(exc)}") from exc
        if response.status_code >= 400:
            body = response.content
            response.close()
            raise error_for_status(response.status_code,
                                   status_message(response.status_code, body),
                                   authorized_verbs=self._granted)
        self._granted.add(request_verb(method, bool((kwargs.get("params") or {}).get("watch"))))
        return response

    def _call(self, method: str, url: str, body: JSONDict | None = None) -> JSONDict:
        response = self._send(method, url, json=body) if body is not None else self._send(
            method, url)
        try:
            result = response.json()
        except ValueError as exc:
            raise TransientStoreError(f"{method} leases/{url}: undecodable answer") from exc
        if not isinstance(result, dict):
            raise TransientStoreError(f"{method} leases/{url}: answer is not an object")
        return result

    async def get(self, name: str) -> JSONDict | None:
        try:
            return await asyncio.to_thread(self._call, "GET", f"leases/{name}")
        except StoreError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, lease: JSONDict) -> JSONDict:
        return await asyncio.to_thread(self._call, "POST", "leases", lease)

    async def replace(self, lease: JSONDict) -> JSONDict:
        return await asyncio.to_thread(self._call, "PUT",
                                       f"leases/{lease['metadata']['name']}", lease)

    async def watch(self, name: str, resource_version: str | None) -> AsyncIterator[WatchEvent]:
        seconds = self._rng.randint(*WATCH_SECONDS)
        params = {"watch": "true", "fieldSelector": f"metadata.name={name}",
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(seconds)}
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        response = await asyncio.to_thread(
            self._send, "GET", "leases", params=params, stream=True,
            timeout=(self.request_timeout, seconds + 30))
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[Any] = asyncio.Queue()
        closed = threading.Event()

        def hand_over(item: Any) -> None:
            if not closed.is_set():
                try:
                    loop.call_soon_threadsafe(lines.put_nowait, item)
                except RuntimeError:  # the loop is closed: nobody is listening any more
                    closed.set()

        def read() -> None:  # a daemon thread: blocking reads never hold up the loop
            item: Any = _END
            try:
                for line in response.iter_lines():
                    if closed.is_set():
                        return
                    hand_over(line)
            except Exception as exc:
                item = exc
            finally:
                hand_over(item)
                response.close()  # here, not on the loop: close() waits for a blocked read

        threading.Thread(target=read, name=f"pykube-watch-{name}", daemon=True).start()
        try:
            while True:
                item = await lines.get()
                if item is _END:
                    return
                if isinstance(item, Exception):
                    if isinstance(item, StoreError):
                        raise item
                    raise TransientStoreError(f"watch of {name}: {item!r}") from item
                event = decode_watch_line(item)
                if event is not None:
                    yield event
        finally:
            closed.set()
            _abort(response)


def _abort(response: requests.Response) -> None:
    """Make the reading thread's blocked read return now: shut the socket down.

    Closing the response instead would block on the reader's buffer lock until the server
    sent something (up to the watch timeout). Without a socket to shut down, the daemon
    thread ends by itself at the watch's read timeout.
    """
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

