"""Two live processes campaigning under one identity (a twin): found in one place, said
with one error text.

A Lease held under our identity by a process other than this one is either a previous run
of it (which has stopped renewing: its claim is waited out like anyone's) or a live twin
(its renewals go on). A candidate that is not leading calls `held_by_another` each time it
sees such a claim; after a full Lease duration of renewals the difference is known, and
it ends with `DuplicateIdentityError`. A leader whose renewal conflicts with a write under
its own identity that it did not make knows at once (`error`).
"""

from __future__ import annotations

import logging

from .errors import DuplicateIdentityError

log = logging.getLogger("leadership")

_ADVICE = ("two live processes share one identity. Give each process its own (two replicas "
           "given one --identity or node=, or two containers of a pod both using $POD_NAME; "
           "the default, <pod>_<uuid>, is unique per process)")


class TwinWatch:
    """Notices a twin of the candidate `identity` (`where` names it in messages)."""

    def __init__(self, where: str, identity: str, ttl: int) -> None:
        self.where, self.identity, self.ttl = where, identity, ttl
        self._since: float | None = None

    def error(self, how: str, status: int | None = None) -> DuplicateIdentityError:
        """The one text: `how` says what the other process was seen doing."""
        return DuplicateIdentityError(
            f"{self.where}: another process {how} as {self.identity!r}: {_ADVICE}",
            status=status)

    def cleared(self) -> None:
        """The Lease is not held under our identity by another process (any more)."""
        self._since = None

    def held_by_another(self, observed_at: float) -> None:
        """The Lease is held under our identity by another process, as seen at
        `observed_at` (the time the holder's last renewal was seen): a warning the first
        time; `DuplicateIdentityError` once its renewals have gone on for a full duration."""
        if self._since is None:
            self._since = observed_at
            log.warning("%s: the lease is held under our identity by another process: a "
                        "previous run of this one (waited out), or a twin. If its renewals "
                        "go on for %ds, this candidate stops with DuplicateIdentityError: "
                        "%s", self.where, self.ttl, _ADVICE)
        elif observed_at - self._since >= self.ttl:
            raise self.error(f"has renewed the lease for {observed_at - self._since:.0f}s, "
                             "a full lease duration,")
