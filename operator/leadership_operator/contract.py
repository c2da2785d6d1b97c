"""The contract between the operator and its users: label and annotation keys, role values.

- A pod joins the election ``<lease>`` of its own namespace with the label
  ``<prefix>/election: <lease>``.
- The operator sets ``<prefix>/role`` on every member pod: ``leader`` (the holder of a live
  Lease), ``stale`` (the holder of a Lease that expired or whose holder stopped renewing), or
  ``follower`` (every other member).
- ``<prefix>/on-expiry: delete-pod`` on a member opts it into deletion when its Lease expires
  under it.
- The holder leaves every route (its label becomes ``stale``) once it has not renewed for its
  renew deadline, before its Lease expires: by default 2/3 of ``leaseDurationSeconds``, the
  deadline at which this library's holders stop believing they lead. A member whose own
  step-down comes later declares it, in seconds, with the annotation
  ``<prefix>/renew-deadline-seconds`` (``13`` for client-go's defaults, which step down up to
  RenewDeadline plus one RetryPeriod after their last renewal's answer, 12 s, and a second
  of margin). A renewal gives the label back at once.

The prefix defaults to ``leadership.dev`` and is configurable (``--label-prefix``).

The operator writes the role label as the field manager `field_manager` names: one per
operator installation (its own Lease), so that a second operator, or a hand edit, shows in a
pod's ``managedFields`` as another writer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from leadership import toolkit

DEFAULT_PREFIX = "leadership.dev"


class Role(enum.StrEnum):
    LEADER = "leader"
    STALE = "stale"
    FOLLOWER = "follower"


@dataclass(frozen=True)
class Labels:
    """The keys, under one prefix (a DNS subdomain, as Kubernetes requires of label prefixes)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str):
            raise TypeError(f"label prefix must be a str, got {type(self.prefix).__name__}")
        if not toolkit.is_dns_subdomain(self.prefix):
            raise ValueError(f"label prefix must be a DNS subdomain (like leadership.dev), "
                             f"got {self.prefix!r}")

    @property
    def election(self) -> str:
        return f"{self.prefix}/election"

    @property
    def role(self) -> str:
        return f"{self.prefix}/role"

    @property
    def on_expiry(self) -> str:
        return f"{self.prefix}/on-expiry"

    @property
    def renew_deadline(self) -> str:
        return f"{self.prefix}/renew-deadline-seconds"


def field_manager(lease_namespace: str, lease_name: str) -> str:
    """The field manager of the label writes of the operator whose own Lease this is."""
    return f"leadership-operator/{lease_namespace}/{lease_name}"[:128]


def valid_lease_name(name: object) -> bool:
    """Whether an election label's value can name a Lease (a DNS subdomain)."""
    return toolkit.is_dns_subdomain(name)
