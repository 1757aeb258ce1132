"""``make test`` runs ``--dist loadgroup`` so that a module marked ``xdist_group`` runs on one
worker, which builds the module's costly fixture once. pytest 9.2 silently broke that (the
grouping never took effect: every worker built every such fixture); this fails when the grouping
is asked for and does not happen."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.xdist_group("test_suite_grouping")


def test_a_grouped_test_is_scheduled_as_part_of_its_group(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):  # set on xdist's workers
        pytest.skip("grouping is asked for by --dist loadgroup (make test) only")
    assert request.node.nodeid.endswith("@test_suite_grouping"), (
        f"{request.node.nodeid}: xdist did not tag the test with its group, so the groups are "
        "spread over the workers (pytest >= 9.2 with pytest-xdist 3.8: pin pytest < 9.2)"
    )
