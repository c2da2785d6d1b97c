"""No bearer token reaches an error message or a log line, even from a client exception
whose repr carries the request's headers (aiohttp's TooManyRedirects does)."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
from kubernetes.aio.client import ApiClient, Configuration
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

import leadership
from leadership import describe_error
from leadership.testing import ManualClock

TOKEN = "s3cr3t-bearer-token"


def leaky_error() -> aiohttp.TooManyRedirects:
    url = URL("https://10.0.0.1/apis/coordination.k8s.io/v1/namespaces/ns/leases/web")
    headers = CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {TOKEN}"}))
    info = aiohttp.RequestInfo(url, "GET", headers, url)
    return aiohttp.TooManyRedirects(info, (), status=302, message="Found")


def test_the_exception_would_leak_through_its_repr_but_not_through_describe() -> None:
    exc = leaky_error()
    assert TOKEN in repr(exc)  # what a careless log line would print
    assert TOKEN not in describe_error(exc) and "TooManyRedirects" in describe_error(exc)


async def test_no_token_in_store_errors_or_in_the_candidates_log(
        clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = ApiClient(Configuration(host="https://10.0.0.1"))

    async def call_api(*args: Any, **kwargs: Any) -> Any:
        raise leaky_error()

    api.call_api = call_api  # type: ignore[method-assign]
    store = leadership.KubernetesLeaseStore(api, "ns")
    with pytest.raises(leadership.TransientStoreError) as failed:
        await store.get("web")
    assert TOKEN not in str(failed.value)
    candidate = leadership.Candidate(store, "web", "a", ttl=3, clock=clock)
    candidate.run_for_election()
    await clock.advance(5)  # several failed reads, retried and logged
    await candidate.stop()
    await api.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "TooManyRedirects" in logged
    assert TOKEN not in logged
