"""Timing configuration and its safety rule, validated up front.

The rule (`ValueError` naming the argument otherwise)::

    0 < 1.2 * renew_interval < renew_deadline < ttl

- The leader renews every `renew_interval` seconds and believes it leads only while its last
  successful renewal was *sent* less than `renew_deadline` ago.
- A follower takes over only after it has watched the record stay unchanged for `ttl`
  (the Lease's ``leaseDurationSeconds``), counted from when it *saw* the change, which is
  never earlier than the write was sent.

So the leader's belief ends at least ``ttl - renew_deadline`` before any follower may act, on
the two processes' own monotonic clocks. That margin absorbs clock *rate* skew of up to
``(ttl - renew_deadline) / ttl`` (a third with the defaults); clock *offset* does not matter
because no remote timestamp is ever compared with the local clock.

Each renewal attempt is bounded by `attempt_timeout`, a third of the window between the first
attempt and the deadline, so a request that hangs (a half-open connection) costs one attempt,
not the term: at least two more attempts fit before the deadline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .validation import validate_seconds, validate_ttl

#: client-go's jitter factor: the renew deadline must exceed 1.2 renew intervals.
JITTER_FACTOR = 1.2
#: The default renew deadline as a fraction of the ttl: this library's, and the ratio of
#: client-go's defaults (RenewDeadline 10 s of LeaseDuration 15 s). A holder of this library
#: stops believing it leads this long after it sent its last renewal; the operator drains
#: its routes then (`leadership.toolkit`).
RENEW_DEADLINE_RATIO = 2 / 3


def backoff(rng: random.Random, attempt: int, low: float, high: float) -> float:
    """Jittered exponential backoff: a random delay in [low, min(high, low * 2**attempt)]."""
    ceiling = min(high, low * (2 ** min(attempt, 16)))
    return float(low + rng.random() * max(0.0, ceiling - low))


@dataclass(frozen=True)
class Timing:
    """Validated timing of one candidate. Build it with `Timing.from_args`."""

    ttl: int
    renew_interval: float
    renew_deadline: float
    #: after resigning, how long a free lease is left to others before campaigning for it.
    resign_grace: float
    #: first and largest delay between retries of a failed request (jittered).
    retry_min: float
    retry_max: float

    @property
    def attempt_timeout(self) -> float:
        """How long one renewal attempt may take before it is abandoned and retried."""
        return (self.renew_deadline - self.renew_interval) / 3

    @classmethod
    def from_args(
        cls,
        ttl: object,
        renew_interval: object = None,
        renew_deadline: object = None,
        resign_grace: object = None,
    ) -> Timing:
        whole_ttl = validate_ttl(ttl)
        interval = (validate_seconds(renew_interval, "renew_interval")
                    if renew_interval is not None else whole_ttl / 3)
        deadline = (validate_seconds(renew_deadline, "renew_deadline")
                    if renew_deadline is not None else whole_ttl * RENEW_DEADLINE_RATIO)
        grace = (validate_seconds(resign_grace, "resign_grace", allow_zero=True)
                 if resign_grace is not None else interval)
        if not deadline < whole_ttl:
            raise ValueError(
                f"renew_deadline ({deadline:g}s) must be less than ttl ({whole_ttl}s): the leader "
                "must step down before any follower may take over")
        if not JITTER_FACTOR * interval < deadline:
            raise ValueError(
                f"renew_interval ({interval:g}s) times {JITTER_FACTOR} must be less than "
                f"renew_deadline ({deadline:g}s), so that a renewal can be retried in time")
        return cls(whole_ttl, interval, deadline, grace,
                   retry_min=min(0.2, interval / 4), retry_max=max(interval / 2, 0.05))
