"""`BoundedLabels`: user-chosen label values, bounded."""

from __future__ import annotations

from services.common.bounded_labels import BoundedLabels


def test_first_values_pass_later_ones_overflow() -> None:
    labels = BoundedLabels(2)
    assert [labels(v) for v in ("a", "b", "c", "a", "b", "d")] == [
        "a",
        "b",
        "other",
        "a",
        "b",
        "other",
    ]


def test_long_values_and_the_overflow_value_itself_take_no_place() -> None:
    labels = BoundedLabels(2, max_length=3, overflow="rest")
    assert labels("abcd") == "rest"
    assert labels("rest") == "rest"
    assert labels("abc") == "abc"
    assert labels("x") == "x"
    assert labels("y") == "rest"
