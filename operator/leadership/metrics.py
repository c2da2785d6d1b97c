"""Counters a Candidate keeps about itself, for export by whatever metrics system you use.

The counterparts of client-go's ``leader_election_master_status`` (here `is_leader`) and
``leader_election_slowpath_total`` (`slow_path_renewals`), plus what an operator needs to
judge a candidate's health. No dependency: read ``candidate.metrics`` (a `CandidateMetrics`)
and publish its fields, e.g. as Prometheus gauges and counters labelled with the Lease name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CandidateMetrics:
    """Monotonic counters (and two last-seen values) of one Candidate. Updated in place."""

    #: times this candidate became leader.
    acquisitions: int = 0
    #: times it stopped leading: lost (deadline, taken, deleted), resigned or stopped.
    step_downs: int = 0
    #: successful renewals from the cached object (the fast path).
    renewals: int = 0
    #: renewals that needed a re-read after a 409 (someone else wrote the Lease).
    slow_path_renewals: int = 0
    #: failed renewal attempts (transient errors and timeouts), retried until the deadline.
    renew_failures: int = 0
    #: acquisitions lost to another writer (409) before they landed.
    acquire_conflicts: int = 0
    #: acquisitions answered after renew_deadline, too late to count (a term counts from
    #: when its write was sent), so renewed first: the API server is slow for this ttl.
    late_acquisitions: int = 0
    #: seconds the last successful renewal took, request to answer.
    last_renewal_latency: float | None = None
    #: why it last stepped down: "lost", "resign" or "stop".
    last_step_down: str | None = None
