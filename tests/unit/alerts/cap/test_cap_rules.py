"""CAP rules beyond the schema and hostile input, each on a small hand-written message."""

from __future__ import annotations

from hub.alerts.cap import geometry
from hub.alerts.cap.parser import MAX_CAP_BYTES, parse
from hub.alerts.cap.validate import check_document

NS = "urn:oasis:names:tc:emergency:cap:1.2"


def message(
    *,
    msg_type: str = "Alert",
    sent: str = "2026-12-04T10:00:00-05:00",
    references: str = "",
    info: str | None = None,
    namespace: str = NS,
    prefix: str = "",
) -> str:
    p = f"{prefix}:" if prefix else ""
    declaration = f'xmlns:{prefix}="{namespace}"' if prefix else f'xmlns="{namespace}"'
    if info is None:
        info = f"""<{p}info><{p}language>en-US</{p}language><{p}category>Met</{p}category>
<{p}event>Hurricane</{p}event><{p}urgency>Immediate</{p}urgency>
<{p}severity>Extreme</{p}severity><{p}certainty>Observed</{p}certainty>
<{p}area><{p}areaDesc>Coast</{p}areaDesc>
<{p}polygon>40.0,-74.0 40.0,-73.0 41.0,-73.0 41.0,-74.0 40.0,-74.0</{p}polygon>
</{p}area></{p}info>"""
    refs = f"<{p}references>{references}</{p}references>" if references else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<{p}alert {declaration}><{p}identifier>T-1</{p}identifier><{p}sender>em@example.org</{p}sender>
<{p}sent>{sent}</{p}sent><{p}status>Actual</{p}status><{p}msgType>{msg_type}</{p}msgType>
<{p}scope>Public</{p}scope>{refs}{info}</{p}alert>"""


def with_polygon(points: str) -> str:
    info = f"""<info><category>Met</category><event>Flood</event><urgency>Immediate</urgency>
<severity>Severe</severity><certainty>Likely</certainty><area><areaDesc>A</areaDesc>
<polygon>{points}</polygon></area></info>"""
    return message(info=info)


def texts(problems: list) -> str:
    return " | ".join(str(p) for p in problems)


def test_well_formed_message_valid() -> None:
    alert, problems = check_document(message())
    assert problems == []
    assert alert is not None
    assert alert.infos[0].areas[0].polygons[0][0] == (40.0, -74.0)


def test_prefixed_namespace_accepted() -> None:
    _alert, problems = check_document(message(prefix="cap"))
    assert problems == []


def test_wrong_namespace_rejected() -> None:
    alert, problems = check_document(message(namespace="urn:example:not-cap"))
    assert alert is None
    assert "expected <alert> in namespace" in texts(problems)


def test_entity_expansion_rejected() -> None:
    payload = """<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&d;</identifier></alert>"""
    alert, problems = check_document(payload)
    assert alert is None
    assert "DOCTYPE" in texts(problems)


def test_external_entity_not_read() -> None:
    payload = """<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&x;</identifier></alert>"""
    alert, problems = check_document(payload)
    assert alert is None
    assert "root:" not in texts(problems)


def test_oversized_document_rejected() -> None:
    result = parse(b" " * (MAX_CAP_BYTES + 1))
    assert result.alert is None
    assert "over the limit" in texts(result.problems)


def test_open_polygon_rejected() -> None:
    _alert, problems = check_document(with_polygon("40,-74 40,-73 41,-73 41,-74"))
    assert "polygon is not closed" in texts(problems)
    assert "alert/info[1]/area[1]/polygon[1]" in texts(problems)


def test_short_polygon_rejected() -> None:
    _alert, problems = check_document(with_polygon("40,-74 40,-73 40,-74"))
    assert "at least 4 are required" in texts(problems)


def test_self_crossing_polygon_rejected() -> None:
    # A bow tie: edges 1 and 3 cross in the middle.
    _alert, problems = check_document(with_polygon("40,-74 41,-73 41,-74 40,-73 40,-74"))
    assert "polygon crosses itself" in texts(problems)


def test_antimeridian_polygon_accepted() -> None:
    # A box over Fiji from 179E to 179W; in plain longitudes its edges would cross.
    _alert, problems = check_document(with_polygon("-17,179 -17,-179 -16,-179 -16,179 -17,179"))
    assert problems == []


def test_antimeridian_point_inside() -> None:
    ring = [(-17.0, 179.0), (-17.0, -179.0), (-16.0, -179.0), (-16.0, 179.0), (-17.0, 179.0)]
    assert geometry.contains(ring, (-16.5, 179.5))
    assert geometry.contains(ring, (-16.5, -179.5))
    assert not geometry.contains(ring, (-16.5, 0.0))


def test_circle_radius_positive_when_sending() -> None:
    info = """<info><category>Met</category><event>Gas leak</event><urgency>Immediate</urgency>
<severity>Severe</severity><certainty>Observed</certainty><area><areaDesc>A</areaDesc>
<circle>40.7,-74.0 0</circle><circle>40.7,-74.0 -2</circle></area></info>"""
    _alert, received = check_document(message(info=info))
    _alert, sending = check_document(message(info=info), sending=True)
    assert "circle[2]: radius -2.0 km is not positive" in texts(received)
    assert "circle[1]" not in texts(received)
    assert "circle[1]: radius 0.0 km is not positive" in texts(sending)


def test_sent_without_offset_rejected() -> None:
    _alert, problems = check_document(message(sent="2026-12-04T10:00:00"))
    assert "alert/sent: invalid date-time" in texts(problems)
    assert "<sent> is missing" not in texts(problems)


def test_sent_with_z_rejected() -> None:
    _alert, problems = check_document(message(sent="2026-12-04T10:00:00Z"))
    assert "alert/sent: invalid date-time" in texts(problems)


def test_update_needs_references() -> None:
    _alert, problems = check_document(message(msg_type="Update"))
    assert "<references> is required for msgType Update" in texts(problems)


def test_malformed_reference_rejected() -> None:
    _alert, problems = check_document(message(msg_type="Update", references="only-an-id"))
    assert "invalid reference 'only-an-id'" in texts(problems)


def test_cancel_without_info_valid() -> None:
    refs = "em@example.org,T-0,2026-12-04T09:00:00-05:00"
    _alert, problems = check_document(message(msg_type="Cancel", references=refs, info=""))
    assert problems == []


def test_alert_without_info_rejected() -> None:
    _alert, problems = check_document(message(info=""))
    assert "an Alert needs at least one <info> block" in texts(problems)


def test_every_problem_collected() -> None:
    info = """<info><category>Weather</category><event>X</event><urgency>Soon</urgency>
<severity>Severe</severity><certainty>Observed</certainty></info>"""
    _alert, problems = check_document(message(sent="yesterday", info=info))
    paths = {p.path for p in problems}
    assert "alert/sent" in paths
    assert "alert/info[1]/category" in paths
    assert "alert/info[1]/urgency" in paths
