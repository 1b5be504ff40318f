"""Manifest checks of `profile.status_texts`: known keys, placeholders and languages."""

from __future__ import annotations

import pytest
import yaml

from hub.requests.models import RESOLUTIONS, STATES
from tenants.manifest import ManifestError, example_paths, parse_manifest
from tenants.texts import (
    BUILT_IN_NOTICES,
    DEFAULT_STATUS_TEXTS,
    PLACEHOLDERS,
    TEXT_KEYS,
    template_problem,
)

BOSTON = next(path for path in example_paths() if path.stem == "boston")


def _boston(status_texts: dict) -> dict:
    data = yaml.safe_load(BOSTON.read_text(encoding="utf-8"))
    data["profile"] = {"status_texts": status_texts}
    return data


def _problems(status_texts: dict) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(_boston(status_texts))
    return caught.value.problems


def test_status_keys_cover_every_state():
    expected = {*STATES, *(f"closed:{resolution}" for resolution in RESOLUTIONS)}
    assert set(DEFAULT_STATUS_TEXTS["en"]) == expected


def test_placeholders_name_known_keys():
    assert set(PLACEHOLDERS) <= set(TEXT_KEYS)


def test_unknown_placeholder_rejected():
    problems = _problems({"zh": {"notice.expected": "谢谢，预计 {date} 前处理。"}})
    assert len(problems) == 1
    assert problems[0].startswith("profile.status_texts.zh.notice.expected: ")
    assert "'谢谢，预计 {date} 前处理。'" in problems[0]
    assert "{date}" in problems[0]
    assert "use only {expected}" in problems[0]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("by {expected", "malformed braces"),
        ("by expected}", "malformed braces"),
        ("by {}", "placeholder {}"),
        ("by {0}", "placeholder {0}"),
        ("by {expected.year}", "placeholder {expected.year}"),
        ("by {expected!r}", "write it as {expected} only"),
        ("by {expected:>20}", "write it as {expected} only"),
    ],
)
def test_bad_template_rejected(text: str, problem: str):
    problems = _problems({"es": {"notice.expected": text}})
    assert len(problems) == 1
    assert problems[0].startswith("profile.status_texts.es.notice.expected: ")
    assert problem in problems[0]


def test_good_templates_accepted():
    texts = {
        "zh": {
            "notice.expected": "谢谢，预计 {expected} 前处理。",
            "notice.received": "谢谢",
            "closed:fixed": "已修复",
        },
        "es": {"notice.expected": "Antes del {expected} {{sin falta}}"},
    }
    manifest = parse_manifest(_boston(texts))
    assert (
        manifest.profile.status_texts["zh"]["notice.expected"] == "谢谢，预计 {expected} 前处理。"
    )


def test_brace_in_unformatted_text_rejected():
    problems = _problems({"es": {"closed:fixed": "Cerrada {date}"}})
    assert problems == [
        "profile.status_texts.es.closed:fixed: 'Cerrada {date}' has a brace, but closed:fixed "
        "takes no placeholders and is shown as written; remove the braces"
    ]


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("notice.recieved", "notice.received"), ("acknowleged", "acknowledged")],
)
def test_misspelt_key_rejected(key: str, suggestion: str):
    problems = _problems({"zh": {key: "x"}})
    assert len(problems) == 1
    assert problems[0].startswith(f"profile.status_texts.zh.{key}: unknown text key {key!r}")
    assert "known keys are submitted, acknowledged," in problems[0]
    assert "notice.token" in problems[0]
    assert f"did you mean {suggestion}" in problems[0]


def test_unlisted_language_rejected():
    problems = _problems({"xx": {"closed": "c"}})
    assert problems == [
        "profile.status_texts.xx: language 'xx' is not in languages (en, es, zh); add it "
        "there or remove its texts"
    ]


def test_language_matched_in_any_case():
    manifest = parse_manifest(_boston({"ZH": {"closed": "已結案"}}))
    assert manifest.profile.status_texts == {"ZH": {"closed": "已結案"}}


def test_stored_manifest_skips_checks():
    texts = {
        "zh": {"notice.expected": "谢谢，预计 {date} 前处理。", "acknowleged": "y"},
        "xx": {"closed": "c"},
    }
    manifest = parse_manifest(_boston(texts), stored=True)
    assert manifest.profile.status_texts == texts


def test_template_problem_none_for_built_ins():
    for table in [*DEFAULT_STATUS_TEXTS.values(), *BUILT_IN_NOTICES.values()]:
        for key, text in table.items():
            assert template_problem(key, text) is None, key
