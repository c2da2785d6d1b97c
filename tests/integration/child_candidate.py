"""A candidate in its own process, for the SIGKILL test: prints LEADING / FOLLOWING lines.

python -m tests.integration.child_candidate KUBECONFIG NAMESPACE KEY IDENTITY TTL STORE_KIND
(STORE_KIND: kubernetes or pykube)
"""

from __future__ import annotations

import asyncio
import sys

import kubernetes.aio.config
import pykube

import leadership


async def main(kubeconfig: str, namespace: str, key: str, node: str, ttl: int, kind: str) -> None:
    if kind == "kubernetes":
        api = await kubernetes.aio.config.new_client_from_config(config_file=kubeconfig)
        store: leadership.LeaseStore = leadership.KubernetesLeaseStore(api, namespace)
    else:
        store = leadership.PykubeLeaseStore(
            pykube.HTTPClient(pykube.KubeConfig.from_file(kubeconfig)), namespace)
    async for leading in leadership.Candidate(store, key, node, ttl=ttl).run_for_election():
        print("LEADING" if leading else "FOLLOWING", flush=True)


if __name__ == "__main__":
    path, ns, key, node, ttl, kind = sys.argv[1:7]
    asyncio.run(main(path, ns, key, node, int(ttl), kind))
