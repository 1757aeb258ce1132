"""Claims (iceberg/claims.py) on a real PostgreSQL: daemons sharing a bucket divide the listed
runs, a restarted daemon takes its own claims back, a lapsed lease frees a run for the others."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from quantbot_bus.iceberg.claims import Claims, claim_owner


def _claims(scaleout: Any, owner: str, lease_s: float = 300) -> Claims:
    return Claims(scaleout.catalog().engine, owner, lease_s)


def test_two_daemons_claim_disjoint_runs_in_their_own_order(scaleout: Any) -> None:
    a, b = _claims(scaleout, "host-a:/state"), _claims(scaleout, "host-b:/state")
    keys = [f"runs/backtest/r{i:03d}/metadata.json" for i in range(10)]
    got_a = a.claim(keys, 4)
    assert got_a == set(keys[:4])  # the first four of its order
    got_b = b.claim(list(reversed(keys)), 8)
    assert got_b == set(keys[4:])  # what a holds is skipped; only six were left
    assert a.claim(keys, 10) == set(keys[:4])  # its own again (renewed), none of b's
    restarted = _claims(scaleout, "host-b:/state")  # same host and state dir: b after a crash
    assert restarted.claim(keys, 10) == set(keys[4:])


def test_a_lapsed_lease_frees_the_run_and_old_claims_are_deleted(scaleout: Any) -> None:
    a = _claims(scaleout, "host-a:/state", lease_s=0.5)
    b = _claims(scaleout, "host-b:/state")
    assert a.claim(["k1", "k2"], 10) == {"k1", "k2"}
    assert b.claim(["k1", "k2"], 10) == set()
    time.sleep(1.0)  # the lease runs out (PostgreSQL's clock decides)
    assert b.claim(["k1"], 10) == {"k1"}
    assert a.expire(keep_expired_s=0) == 1  # k2: expired and unclaimed; k1 is b's now
    assert a.claim(["k1", "k2"], 10) == {"k2"}


def test_the_owner_is_the_host_and_the_state_dir(tmp_path: Path) -> None:
    import socket

    assert claim_owner(tmp_path / "state") == f"{socket.gethostname()}:{tmp_path / 'state'}"
