"""What residents read in a Cancel: the cancelled alert's headline under a cancellation
phrase in their language, and the reason the Cancel gives."""

from __future__ import annotations

from hub.alerts import models as m
from hub.alerts.cap.model import Alert, Info
from hub.alerts.fanout import render_text

ORIGINAL = Alert(
    identifier="HU-1",
    msg_type="Alert",
    infos=[
        Info(
            language="en-US",
            event="Hurricane",
            headline="Evacuation order: Zone 1",
            description="Leave Zone 1 now.",
            instruction="Go to the nearest shelter.",
        ),
        Info(
            language="es-US",
            event="Huracán",
            headline="Aviso de huracán",
            description="Salga de la Zona 1.",
            instruction="Vaya al refugio más cercano.",
        ),
    ],
)
NOTE = "Evacuation order for Zone 1 lifted; the storm surge forecast was lowered."


def cancel_row() -> m.Alert:
    return m.Alert(id="C1", identifier="HU-1-C", msg_type="Cancel", status="Actual")


def test_cancel_note_reaches_residents() -> None:
    cancel = Alert(identifier="HU-1-C", msg_type="Cancel", note=NOTE)

    english = render_text(cancel_row(), cancel, ORIGINAL, "en-US")
    spanish = render_text(cancel_row(), cancel, ORIGINAL, "es-US")

    assert english.headline == "Cancelled: Evacuation order: Zone 1"
    assert english.description == NOTE
    assert english.instruction == ""
    assert spanish.headline == "Alerta cancelada: Aviso de huracán"
    # CAP gives `note` in one language for the whole message.
    assert spanish.description == NOTE


def test_cancel_reason_in_resident_language() -> None:
    cancel = Alert(
        identifier="HU-1-C",
        msg_type="Cancel",
        note=NOTE,
        infos=[
            Info(language="en-US", event="Hurricane", description="The order is lifted."),
            Info(
                language="es-US",
                event="Huracán",
                description="La orden se levantó.",
                instruction="Puede volver a casa.",
            ),
        ],
    )

    english = render_text(cancel_row(), cancel, ORIGINAL, "en-US")
    spanish = render_text(cancel_row(), cancel, ORIGINAL, "es-US")

    assert english.description == "The order is lifted."
    assert spanish.description == "La orden se levantó."
    assert spanish.instruction == "Puede volver a casa."
    assert spanish.headline == "Alerta cancelada: Huracán"


def test_cancel_without_reason_has_none() -> None:
    cancel = Alert(identifier="HU-1-C", msg_type="Cancel")
    text = render_text(cancel_row(), cancel, ORIGINAL, "en-US")
    assert text.description == ""
    assert text.instruction == ""


def test_cancel_sms_carries_reason() -> None:
    cancel = Alert(identifier="HU-1-C", msg_type="Cancel", note=NOTE)
    text = render_text(cancel_row(), cancel, ORIGINAL, "en-US")
    assert text.short_text(320) == f"Cancelled: Evacuation order: Zone 1 {NOTE}"


def test_alert_sms_leaves_out_description() -> None:
    row = m.Alert(id="A1", identifier="HU-1", msg_type="Alert", status="Actual")
    text = render_text(row, ORIGINAL, None, "en-US")
    assert text.short_text(320) == "Evacuation order: Zone 1 Go to the nearest shelter."
