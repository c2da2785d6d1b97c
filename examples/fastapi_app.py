"""Leader election inside a FastAPI app served by uvicorn: one Candidate per worker process.

    POD_NAME=web-0 LEASE_NAME=my-app uvicorn examples.fastapi_app:app --workers 4

- The client and the Candidate are made inside the running loop (the lifespan), never at
  import time: a `kubernetes.aio` client belongs to the loop that made it.
- The leader's job runs as a task through `run_while_leading`: it is cancelled the moment
  leadership is lost, and started again if it is regained.
- On shutdown (SIGTERM from Kubernetes, Ctrl-C) the lifespan awaits `stop()`: the job is
  cancelled first, then the Lease is released, so another pod takes over in milliseconds.
- Every worker is a process with its own identity (the default, ``<pod>_<uuid>``), so the
  workers of one pod compete like any other candidates, and exactly one in the whole
  Deployment leads.
- Readiness never depends on leadership: every worker serves requests. Gating readiness on
  leadership deadlocks rolling updates.

``GET /leader`` answers this worker's view, for the curious.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from kubernetes.aio import client, config

import leadership

LEASE = os.environ.get("LEASE_NAME", "fastapi-example")
log = logging.getLogger("examples.fastapi_app")


def own_namespace() -> str:
    """POD_NAMESPACE (downward API), else the ServiceAccount's namespace file, else default."""
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    return "default"


async def open_client() -> client.ApiClient:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):  # in a pod
        config.load_incluster_config()  # synchronous; sets the default configuration
        return client.ApiClient()
    return await config.new_client_from_config()  # $KUBECONFIG, else ~/.kube/config


async def leader_job(candidate: leadership.Candidate) -> None:
    """What only one worker in the whole Deployment may do at a time."""
    while True:
        log.info("%s: doing the leader's job (fencing token %s)", candidate.node,
                 candidate.fencing_token)
        await asyncio.sleep(1)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    api = await open_client()
    store = leadership.KubernetesLeaseStore(api, own_namespace())
    candidate = leadership.Candidate(store, LEASE, ttl=15)
    campaign = asyncio.create_task(candidate.run_while_leading(lambda: leader_job(candidate)))
    app.state.candidate = candidate
    try:
        yield
    finally:
        await candidate.stop()  # cancels the job, then releases the Lease
        with contextlib.suppress(Exception):  # a failed job was logged by the candidate
            await campaign
        await api.close()


app = FastAPI(lifespan=lifespan)


@app.get("/leader")
async def leader() -> dict[str, Any]:
    candidate: leadership.Candidate = app.state.candidate
    return {"identity": candidate.node, "is_leader": candidate.is_leader,
            "fencing_token": candidate.fencing_token}
