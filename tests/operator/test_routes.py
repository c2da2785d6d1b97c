"""The leader endpoint as data: what is kept of a pod (`pods.address`) and of a Service
(`services`), and the EndpointSlice `routes.leader_slice` makes of them; pure, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from leadership_operator.contract import Labels
from leadership_operator.pods import MAX_PORTS, Members, address
from leadership_operator.routes import MANAGED_BY, OPERATOR, SERVICE_NAME, leader_slice
from leadership_operator.services import Services, leader_service

LABELS = Labels()


def pod(name: str = "web-0", *, ips: list[str] | None = None, ready: bool = True,
        ports: list[Any] | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": "apps", "name": name, "uid": f"uid-{name}",
                            "labels": {LABELS.election: "web"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-04T00:00:00Z"
    listed = ["10.1.0.5"] if ips is None else ips
    return {"metadata": meta,
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "ports": ports or [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}]},
            "status": {"podIP": listed[0] if listed else None,
                       "podIPs": [{"ip": ip} for ip in listed],
                       "conditions": [{"type": "Ready", "status": str(ready)}]}}


def service(ports: list[Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "apps", "name": "web-leader", "uid": "svc-1",
                         "labels": {LABELS.election: "web"}},
            "spec": {"ports": ports if ports is not None else [
                {"name": "http", "port": 80, "targetPort": "http"}], **spec}}


def member(body: dict[str, Any]) -> Any:
    return Members(LABELS).member(body)


def test_the_slice_lists_the_leader_alone_with_its_conditions_and_resolved_ports() -> None:
    svc = leader_service(LABELS, service([
        {"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"},
        {"name": "metrics", "port": 9090, "targetPort": 9091},
        {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"}]))
    body, problems = leader_slice(svc, member(pod()), LABELS)
    assert problems == []
    assert body["metadata"]["name"] == "web-leader-leader"
    assert body["metadata"]["labels"] == {SERVICE_NAME: "web-leader", MANAGED_BY: OPERATOR,
                                          LABELS.election: "web"}
    assert body["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Service", "name": "web-leader", "uid": "svc-1",
         "controller": True}]
    assert body["addressType"] == "IPv4"
    assert body["endpoints"] == [{
        "addresses": ["10.1.0.5"], "conditions": {"ready": True, "serving": True,
                                                  "terminating": False},
        "targetRef": {"kind": "Pod", "namespace": "apps", "name": "web-0", "uid": "uid-web-0"},
        "nodeName": "node-1"}]
    assert body["ports"] == [
        {"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"},
        {"name": "metrics", "port": 9091, "protocol": "TCP"},
        {"name": "dns", "port": 5353, "protocol": "UDP"}]


def test_nobody_leading_is_an_empty_slice() -> None:
    body, problems = leader_slice(leader_service(LABELS, service()), None, LABELS)
    assert (body["endpoints"], body["ports"], problems) == ([], [], [])


def test_a_leader_without_an_address_of_the_family_is_no_endpoint() -> None:
    svc = leader_service(LABELS, service())
    assert leader_slice(svc, member(pod(ips=[])), LABELS)[0]["endpoints"] == []
    v6 = leader_service(LABELS, service(ipFamilies=["IPv6"]))
    assert leader_slice(v6, member(pod()), LABELS)[0]["endpoints"] == []
    dual = member(pod(ips=["10.1.0.5", "fd00::5"]))
    body = leader_slice(v6, dual, LABELS)[0]
    assert (body["addressType"], body["endpoints"][0]["addresses"]) == ("IPv6", ["fd00::5"])


@pytest.mark.parametrize(("ready", "deleting", "conditions"), [
    (False, False, {"ready": False, "serving": False, "terminating": False}),
    (True, True, {"ready": False, "serving": True, "terminating": True}),
    (False, True, {"ready": False, "serving": False, "terminating": True}),
])
def test_conditions_follow_the_pod_as_the_endpointslice_controller_sets_them(
        ready: bool, deleting: bool, conditions: dict[str, bool]) -> None:
    body, _ = leader_slice(leader_service(LABELS, service()),
                           member(pod(ready=ready, deleting=deleting)), LABELS)
    assert body["endpoints"][0]["conditions"] == conditions


def test_a_leader_being_deleted_keeps_its_endpoint_as_last_written() -> None:
    svc = leader_service(LABELS, service())
    before, _ = leader_slice(svc, member(pod()), LABELS)
    after, _ = leader_slice(svc, member(pod(ready=False, deleting=True)), LABELS, before)
    assert after == before  # no write: kube-proxy routes to a lone terminating one anyway
    moved, _ = leader_slice(svc, member(pod(ips=["10.1.0.9"], deleting=True)), LABELS, before)
    assert moved["endpoints"][0]["addresses"] == ["10.1.0.9"]  # a new address is news
    assert moved["endpoints"][0]["conditions"]["terminating"] is True
    other, _ = leader_slice(svc, member(pod("web-1", deleting=True)), LABELS, before)
    assert other["endpoints"][0]["conditions"]["terminating"] is True  # not the one written


def test_a_named_target_port_the_leader_lacks_is_left_out_and_reported() -> None:
    svc = leader_service(LABELS, service([
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "grpc", "port": 81, "targetPort": "grpc"},
        {"name": "wrong-protocol", "port": 82, "targetPort": "http", "protocol": "UDP"}]))
    body, problems = leader_slice(svc, member(pod()), LABELS)
    assert [p["name"] for p in body["ports"]] == ["http"]
    assert [(p.reason, p.pod) for p in problems] == [("UnresolvedTargetPort", "web-0")] * 2
    assert "'grpc'" in problems[0].message


def test_a_native_sidecars_port_is_a_target_and_an_init_containers_is_not() -> None:
    body = pod()
    body["spec"]["initContainers"] = [
        {"name": "leadership", "restartPolicy": "Always",
         "ports": [{"name": "gate", "containerPort": 8081}]},
        {"name": "setup", "ports": [{"name": "setup", "containerPort": 9}]}]
    svc = leader_service(LABELS, service([{"name": "http", "port": 80, "targetPort": "gate"},
                                          {"name": "x", "port": 9, "targetPort": "setup"}]))
    slice_body, problems = leader_slice(svc, member(body), LABELS)
    assert slice_body["ports"] == [{"name": "http", "port": 8081, "protocol": "TCP"}]
    assert [p.reason for p in problems] == ["UnresolvedTargetPort"]


def test_hostile_pods_keep_only_valid_addresses_and_at_most_max_ports() -> None:
    hostile = pod(ips=["not-an-ip", "10.1.0.7", "10.1.0.8"], ports=[
        {"name": "x", "containerPort": True}, {"name": "y", "containerPort": 70000},
        {"name": "z", "containerPort": 1, "protocol": "ICMP"}, "junk",
        *({"name": f"p{i}", "containerPort": 1000 + i} for i in range(MAX_PORTS * 10))])
    found = address(hostile)
    assert found.ips == ("10.1.0.7",)  # the first valid one of its family
    assert len(found.ports) == MAX_PORTS and found.ports[0].name == "p0"
    assert address({"metadata": None, "spec": "junk", "status": 7}).ips == ()


def test_objects_of_the_wrong_json_types_are_no_crash() -> None:
    odd = {"metadata": {"namespace": "apps", "name": "x", "labels": "junk"},
           "spec": {"ports": {"a": 1}, "ipFamilies": "IPv6", "selector": None}}
    assert leader_service(LABELS, odd).ports == ()
    found = address({"metadata": {}, "spec": {"containers": {"a": 1}, "initContainers": 3},
                     "status": {"podIPs": "10.0.0.1", "conditions": {"Ready": True}}})
    assert (found.ips, found.ports, found.ready) == ((), (), False)


def test_hostile_services_keep_only_valid_ports() -> None:
    svc = leader_service(LABELS, service([
        {"name": "a", "port": True}, {"name": "b", "port": 80, "targetPort": "x" * 16},
        {"name": "c", "port": 80, "targetPort": 0}, {"name": "d", "port": 80, "protocol": "X"},
        "junk", {"name": "ok", "port": 80}]))
    assert [(p.name, p.target) for p in svc.ports] == [("ok", 80)]  # targetPort defaults


def test_the_cache_follows_services_in_and_out_of_the_route() -> None:
    services = Services(LABELS)
    change = services.service_event("ADDED", service())
    assert (change.touched, change.retired) == ([("apps", "web")], [])
    assert [s.name for s in services.of(("apps", "web"))] == ["web-leader"]
    moved = service()
    moved["metadata"]["labels"][LABELS.election] = "db"
    change = services.service_event("MODIFIED", moved)
    assert change.touched == [("apps", "web"), ("apps", "db")]
    assert services.of(("apps", "web")) == [] and len(services.of(("apps", "db"))) == 1
    change = services.service_event("DELETED", moved)  # its label removed, say
    assert change.touched == [("apps", "db")]
    assert [s.name for s in change.retired] == ["web-leader"]
    assert len(services) == 0 and services.elections() == []


def test_a_bad_election_label_on_a_service_is_reported_and_retires_it() -> None:
    services = Services(LABELS)
    services.service_event("ADDED", service())
    bad = service()
    bad["metadata"]["labels"][LABELS.election] = "Not A Lease!"
    change = services.service_event("MODIFIED", bad)
    assert [b.raw_election for b in change.bad] == ["Not A Lease!"]
    assert [s.name for s in change.retired] == ["web-leader"] and len(services) == 0


def test_a_listing_retires_the_services_no_longer_listed() -> None:
    services = Services(LABELS)
    services.listed("apps", [service()])
    change = services.listed("apps", [])
    assert [s.name for s in change.retired] == ["web-leader"]
    assert services.listed("other", []).retired == []
