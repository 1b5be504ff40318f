"""`--also` names the other tenants of a regional alert: a tenant of another region and a
mistyped tenant id get errors that point to the fix."""

from __future__ import annotations

import pytest
from alerts_support import add_tenant, cap_alert, manager

from hub.alerts import workflow
from hub.core.errors import InvalidInput, NotFound


def test_also_other_region_explained(engine) -> None:
    origin = add_tenant(engine)
    elsewhere = add_tenant(engine, region="bay-area")
    with pytest.raises(InvalidInput) as raised:
        workflow.compose(engine, manager(origin), cap_alert("REG-OTHER"), tenants=[elsewhere])
    message = raised.value.message
    assert f"tenant {elsewhere} is in region bay-area, not in region northeast" in message
    assert "a regional alert covers the tenants of one region" in message


def test_also_typo_suggests_tenant(engine) -> None:
    origin = add_tenant(engine)
    guest = add_tenant(engine)
    typo = guest[:-1]
    with pytest.raises(NotFound) as raised:
        workflow.compose(engine, manager(origin), cap_alert("REG-TYPO"), tenants=[typo])
    assert raised.value.message.startswith(f"tenant {typo} not found; did you mean ")
    with pytest.raises(NotFound, match="check the id with `hub tenants list`"):
        workflow.compose(engine, manager(origin), cap_alert("REG-TYPO"), tenants=["zzzzzzzzzz"])
