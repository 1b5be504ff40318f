"""The Markdown privacy report shows nested evidence as bullets, never as Python reprs."""

from __future__ import annotations

from privacy.report import render_markdown


def test_nested_evidence_renders_as_bullets() -> None:
    report = {
        "tenant_id": "alpha",
        "generated_at": "2026-12-04T00:00:00Z",
        "passed": True,
        "controls": [
            {
                "title": "Keys are rotated",
                "passed": True,
                "evidence": {
                    "keys": [{"kind": "dek", "version": 2}, {"kind": "kek", "version": 1}],
                    "ages": {"dek": {"days": 3}, "kek": 40},
                    "tables": [],
                    "checked": 4,
                },
            }
        ],
    }
    text = render_markdown(report)
    assert "{" not in text
    assert "[" not in text
    assert "  - kind: dek, version: 2" in text
    assert "- ages:\n  - dek:\n    - days: 3\n  - kek: 40" in text
    assert "- tables: (none)" in text
    assert "- checked: 4" in text
