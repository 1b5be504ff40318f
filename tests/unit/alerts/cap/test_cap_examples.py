"""Every real CAP file in the shared examples: valid ones round-trip and match the OASIS XSD,
invalid ones are rejected with a message naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from hub.alerts.cap.parser import parse
from hub.alerts.cap.validate import check_document
from hub.alerts.cap.writer import write

# Files the schema or the CAP 1.2 namespace rejects, with a fragment each message must contain.
INVALID = {
    "google-cap-library/invalid.cap": "alert/scope: required element <scope> is missing",
    "capparselib/sweden.cap": "<senderName> is out of order",
    "google-cap-library/weather.cap": "cap:1.1",
    "oasiscap-rs/nws-5c2cf27b1f56885d61654dc47fa411d5.xml": "cap:1.1",
}


def _example_files(shared: Path) -> list[Path]:
    return sorted(p for p in (shared / "cap" / "examples").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def cap_schema(shared_data: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(shared_data / "cap" / "xsd" / "CAP-v1.2.xsd")))


def test_examples_all_classified(shared_data: Path) -> None:
    files = _example_files(shared_data)
    assert len(files) >= 25
    names = {str(p.relative_to(shared_data / "cap" / "examples")) for p in files}
    assert set(INVALID) <= names


def test_valid_examples_round_trip(shared_data: Path, cap_schema: etree.XMLSchema) -> None:
    root = shared_data / "cap" / "examples"
    for path in _example_files(shared_data):
        name = str(path.relative_to(root))
        if name in INVALID:
            continue
        alert, problems = check_document(path.read_bytes())
        assert problems == [], name
        assert alert is not None, name

        written = write(alert)
        assert cap_schema.validate(etree.fromstring(written)), (name, cap_schema.error_log)
        again = parse(written)
        assert again.problems == [], name
        assert again.alert == alert, name


def test_invalid_examples_rejected(shared_data: Path) -> None:
    root = shared_data / "cap" / "examples"
    for name, fragment in INVALID.items():
        _alert, problems = check_document((root / name).read_bytes())
        assert problems, name
        messages = " | ".join(str(p) for p in problems)
        assert fragment in messages, (name, messages)
