"""The role labels this operator wrote, kept until its pod watch shows them.

The member cache (`pods.Members`) is written only by the pod watch, which runs behind the API
server: right after a write it still shows the pod as it was. Deciding on that alone could
hide a `leader` label the operator has just written, and the next handover would give
`leader` to the new holder before taking it from the old one: two leaders. So the reconciler
keeps what it wrote (controller-runtime calls these expectations) and asks here which roles a
member may have now, from the version the cache shows:

- the version the write made: the watch has shown it; the write is forgotten here;
- the version the write was made on (nothing newer seen): the write stands;
- any other version (the watch skipped ours, as kopf's batching may, or someone wrote
  between): either may be current, so both roles are possible. The reconciler writes until
  only one is, and takes a possible `leader` away before giving it to anyone else.

A write is forgotten with its pod (`forget`, when the cache drops it). Pure and in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from .pods import Member


@dataclass(frozen=True)
class Write:
    """One role label write of this operator."""

    #: the role written (None: the label removed).
    role: str | None
    #: the pod's resourceVersion in the cache when it was written.
    before: str
    #: the resourceVersion the write made ("": the pod was gone).
    after: str


class OwnWrites:
    """The role writes the pod watch has not shown yet, by pod uid; see the module's doc."""

    def __init__(self) -> None:
        self._writes: dict[str, Write] = {}

    def wrote(self, member: Member, role: str | None, version: str) -> None:
        """The operator set `member`'s role label to `role` (None: removed it, or found the
        pod gone, then `version` is ""), making `version`."""
        self._writes[member.uid] = Write(role, member.resource_version, version)

    def _pending(self, member: Member) -> Write | None:
        write = self._writes.get(member.uid)
        if write is not None and write.after and member.resource_version == write.after:
            del self._writes[member.uid]  # the watch has shown it
            return None
        return write

    def roles(self, member: Member) -> set[str | None]:
        """The roles `member` may have now: one, or two while the cache is ambiguous."""
        write = self._pending(member)
        if write is None:
            return {member.role}
        if member.resource_version == write.before:
            return {write.role}
        return {member.role, write.role}

    def version(self, member: Member) -> str:
        """The resourceVersion `member` is at, as far as the operator knows: a precondition
        for a deletion that must not follow a change it has not seen."""
        write = self._pending(member)
        if write is not None and write.after and member.resource_version == write.before:
            return write.after
        return member.resource_version

    def forget(self, uid: str) -> None:
        """The pod is no longer followed."""
        self._writes.pop(uid, None)

    def __len__(self) -> int:
        return len(self._writes)
