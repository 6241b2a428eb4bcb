"""`BoundedLabels`: user-chosen label values, bounded and filtered."""

from __future__ import annotations

import pytest

from services.common.bounded_labels import BoundedLabels, is_label_safe


def test_first_values_pass_later_ones_overflow() -> None:
    labels = BoundedLabels(2)
    seen = [labels(v) for v in ("a", "b", "c", "a", "b", "d")]
    assert seen == ["a", "b", "other", "a", "b", "other"]


def test_long_empty_unsafe_and_the_overflow_value_take_no_place() -> None:
    labels = BoundedLabels(2, max_length=3, overflow="rest")
    for value in ("abcd", "", "rest", "a b"):
        assert labels(value) == "rest"
    assert labels("abc") == "abc"
    assert labels("x") == "x"
    assert labels("y") == "rest"


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "claude-3-5-sonnet-20241022",
        "meta-llama/Llama-3.1-8B",
        "text-embedding-3-small",
        "openai",
        "qwen2.5:7b",
    ],
)
def test_names_are_label_safe(name: str) -> None:
    assert is_label_safe(name)


@pytest.mark.parametrize(
    "value",
    [
        "sk-proj-a1B2c3D4e5F6g7H8",
        "sk-ant-api03-AbCdEfGh12345678",
        "9f86d081884c7d659a2feaa0",
        "has space",
        "semi;colon",
        'quote"',
        "",
    ],
)
def test_keys_ids_and_odd_text_are_not(value: str) -> None:
    assert not is_label_safe(value)
