"""Each rule of the chaos checker catches what it names, and passes a clean history."""

from __future__ import annotations

from chaos.checker import (
    Term,
    fencing,
    label_periods,
    leaderless,
    overlaps,
    stale_leader_labels,
    two_leader_labels,
)


def test_overlapping_terms_are_caught_beyond_the_allowance_only() -> None:
    clean = [Term("a", "a", 0, 10, 1), Term("b", "b", 10, 20, 2), Term("a", "a", 21, 30, 3)]
    assert overlaps(clean, 0) == []
    [v] = overlaps([Term("a", "a", 0, 10.5), Term("b", "b", 10, 20)], 0.1)
    assert v.rule == "overlap" and "500 ms" in v.detail
    assert overlaps([Term("a", "a", 0, 10.05), Term("b", "b", 10, 20)], 0.1) == []
    assert overlaps([Term("a", "a", 0, 10), Term("a", "a", 5, 20)], 0) == []  # one candidate


def test_tokens_must_grow_when_the_holder_changes() -> None:
    assert fencing([Term("a", "a", 0, 1, 1), Term("a", "a", 2, 3, 1),
                    Term("b", "b", 4, 5, 2)]) == []
    assert [v.rule for v in fencing([Term("a", "a", 0, 1, 2), Term("b", "b", 2, 3, 2)])] == [
        "fencing"]
    assert [v.rule for v in fencing([Term("a", "a", 0, 1, 3), Term("b", "b", 2, 3, 2)])] == [
        "fencing"]
    assert fencing([Term("a", "a", 0, 1, 1), Term("g", "g", 2, 3, None),
                    Term("b", "b", 4, 5, 3)]) == []  # a peer that reports no token


def test_two_leader_labels_at_any_point_are_caught() -> None:
    handover = [(1.0, "a", "leader"), (2.0, "a", "follower"), (2.1, "b", "leader")]
    assert two_leader_labels(handover) == []
    wrong = [(1.0, "a", "leader"), (2.0, "b", "leader"), (2.1, "a", "follower")]
    [v] = two_leader_labels(wrong)
    assert v.at == 2.0 and v.detail == "a, b"


def test_a_leader_label_may_outlive_the_lease_by_the_grace_only() -> None:
    terms = [Term("a", "a", 0, 10, lease_end=12)]  # belief ends at 10; the Lease at 12
    ok = [(1.0, "a", "leader"), (12.9, "a", "stale")]
    assert stale_leader_labels(ok, terms, label_grace=1, end=20) == []
    late = [(1.0, "a", "leader"), (13.5, "a", "stale")]
    [v] = stale_leader_labels(late, terms, label_grace=1, end=20)
    assert v.rule == "stale-leader-label" and v.at == 13 and v.who == ("a",)
    never_led = [(1.0, "x", "leader"), (5.0, "x", "follower")]
    assert len(stale_leader_labels(never_led, terms, 1, 20)) == 1
    assert label_periods([(1.0, "a", "leader")], 20) == [("a", 1.0, 20)]
    # A gap in the middle of one label period is caught too, not only at its end.
    renewed = [Term("a", "a", 0, 0, lease_end=4), Term("a", "a", 7, 7, lease_end=11)]
    [v] = stale_leader_labels([(1.0, "a", "leader"), (10.0, "a", "follower")], renewed, 1,
                              20)
    assert v.at == 5 and "(3.00s)" in v.detail
    [e] = stale_leader_labels([(1.0, "a", "leader"), (10.0, "a", "follower")], renewed, 1,
                              20, excused=[(4.5, 6)])
    assert e.rule == "late-label-excused"


def test_gaps_without_a_leader_after_the_faults_are_caught() -> None:
    terms = [Term("a", "a", 0, 50), Term("b", "b", 54, 100)]
    assert leaderless(terms, faults_end=40, end=100, limit=5) == []
    [v] = leaderless(terms, faults_end=40, end=100, limit=3)
    assert v.rule == "no-leader" and v.at == 50
    [v] = leaderless([Term("a", "a", 0, 50)], faults_end=40, end=100, limit=5)
    assert "at the end" in v.detail
