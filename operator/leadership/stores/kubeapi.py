"""`KubeApi`: the one way this project talks to the API server through the official client.

Raw JSON in and out, over a ``kubernetes.aio`` `ApiClient` the caller owns (its
configuration, credentials and connection pool): the generated model classes are bypassed,
so MicroTime strings and fields the client does not know travel untouched. Used by
`KubernetesLeaseStore`, the operator, the sidecar, ``leadership status`` and the benchmarks.

- `request(method, path, ...)`: one request; the decoded JSON answer.
- `list_all(path, ...)`: every item of a collection, page by page (``limit`` and ``continue``),
  and the list's ``resourceVersion`` to watch from.
- `watch(path, resource_version, ...)`: a collection's events from that version, with
  bookmarks; it ends when the server ends it (the server is asked to after a random
  `WATCH_SECONDS`, as client-go's reflectors do) and raises `WatchExpiredError` on a 410.

Timeouts: each request and each watch's connection `request_timeout` (default 10 s); a watch
in all `seconds + 30`, so one the server forgot still ends.

Errors are those of `leadership.errors`, never a client library's: `TransientStoreError` for
connection loss, timeouts, 5xx and 429 (and a 401 or 403 for a verb on a resource this
`KubeApi` was granted before: an API server that just restarted answers that until its
authorizer has loaded RBAC), `NotFoundError` (404), `ConflictError` (409),
`WatchExpiredError` (410), `FatalStoreError` for the rest. Messages carry the method, path
and the API server's own message; never a header, so never a token.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import json
import random
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiohttp.http_exceptions
from kubernetes.aio.client import ApiClient

from ..errors import TransientStoreError, describe_error, error_for_status, request_verb
from ..validation import check_client, validate_seconds
from . import WATCH_SECONDS, JSONDict, WatchEvent
from ._wire import decode_watch_line, status_message

#: The page size of `list`: the API server's default cap is 500 per page too.
PAGE_SIZE = 500
_RESOURCE = re.compile(
    r"^/apis?/(?:[^/]+/)?v[^/]+/(?:namespaces/[^/]+/)?([a-z0-9.-]+)(/[^/?]+)?")


def resource_of(path: str) -> tuple[str, bool]:
    """The resource a path addresses, and whether it names one object:
    ``/api/v1/namespaces/x/pods/p`` -> ``("pods", True)``."""
    m = _RESOURCE.match(path)
    return (m.group(1), m.group(2) is not None) if m else ("", True)


class KubeApi:
    """Requests to the API server through a ``kubernetes.aio`` `ApiClient` the caller owns."""

    def __init__(self, api_client: ApiClient, *, request_timeout: float = 10.0) -> None:
        check_client(api_client, ApiClient, "api_client")
        self.client = api_client
        self.request_timeout = validate_seconds(request_timeout, "request_timeout")
        self._rng = random.Random()
        #: (verb, resource) pairs that succeeded: a 401/403 on them later is transient.
        self._granted: set[tuple[str, str]] = set()
        self._server_date: tuple[datetime.datetime, float] | None = None

    def server_now(self) -> datetime.datetime | None:
        """The API server's time as its last answer's ``Date`` header told it (to the second),
        moved on by this machine's monotonic clock since: a clock to judge remote
        timestamps against without trusting this machine's wall clock. None before an
        answer with a Date."""
        if self._server_date is None:
            return None
        date, at = self._server_date
        return date + datetime.timedelta(seconds=time.monotonic() - at)

    @property
    def host(self) -> str:
        return str(self.client.configuration.host)

    def __repr__(self) -> str:
        return f"KubeApi({self.host})"

    async def open(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                   body: Any = None, content_type: str = "application/json",
                   request_timeout: float | aiohttp.ClientTimeout | None = None,
                   ) -> aiohttp.ClientResponse:
        """Send one request and return the response, its body unread (the caller releases
        it); an error status raises the matching `StoreError`."""
        query = query or []
        try:
            serialized = await self.client.param_serialize(
                method=method, resource_path=path, query_params=query,
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body, auth_settings=["BearerToken"])
            rest = await self.client.call_api(
                *serialized, _preload_content=False,
                _request_timeout=request_timeout or self.request_timeout)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientStoreError(f"{method} {path}: {describe_error(exc)}") from exc
        response: aiohttp.ClientResponse = rest.response
        date = response.headers.get("Date")
        if date:
            with contextlib.suppress(TypeError, ValueError):
                parsed = email.utils.parsedate_to_datetime(date)
                if parsed.tzinfo is not None:
                    self._server_date = (parsed, time.monotonic())
        resource, one = resource_of(path)
        verb = request_verb(method, any(k == "watch" for k, _ in query))
        if verb == "get" and not one:
            verb = "list"
        if response.status >= 400:
            try:
                payload = await response.read()
            except (TimeoutError, aiohttp.ClientError, OSError):
                payload = b""
            finally:
                response.release()
            raise error_for_status(
                response.status, f"{method} {path}: {status_message(response.status, payload)}",
                authorized_verbs={v for v, r in self._granted if r == resource})
        self._granted.add((verb, resource))
        return response

    async def request(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                      body: Any = None, content_type: str = "application/json",
                      request_timeout: float | None = None) -> JSONDict:
        """One request; the answer's JSON object (an empty answer is ``{}``)."""
        response = await self.open(method, path, query=query, body=body,
                                   content_type=content_type, request_timeout=request_timeout)
        try:
            data = await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientStoreError(f"{method} {path}: {describe_error(exc)}") from exc
        finally:
            response.release()
        if not data:
            return {}
        try:
            result = json.loads(data)
        except ValueError as exc:
            raise TransientStoreError(f"{method} {path}: undecodable answer") from exc
        if not isinstance(result, dict):
            raise TransientStoreError(f"{method} {path}: the answer is not an object")
        return result

    async def list_all(self, path: str, *, query: list[tuple[str, str]] | None = None,
                   page_size: int = PAGE_SIZE) -> tuple[list[JSONDict], str]:
        """Every item of the collection at `path`, fetched `page_size` at a time, and the
        resourceVersion of the list (to watch from). Items carry no ``managedFields``."""
        items: list[JSONDict] = []
        token = ""
        while True:
            page = [*(query or []), ("limit", str(page_size))]
            if token:
                page.append(("continue", token))
            result = await self.request("GET", path, query=page)
            for item in result.get("items") or []:
                if isinstance(item, dict):
                    (item.get("metadata") or {}).pop("managedFields", None)
                    items.append(item)
            meta = result.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    async def watch(self, path: str, resource_version: str | None, *,
                    query: list[tuple[str, str]] | None = None,
                    seconds: tuple[int, int] = WATCH_SECONDS) -> AsyncIterator[WatchEvent]:
        """The events of the collection at `path` from `resource_version` (None: the current
        state first, as ADDED), bookmarks included; ``managedFields`` dropped."""
        timeout = self._rng.randint(*seconds)
        params = [*(query or []), ("watch", "true"), ("allowWatchBookmarks", "true"),
                  ("timeoutSeconds", str(timeout))]
        if resource_version:
            params.append(("resourceVersion", resource_version))
        response = await self.open(
            "GET", path, query=params,
            request_timeout=aiohttp.ClientTimeout(total=timeout + 30,
                                                  connect=self.request_timeout))
        try:
            while True:
                try:
                    line = await response.content.readline()
                except (TimeoutError, aiohttp.ClientError, OSError,
                        aiohttp.http_exceptions.HttpProcessingError) as exc:
                    # (an event line longer than the client's buffer limit included: the
                    # watch ends, and is opened again)
                    raise TransientStoreError(f"watch {path}: {describe_error(exc)}") from exc
                if not line:
                    return  # the server ended the watch
                event = decode_watch_line(line)
                if event is not None:
                    (event.object.get("metadata") or {}).pop("managedFields", None)
                    yield event
        finally:
            response.close()
