"""Fencing: the protected resource, not the leader, refuses a stale leader's writes.

    python -m examples.fencing

A lease tells a process that it *was* leader a moment ago; a process paused right after
checking can act after a new leader has started. So every write to the protected resource
carries `candidate.fence`, ``(lease_uid, token)``, and the resource accepts it only in one
atomic statement that compares it with the fence of the last accepted write:

- the same Lease (uid) and a token at least as high: accepted;
- a lower token: refused (an older leader);
- another Lease uid: refused, on purpose. A deleted and re-created Lease may start its count
  again from a number an old leader already holds, so no comparison across two Leases is
  safe. Writes stay refused until someone who knows the old leader is gone resets the fence
  (`reset_fence`). Grant no one `delete` on the Lease and this never happens.

Here the resource is a SQLite table (any database with an atomic conditional UPDATE works
the same way); running the module shows a stale leader being refused, on an in-memory store.
"""

from __future__ import annotations

import asyncio
import sqlite3

import leadership
from leadership.testing import ManualClock


class FencedOff(Exception):
    """The resource refused the write: a newer leader (or another Lease) wrote since."""


def create_table(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT,"
               " lease_uid TEXT NOT NULL DEFAULT '', token INTEGER NOT NULL DEFAULT -1)")
    db.commit()


def write_fenced(db: sqlite3.Connection, fence: leadership.Fence | None, key: str,
                 value: str) -> None:
    """Write `value` under `key` only if `fence` is still the newest; raise `FencedOff`."""
    if fence is None:
        raise FencedOff("not leading")
    db.execute("INSERT OR IGNORE INTO config (key) VALUES (?)", (key,))
    cursor = db.execute(
        "UPDATE config SET value = ?, lease_uid = ?, token = ?"
        " WHERE key = ? AND (lease_uid = '' OR (lease_uid = ? AND token <= ?))",
        (value, fence.lease_uid, fence.token, key, fence.lease_uid, fence.token))
    db.commit()
    if cursor.rowcount != 1:  # the number of rows changed, not a status string
        raise FencedOff(f"refused {key}={value!r} with {fence}: a newer leader wrote it")


def reset_fence(db: sqlite3.Connection, key: str) -> None:
    """After a Lease was deleted: accept the next writer, whatever its Lease. Only when the
    old leader is known to be gone."""
    db.execute("UPDATE config SET lease_uid = '', token = -1 WHERE key = ?", (key,))
    db.commit()


async def demo() -> list[str]:
    clock = ManualClock()
    store = leadership.MemoryLeaseStore(clock=clock)
    db = sqlite3.connect(":memory:")
    create_table(db)
    story = []
    a = leadership.Candidate(store, "db-writer", "a", ttl=15, clock=clock)
    b = leadership.Candidate(store, "db-writer", "b", ttl=15, clock=clock)
    a.run_for_election()
    await clock.advance(0)
    stale = a.fence  # a checks that it leads... and is then paused (GC, SIGSTOP, swap)
    b.run_for_election()
    await a.stop()  # (here: a gives up; a pause past the TTL ends the same way)
    await clock.advance(0)
    write_fenced(db, b.fence, "mode", "from b")
    story.append(f"b wrote with {b.fence}")
    try:
        write_fenced(db, stale, "mode", "from a")  # a wakes up and writes
    except FencedOff as exc:
        story.append(f"a was fenced off: {exc}")
    await b.stop()
    return story


if __name__ == "__main__":
    for line in asyncio.run(demo()):
        print(line)
