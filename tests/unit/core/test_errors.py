"""Grouping of input errors that a check collects before it raises."""

from __future__ import annotations

import pytest

from hub.core.errors import (
    ErrorCollector,
    InvalidInput,
    InvalidInputGroup,
    each_error,
    merge_errors,
)


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


def _reject(message: str) -> None:
    raise InvalidInput(message)


def test_collector_runs_every_check():
    errors = ErrorCollector()

    assert errors.check(_reject, "a") is None
    assert errors.check(int, "7") == 7
    errors.check(_reject, "b")

    with pytest.raises(InvalidInputGroup) as caught:
        errors.raise_any()
    assert caught.value.messages == ("a", "b")


def test_collector_lets_other_exceptions_through():
    errors = ErrorCollector()

    with pytest.raises(ValueError):
        errors.check(int, "seven")
    assert not errors


def test_collector_without_errors_raises_nothing():
    errors = ErrorCollector()
    errors.check(int, "7")

    errors.raise_any()


def test_each_error_splits_group():
    single = InvalidInput("a")
    group = InvalidInputGroup([InvalidInput("b"), InvalidInput("c")])

    assert each_error(single) == (single,)
    assert [error.message for error in each_error(group)] == ["b", "c"]
