"""The leadership operator: labels the leader pod of each election, decided from its Lease.

Importing this package loads nothing heavy; kopf and the clients are imported by the modules
that need them. The decision (`decide`) is a pure function, unit-tested without kopf or a
cluster; `app` wires it to kopf, the Lease cache (`leases`), the members (`pods`) and the
API server (`kube`, on the library's `KubeApi`).
"""

from .contract import Labels, Role
from .decide import ElectionState, Problem, Verdict, decide, pod_of_holder
from .pods import Member

__all__ = ["ElectionState", "Labels", "Member", "Problem", "Role", "Verdict", "decide",
           "pod_of_holder"]
