"""The operator's Prometheus metrics (prometheus-client), in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active = Gauge("leadership_operator_active",
                            "1 on the replica that holds the operator's Lease and writes, "
                            "0 on a standby", registry=r)
        self.elections = Gauge("leadership_operator_elections",
                               "Elections by state (leading, late, expired, free, "
                               "missing, unmatched: ElectionState)", ["state"], registry=r)
        self.transitions = Counter("leadership_operator_election_transitions",
                                   "Changes of an election's state or holder, by new state",
                                   ["state"], registry=r)
        self.label_writes = Counter("leadership_operator_label_writes",
                                    "Role label writes to pods", registry=r)
        self.slice_writes = Counter("leadership_operator_leader_endpoint_writes",
                                    "Writes of leader EndpointSlices (one per handover, "
                                    "drain or change of the leader pod)", registry=r)
        self.drains = Counter("leadership_operator_drains",
                              "Holders drained at their renew deadline, before expiry "
                              "(confirmed)", registry=r)
        self.expiries = Counter("leadership_operator_expiries",
                                "Leases seen expire under their holder (confirmed)", registry=r)
        self.label_latency = Histogram(
            "leadership_operator_label_latency_seconds",
            "From a Lease changing hands (as observed) to the leader label written",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.watch_restarts = Counter("leadership_operator_watch_restarts",
                                      "Re-lists of the Leases of a scope (errors, 410s, "
                                      "a confirming read that found the watch dead)",
                                      registry=r)
        self.watches_opened = Counter("leadership_operator_lease_watches_opened",
                                      "Lease watches opened (a watch the server ends is "
                                      "opened again from the last version seen)", registry=r)
        self.loop_lag = Histogram(
            "leadership_operator_event_loop_lag_seconds",
            "How late a timer of 100 ms fires: time the event loop spent busy with something "
            "else (decoding, handlers) while watches waited to be read",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r)
        self.events_posted = Counter("leadership_operator_events_posted",
                                     "Events created or aggregated (patched), by reason",
                                     ["reason"], registry=r)
        self.permission_denied = Counter(
            "leadership_operator_permission_denied",
            "Writes RBAC refused (HTTP 403), by verb and resource: the operator cannot do its "
            "job; /healthz fails meanwhile", ["verb", "resource"], registry=r)
        self.foreign_role_writes = Counter(
            "leadership_operator_foreign_role_writes",
            "Role labels found written by another field manager than this operator's: "
            "another operator, or a hand edit (each is put right)", registry=r)
