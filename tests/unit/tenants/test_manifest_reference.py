"""The manifest field reference in docs/ is the one the models write."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenants import reference
from tenants.reference import manifest_reference

DOC = Path(__file__).resolve().parents[3] / "docs" / "manifest.md"


def test_reference_matches_models() -> None:
    """Rewrite it with `python -m tenants.reference > docs/manifest.md` after a model change."""
    assert DOC.read_text(encoding="utf-8") == manifest_reference()


def test_reference_lists_nested_fields() -> None:
    text = manifest_reference()

    assert "## `services[].attributes[].values[]`" in text
    assert "| `timezone` | text | yes |  | an IANA time zone" in text
    assert "| `date` | date (`YYYY-MM-DD`) | yes |" in text


def test_note_for_missing_field_fails(monkeypatch) -> None:
    monkeypatch.setitem(reference._NOTES, "services[].colour", "a colour")

    with pytest.raises(ValueError, match=r"services\[\]\.colour"):
        manifest_reference()
