"""Grouping of input errors that a check collects before it raises."""

from __future__ import annotations

import pytest

from hub.core.errors import InvalidInput, InvalidInputGroup, merge_errors


def test_merge_keeps_single_error():
    error = InvalidInput("lat and long must be given together", code="invalid_location")

    assert merge_errors([error]) is error


def test_merge_groups_several_in_order():
    first = InvalidInput("description must be plain text without HTML markup")
    second = InvalidInput("attribute[depth] is required for service pothole")

    merged = merge_errors([first, second])

    assert isinstance(merged, InvalidInputGroup)
    assert merged.status == 400
    assert merged.errors == (first, second)
    assert merged.messages == (first.message, second.message)
    assert merged.message == f"{first.message}; {second.message}"


def test_merge_flattens_nested_group():
    inner = InvalidInputGroup([InvalidInput("b"), InvalidInput("c")])

    merged = merge_errors([InvalidInput("a"), inner, InvalidInput("d")])

    assert merged.messages == ("a", "b", "c", "d")


def test_merge_lists_identical_messages_once():
    merged = merge_errors([InvalidInput("a"), InvalidInput("a")])

    assert not isinstance(merged, InvalidInputGroup)
    assert merged.messages == ("a",)


def test_group_needs_an_error():
    with pytest.raises(ValueError, match="at least one error"):
        InvalidInputGroup([])
