"""The leadership operator: labels the leader pod of each election, decided from its Lease.

Importing this package loads nothing heavy; kopf and the clients are imported by the modules
that need them. The decision (`decide`) is a pure function, unit-tested without kopf or a
cluster; `app` wires it to kopf, the shared Lease watch and the API.
"""

from .contract import Labels, Role
from .decide import Member, Problem, Verdict, decide, pod_of_holder

__all__ = ["Labels", "Member", "Problem", "Role", "Verdict", "decide", "pod_of_holder"]
