"""`KubernetesLeaseStore`: Leases through the official client's asyncio API (``kubernetes.aio``).

Requests go through the user's own ``kubernetes.aio.client.ApiClient`` (its configuration,
credentials and connection pool) as raw JSON: the generated model classes are bypassed, so
MicroTime strings and fields unknown to the client travel untouched, and ``replace`` is the
same full PUT that client-go sends.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from kubernetes.aio.client import ApiClient

from ..errors import StoreError, TransientStoreError, error_for_status, request_verb
from ..validation import check_client, validate_namespace, validate_seconds
from . import WATCH_SECONDS, JSONDict, WatchEvent
from ._wire import (
    LEASES_PATH,
    decode_watch_line,
    status_message,
)


class KubernetesLeaseStore:
    """Leases of `namespace`, through a ``kubernetes.aio`` `ApiClient` the caller owns."""

    def __init__(self, api_client: ApiClient, namespace: str, *,
                 request_timeout: float = 10.0) -> None:
        check_client(api_client, ApiClient, "api_client")
        self.api = api_client
        self.namespace = validate_namespace(namespace)
        self.request_timeout = validate_seconds(request_timeout, "request_timeout")
        self._rng = random.Random()
        self._granted: set[str] = set()  # verbs that succeeded: a 403 on them is transient

    def __repr__(self) -> str:
        return f"KubernetesLeaseStore({self.api.configuration.host}, namespace={self.namespace!r})"

    async def _open(self, method: str, path: str, *, query: list[tuple[str, Any]] | None = None,
                    body: JSONDict | None = None,
                    client_timeout: aiohttp.ClientTimeout | None = None,
                    ) -> aiohttp.ClientResponse:
        resource = LEASES_PATH.format(namespace=self.namespace) + path
        try:
            serialized = await self.api.param_serialize(
                method=method, resource_path=resource, query_params=query or [],
                header_params={"Accept": "application/json",
                               "Content-Type": "application/json"},
                body=body, auth_settings=["BearerToken"])
            rest = await self.api.call_api(*serialized, _preload_content=False,
                                           _request_timeout=client_timeout or self.request_timeout)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientStoreError(f"{method} {resource}: {exc!r}") from exc
        response: aiohttp.ClientResponse = rest.response
        if response.status >= 400:
            try:
                payload = await response.read()
            except (TimeoutError, aiohttp.ClientError, OSError):
                payload = b""
            finally:
                response.release()
            raise error_for_status(response.status, status_message(response.status, payload),
                                   authorized_verbs=self._granted)
        self._granted.add(request_verb(method, any(k == "watch" for k, _ in query or [])))
        return response

    async def _call(self, method: str, path: str, body: JSONDict | None = None) -> JSONDict:
        response = await self._open(method, path, body=body)
        try:
            data = await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientStoreError(f"{method} {path}: {exc!r}") from exc
        finally:
            response.release()
        try:
            result = json.loads(data)
        except ValueError as exc:
            raise TransientStoreError(f"{method} {path}: undecodable answer") from exc
        if not isinstance(result, dict):
            raise TransientStoreError(f"{method} {path}: answer is not an object")
        return result

    async def get(self, name: str) -> JSONDict | None:
        try:
            return await self._call("GET", f"/{name}")
        except StoreError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, lease: JSONDict) -> JSONDict:
        return await self._call("POST", "", body=lease)

    async def replace(self, lease: JSONDict) -> JSONDict:
        return await self._call("PUT", f"/{lease['metadata']['name']}", body=lease)

    async def watch(self, name: str, resource_version: str | None) -> AsyncIterator[WatchEvent]:
        seconds = self._rng.randint(*WATCH_SECONDS)
        query: list[tuple[str, Any]] = [
            ("watch", "true"), ("fieldSelector", f"metadata.name={name}"),
            ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(seconds))]
        if resource_version is not None:
            query.append(("resourceVersion", resource_version))
        response = await self._open(
            "GET", "", query=query,
            client_timeout=aiohttp.ClientTimeout(total=seconds + 30, connect=self.request_timeout))
        try:
            while True:
                try:
                    line = await response.content.readline()
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    raise TransientStoreError(f"watch of {name}: {exc!r}") from exc
                if not line:
                    return  # the server ended the watch
                event = decode_watch_line(line)
                if event is not None:
                    yield event
        finally:
            response.close()
