"""The pods the operator follows: every member of an election, and the strays.

kopf feeds `Members.pod_event` with every pod event in scope; each answers the elections it
touches, now or before (the reconciler looks at those again). A pod is followed while it
carries the election label (a member, or, with a label that is no Lease name, a stray to
report) or a role label (a stray in no election: its role label must go). `Members` keeps
only what the decision needs, never the pod object. It makes no request; the reconciler
tells it what it wrote (`wrote_role`).

It also notices a role label written by someone else: the pod's ``managedFields`` name the
field manager that set the label last, and a manager other than this operator's (another
operator, a hand edit) is queued in `foreign_writes` for the reconciler to report.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from leadership import toolkit

from .contract import Labels

#: (namespace, Lease name): one election.
Key = tuple[str, str]
#: foreign role writes kept for the reconciler to report, at most.
MAX_FOREIGN = 100


def role_writer(meta: dict[str, Any], role_key: str) -> str:
    """The field manager that set the pod's role label last ("" when unknown): the one whose
    ``managedFields`` entry owns it (an update takes a field over from its former owner)."""
    for entry in meta.get("managedFields") or []:
        if not isinstance(entry, dict):
            continue
        fields = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {}
        if isinstance(fields, dict) and f"f:{role_key}" in fields:
            return str(entry.get("manager") or "")
    return ""


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
    #: the resourceVersion seen last: a deletion is made on this very version only.
    resource_version: str = ""
    #: the field manager that set its role label last ("" when unknown).
    role_writer: str = ""

    @property
    def ref(self) -> dict[str, str]:
        """This pod as an Event's involvedObject."""
        return {"apiVersion": "v1", "kind": "Pod", "namespace": self.namespace,
                "name": self.name, "uid": self.uid}


class Members:
    """Members by election, and strays; see the module's doc."""

    def __init__(self, labels: Labels, field_manager: str = "") -> None:
        self.labels = labels
        #: the operator's own field manager: a role label set by any other is foreign.
        self.field_manager = field_manager
        #: (pod, the manager that wrote its role label): to report, oldest first.
        self.foreign_writes: deque[tuple[Member, str]] = deque(maxlen=MAX_FOREIGN)
        #: uid -> (namespace, name) of pods with a role label that left the pod watch:
        #: deleted, or relabelled out of their election (see `pod_event`); for the
        #: reconciler. At most one entry per pod the operator followed.
        self.departed: dict[str, tuple[str, str]] = {}
        self._by_uid: dict[str, Member] = {}
        self._by_election: dict[Key, dict[str, Member]] = {}
        self._strays: dict[str, Member] = {}

    def pod_event(self, kind: str, pod: dict[str, Any]) -> list[Key]:
        """Take in a pod event; return the elections it touches (now or before).

        The operator's pod watch selects pods with an election label, server-side, so a pod
        whose election label was removed arrives as DELETED, though it still exists, and
        carrying its *previous* state (the API server's watch cache sends the last object
        that matched). A DELETED pod that had a role label is therefore queued in
        `departed`: the reconciler looks it up, and a pod still there is taken in again
        (`pod_event("MODIFIED", ...)`), as a stray whose role label must go."""
        meta = pod.get("metadata") or {}
        if kind == "DELETED" and self.labels.role in (meta.get("labels") or {}) and (
                meta.get("uid")):
            self.departed[str(meta["uid"])] = (str(meta.get("namespace") or ""),
                                               str(meta.get("name")))
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
                election=raw if toolkit.is_dns_subdomain(raw) else None, raw_election=raw,
                resource_version=str(meta.get("resourceVersion") or ""),
                role_writer=role_writer(meta, self.labels.role))
            writer = member.role_writer
            # A change seen happening, not the state found at start: labels written before
            # (by an older version of this operator, under another manager name) are no news.
            if (self.field_manager and member.role is not None and writer
                    and writer != self.field_manager and old is not None
                    and (old.role, old.role_writer) != (member.role, writer)):
                self.foreign_writes.append((member, writer))
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

    def has(self, key: Key) -> bool:
        """Whether any pod is a member of this election."""
        return key in self._by_election

    def elections(self) -> list[Key]:
        return sorted(self._by_election)

    def has_strays(self) -> bool:
        return bool(self._strays)

    def strays(self) -> list[Member]:
        """Pods in no election (no valid election label) that carry a role label or a bad
        election label: the role label must go, a bad label be reported."""
        return list(self._strays.values())

    def wrote_role(self, member: Member, role: str | None, resource_version: str) -> None:
        """The reconciler set (or removed) `member`'s role label; the pod is now at
        `resource_version`. A stray with nothing left to clean is forgotten (the server-side
        selector shows no more of it)."""
        member.role = role
        if resource_version:
            member.resource_version = resource_version
        if member.election is None and member.role is None and member.raw_election is None:
            self._by_uid.pop(member.uid, None)
            self._strays.pop(member.uid, None)

    def follows(self, uid: str) -> bool:
        """Whether the pod with this uid is followed (a member or a stray)."""
        return uid in self._by_uid

    def forget(self, member: Member) -> None:
        """Drop a pod known to be gone (a write found it deleted)."""
        self._by_uid.pop(member.uid, None)
        self._strays.pop(member.uid, None)
        if member.election:
            key = (member.namespace, member.election)
            members = self._by_election.get(key, {})
            members.pop(member.uid, None)
            if not members:
                self._by_election.pop(key, None)

    def __len__(self) -> int:
        return len(self._by_uid)
