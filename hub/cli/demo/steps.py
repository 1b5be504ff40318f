"""The ordered steps of `hub demo`.

A step is a name, a function that takes the `DemoContext` and returns its section of the summary
(a JSON-serializable dict, or None for no section), and an optional renderer that prints that
section for people. The first five steps set the demo up and run the pipeline; features append
their own step to `STEPS` with a small edit, for example:

    from hub.cli.demo_alerts import alerts_step
    STEPS.append(alerts_step)

A step that raises stops the demo with a one-line error naming the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.cli.demo import pipeline
from hub.cli.demo.context import DemoContext


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[DemoContext], dict[str, Any] | None]
    render: Callable[[dict[str, Any]], None] | None = None
    # Shown on stderr while the step runs.
    title: str = ""


STEPS: list[Step] = [
    Step(
        "tenants",
        pipeline.onboard_tenants,
        render=pipeline.render_setup,
        title="onboarding the example tenants",
    ),
    Step(
        "agencies",
        pipeline.start_agency_receivers,
        render=pipeline.render_setup,
        title="starting agency webhook receivers",
    ),
    Step(
        "server",
        pipeline.start_server,
        render=pipeline.render_setup,
        title="starting the API and a worker",
    ),
    Step(
        "replay",
        pipeline.replay_requests,
        render=pipeline.render_replay,
        title="filing requests through Open311",
    ),
    Step(
        "pipeline",
        pipeline.wait_and_summarize,
        render=pipeline.render_summary,
        title="waiting for routing to agencies",
    ),
]

from hub.cli import demo_alerts  # noqa: E402 - appended with the step it defines

STEPS.append(
    Step(
        "alerts",
        demo_alerts.alerts_step,
        render=demo_alerts.render_alerts,
        title="sending a regional alert, an Update and a Cancel",
    )
)

from hub.cli import demo_overflow  # noqa: E402 - appended with the step it defines

STEPS.append(
    Step(
        "overflow",
        demo_overflow.overflow_step,
        render=demo_overflow.render_overflow,
        title="replaying a surge on Boston's contact center",
    )
)

from hub.cli import demo_privacy  # noqa: E402 - appended with the step it defines

STEPS.append(
    Step(
        "privacy",
        demo_privacy.privacy_step,
        render=demo_privacy.render_privacy,
        title="checking encryption, exporting open data, verifying the audit log",
    )
)
