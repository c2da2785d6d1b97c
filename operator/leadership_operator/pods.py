"""The pods the operator follows: every member of an election, and the strays.

kopf feeds `Members.pod_event` with every pod event in scope; each answers the elections it
touches, now or before (the reconciler looks at those again). A pod is followed while it
carries the election label (a member, or, with a label that is no Lease name, a stray to
report) or a role label (a stray in no election: its role label must go). `Members` keeps
only what the decision needs, never the pod object. It makes no request; the reconciler
tells it what it wrote (`wrote_role`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import leadership

from .contract import Labels

#: (namespace, Lease name): one election.
Key = tuple[str, str]


@dataclass
class Member:
    """A pod the operator follows, as it last saw it."""

    name: str
    uid: str = ""
    #: its role label, or None.
    role: str | None = None
    #: whether it opted into deletion when its Lease expires under it.
    delete_on_expiry: bool = False
    namespace: str = ""
    #: the Lease it joined (a valid name), or None (then it is a stray).
    election: str | None = None
    #: the election label as found (to report one that names no possible Lease).
    raw_election: str | None = None

    @property
    def ref(self) -> dict[str, str]:
        """This pod as an Event's involvedObject."""
        return {"apiVersion": "v1", "kind": "Pod", "namespace": self.namespace,
                "name": self.name, "uid": self.uid}


class Members:
    """Members by election, and strays; see the module's doc."""

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self._by_uid: dict[str, Member] = {}
        self._by_election: dict[Key, dict[str, Member]] = {}
        self._strays: dict[str, Member] = {}

    def pod_event(self, kind: str, pod: dict[str, Any]) -> list[Key]:
        """Take in a pod event; return the elections it touches (now or before)."""
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
        old = self._by_uid.pop(uid, None)
        self._strays.pop(uid, None)
        touched = []
        if old is not None and old.election:
            key = (old.namespace, old.election)
            touched.append(key)
            members = self._by_election.get(key, {})
            members.pop(uid, None)
            if not members:
                self._by_election.pop(key, None)
        if kind != "DELETED":
            labels = meta.get("labels") or {}
            annotations = meta.get("annotations") or {}
            raw = labels.get(self.labels.election)
            member = Member(
                name=str(meta.get("name")), uid=uid, role=labels.get(self.labels.role),
                delete_on_expiry=annotations.get(self.labels.on_expiry) == "delete-pod",
                namespace=str(meta.get("namespace")),
                election=raw if leadership.is_dns_subdomain(raw) else None, raw_election=raw)
            if member.election is not None or member.role is not None or raw is not None:
                self._by_uid[uid] = member
                if member.election is None:
                    self._strays[uid] = member
            if member.election:
                key = (member.namespace, member.election)
                touched.append(key)
                self._by_election.setdefault(key, {})[uid] = member
        return touched

    def of(self, key: Key) -> list[Member]:
        """The members of one election, by name."""
        return sorted(self._by_election.get(key, {}).values(), key=lambda m: m.name)

    def elections(self) -> list[Key]:
        return sorted(self._by_election)

    def strays(self) -> list[Member]:
        """Pods in no election (no valid election label) that carry a role label or a bad
        election label: the role label must go, a bad label be reported."""
        return list(self._strays.values())

    def wrote_role(self, member: Member, role: str | None) -> None:
        """The reconciler set (or removed) `member`'s role label."""
        member.role = role

    def __len__(self) -> int:
        return len(self._by_uid)
