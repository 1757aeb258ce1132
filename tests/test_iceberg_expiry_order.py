"""Which snapshots expiry takes (iceberg/maintenance.py ``expirable``): always the oldest in
commit order, whatever the committing daemons' clocks said, so an append is never kept while the
later delete that undid it is expired (the key would then count as registered again).

The snapshots here are plain records with the three fields the choice reads: a skewed client
clock cannot be produced by real commits on one machine."""

from __future__ import annotations

from dataclasses import dataclass

from quantbot_bus.iceberg.maintenance import expirable

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Snap:
    snapshot_id: int
    sequence_number: int
    timestamp_ms: int


def test_a_later_commit_stamped_early_by_a_slow_clock_is_not_expired_before_what_it_undid() -> None:
    now = 100 * HOUR_MS
    append = Snap(1, sequence_number=1, timestamp_ms=now - 3 * HOUR_MS)
    # the delete, committed after the append by a daemon whose clock is 10 hours slow
    delete = Snap(2, sequence_number=2, timestamp_ms=now - 10 * HOUR_MS)
    newest = [Snap(10 + i, sequence_number=3 + i, timestamp_ms=now - 2 * HOUR_MS) for i in range(3)]
    snaps = [append, delete, *newest]
    cutoff = now - 4 * HOUR_MS  # the append is younger than the age limit, the delete "older"
    assert expirable(snaps, keep=3, cutoff_ms=cutoff, protected=set()) == []
    # both old enough: both go, oldest first
    assert expirable(snaps, keep=3, cutoff_ms=now - 2.5 * HOUR_MS, protected=set()) == [1, 2]


def test_the_newest_by_commit_order_and_branch_heads_are_kept() -> None:
    now = 100 * HOUR_MS
    # sequence order 1..6; the newest two (5, 6) carry old timestamps (a fast clock elsewhere)
    stamps = {1: 50, 2: 51, 3: 52, 4: 53, 5: 10, 6: 11}
    snaps = [Snap(n, n, stamps[n] * HOUR_MS) for n in stamps]
    assert expirable(snaps, keep=2, cutoff_ms=now, protected=set()) == [1, 2, 3, 4]
    assert expirable(snaps, keep=2, cutoff_ms=now, protected={3}) == [1, 2]  # a tag on 3
    assert expirable(snaps, keep=10, cutoff_ms=now, protected=set()) == []
    assert expirable(snaps, keep=0, cutoff_ms=now, protected={6}) == [1, 2, 3, 4, 5]
