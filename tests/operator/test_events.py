"""The operator's Events on FakeKube and a manual clock: aggregation, expiry of the
aggregation, re-creation of an Event the API server dropped, a bounded cache and bounded
messages."""

from __future__ import annotations

from leadership.testing import ManualClock
from leadership_operator import text
from leadership_operator.events import TTL, Events
from leadership_operator.testing import FakeKube

POD = {"apiVersion": "v1", "kind": "Pod", "namespace": "apps", "name": "web-0", "uid": "u0"}


async def test_a_repeat_is_aggregated_into_the_first_event(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    events = Events(kube, "operator-0", clock)
    await events.post(POD, "Warning", "LeaseExpired", "it expired")
    await clock.advance(10)
    await events.post(POD, "Warning", "LeaseExpired", "it expired")
    assert [w[0] for w in kube.writes] == ["event", "patch-event"]
    (event,) = kube.events.values()
    assert event["count"] == 2
    assert event["firstTimestamp"] != event["lastTimestamp"]


async def test_after_its_ttl_a_repeat_is_a_new_event(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    events = Events(kube, "operator-0", clock)
    await events.post(POD, "Warning", "LeaseExpired", "it expired")
    await clock.advance(TTL)
    await events.post(POD, "Warning", "LeaseExpired", "it expired")
    assert [w[0] for w in kube.writes] == ["event", "event"]


async def test_an_event_the_api_server_dropped_is_posted_anew(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    events = Events(kube, "operator-0", clock)
    await events.post(POD, "Warning", "LeaseExpired", "it expired")
    kube.events.clear()  # dropped early (a shorter --event-ttl)
    await events.post(POD, "Warning", "LeaseExpired", "it expired")
    assert [w[0] for w in kube.writes] == ["event", "event"]
    (event,) = kube.events.values()
    assert event["count"] == 1


async def test_the_cache_is_bounded_least_recently_used_first(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    events = Events(kube, "operator-0", clock, max_keys=3)
    for i in range(5):
        await events.post(POD, "Warning", "HolderNotFound", f"holder h{i}")
    assert len(events) == 3
    await events.post(POD, "Warning", "HolderNotFound", "holder h0")  # forgotten: new
    await events.post(POD, "Warning", "HolderNotFound", "holder h4")  # kept: aggregated
    assert [w[0] for w in kube.writes][-2:] == ["event", "patch-event"]


async def test_a_message_is_bounded(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    events = Events(kube, "operator-0", clock)
    await events.post(POD, "Warning", "MalformedLease", "x" * 100_000)
    (event,) = kube.events.values()
    assert len(event["message"]) == text.EVENT
    assert event["message"].endswith("more characters)")


async def test_failing_to_post_is_a_log_line_not_an_error(clock: ManualClock) -> None:
    import leadership

    kube = FakeKube(clock)
    kube.fail_next("create_event", leadership.FatalStoreError("forbidden", status=403))
    events = Events(kube, "operator-0", clock)
    await events.post(POD, "Warning", "LeaseExpired", "it expired")  # does not raise
    assert kube.events == {}
