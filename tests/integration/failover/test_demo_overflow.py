from hub.cli.demo.context import DemoContext, DemoOptions
from hub.cli.demo_overflow import overflow_step
from hub.core.db import get_engine, unit_of_work
from hub.core.settings import Settings
from hub.core.tenancy import SystemContext
from tenants.manifest import example_paths, load_manifest
from tenants.onboarding import onboard


def test_demo_surge_switches_on_and_off(sqlite_url):
    engine = get_engine(sqlite_url)
    with unit_of_work(SystemContext("test onboarding"), engine=engine) as session:
        for path in example_paths():
            onboard(session, load_manifest(path), actor="test")
    ctx = DemoContext(
        settings=Settings(database_url=sqlite_url), engine=engine, options=DemoOptions()
    )

    section = overflow_step(ctx)

    assert section is not None
    assert [s["overflow_on"] for s in section["switches"]][:2] == [True, False]
    partners = {k: v for k, v in section["routed"].items() if k != "home"}
    assert sum(partners.values()) > 0
    assert section["routed"]["home"] > 0
    assert sum(section["routed"].values()) == section["contacts"]
