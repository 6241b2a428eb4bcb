"""The placeholder engine (SPEC 3.1-3.2): seed examples, malformed forms, properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.router.placeholders import (
    MALFORMED_WARNING,
    referenced_keys,
    substitute_headers,
    substitute_placeholders,
)

KEY_CHARS = "ABCXYZabcxyz0189_.-"
keys = st.text(alphabet=KEY_CHARS, min_size=1, max_size=20).filter(lambda k: k.strip(".") != "")
# Text that cannot open a placeholder: no "{{" anywhere.
plain = st.text(max_size=40).filter(lambda t: "{{" not in t and not t.endswith("{"))
values = st.text(max_size=40)

SEED_VALUES = {
    "openai_api_key": "sk-actual-key-value",
    "anthropic_api_key": "sk-ant-api03-value",
    "custom_api_key": "custom-value",
    "custom_header_value": "custom-header-value",
}


@pytest.mark.parametrize(
    ("name", "template", "expected"),
    [
        ("Authorization", "Bearer {{credential:openai_api_key}}", "Bearer sk-actual-key-value"),
        ("X-API-Key", "{{credential:anthropic_api_key}}", "sk-ant-api03-value"),
        ("Authorization", "Bearer {{credential:custom_api_key}}", "Bearer custom-value"),
        ("Custom-Header", "{{credential:custom_header_value}}", "custom-header-value"),
    ],
)
def test_seed_examples(name: str, template: str, expected: str) -> None:
    result = substitute_headers([(name, [template])], SEED_VALUES)
    assert result.headers == ((name, expected),)
    assert result.warnings == ()


def test_several_placeholders_in_one_value_and_multi_valued_headers() -> None:
    result = substitute_headers(
        [
            ("X-Pair", ["{{credential:a}}:{{credential:b}}", "{{credential:b}}{{credential:a}}"]),
            ("X-Other", ["plain"]),
        ],
        {"a": "1", "b": "2"},
    )
    assert result.headers == (("X-Pair", "1:2"), ("X-Pair", "21"), ("X-Other", "plain"))


def test_missing_key_is_left_and_warned_once() -> None:
    result = substitute_headers(
        [("A", ["Bearer {{credential:gone}}"]), ("B", ["{{credential:gone}} {{credential:k}}"])],
        {"k": "v"},
    )
    assert result.headers == (("A", "Bearer {{credential:gone}}"), ("B", "{{credential:gone}} v"))
    assert result.warnings == ("Credential not found: gone",)
    assert result.missing_keys == ("gone",)


@pytest.mark.parametrize(
    "text",
    [
        "{{credential: key}}",
        "{{ credential:key }}",
        "{{credential:}}",
        "{{Credential:key}}",
        "{{CREDENTIAL:key}}",
        "{{credential:key with space}}",
        "{{credential:key}",
        "{{credential:key",
        "{{credentials:key}}",
        "{{credential:" + "k" * 129 + "}}",
        "Bearer {{credential :key}}",
    ],
)
def test_malformed_forms_are_left_and_warned(text: str) -> None:
    result = substitute_headers([("H", [text])], {"key": "VALUE", "k" * 129: "VALUE"})
    assert result.headers == (("H", text),)
    assert result.warnings == (MALFORMED_WARNING,)


def test_key_is_case_sensitive() -> None:
    result = substitute_placeholders("{{credential:Key}}", {"key": "v"})
    assert result.text == "{{credential:Key}}"
    assert result.missing_keys == ("Key",)


def test_longest_legal_key() -> None:
    key = "k" * 128
    assert substitute_placeholders("{{credential:" + key + "}}", {key: "v"}).text == "v"


def test_render_masks_without_touching_the_rest() -> None:
    result = substitute_placeholders(
        "Bearer {{credential:a}} {{credential:b}}", {"a": "x", "b": "y"}, lambda k, v: "<" + k + ">"
    )
    assert result.text == "Bearer <a> <b>"
    assert result.substituted_keys == ("a", "b")


def test_referenced_keys_are_distinct_and_ordered() -> None:
    assert referenced_keys(["{{credential:b}} {{credential:a}}", "{{credential:b}}", "x"]) == [
        "b",
        "a",
    ]


@settings(deadline=None)
@given(plain)
def test_text_without_placeholders_is_identical(text: str) -> None:
    result = substitute_placeholders(text, {"a": "b"})
    assert result.text == text
    assert result.missing_keys == ()
    assert result.malformed == 0


@settings(deadline=None)
@given(st.lists(st.one_of(plain, keys.map(lambda k: ("key", k))), max_size=8), st.data())
def test_substitution_is_a_single_pass_and_never_rescans(
    parts: list[str | tuple[str, str]], data: st.DataObject
) -> None:
    key_names = sorted({p[1] for p in parts if isinstance(p, tuple)})
    # Values may themselves look like placeholders for other keys, or be malformed ones.
    tricky = st.one_of(
        values,
        st.sampled_from(key_names or ["x"]).map(lambda k: "{{credential:" + k + "}}"),
        st.just("{{ credential:x }}"),
    )
    mapping = {k: data.draw(tricky) for k in key_names if data.draw(st.booleans())}
    template = ""
    expected = ""
    missing: list[str] = []
    for part in parts:
        if isinstance(part, tuple):
            placeholder = "{{credential:" + part[1] + "}}"
            template += placeholder
            if part[1] in mapping:
                expected += mapping[part[1]]
            else:
                expected += placeholder
                missing.append(part[1])
        else:
            template += part
            expected += part
    result = substitute_placeholders(template, mapping)
    assert result.text == expected
    assert list(result.missing_keys) == missing
    assert result.malformed == 0


def _malformed_forms(key: str) -> st.SearchStrategy[str]:
    spaces = st.text(alphabet=" \t", min_size=1, max_size=3)
    return st.one_of(
        # blanks inside, anywhere
        st.tuples(spaces, spaces).map(lambda s: "{{" + s[0] + "credential:" + key + s[1] + "}}"),
        spaces.map(lambda s: "{{credential:" + s + key + "}}"),
        spaces.map(lambda s: "{{credential" + s + ":" + key + "}}"),
        # the word in another case
        st.sampled_from(["Credential", "CREDENTIAL", "cREDENTIAL", "CrEdEnTiAl"]).map(
            lambda w: "{{" + w + ":" + key + "}}"
        ),
        # no key, or a key with a character outside A-Z a-z 0-9 _ . -
        st.just("{{credential:}}"),
        st.sampled_from(list("!$%&*+/;<=>?@^|~ ")).map(
            lambda c: "{{credential:" + key + c + key + "}}"
        ),
    )


@settings(deadline=None)
@given(plain, keys.flatmap(_malformed_forms), plain, values)
def test_every_malformed_form_is_left_as_is_and_warned(
    before: str, malformed: str, after: str, value: str
) -> None:
    text = before + malformed + after
    result = substitute_headers([("H", [text])], {"key": value})
    assert result.headers == (("H", text),)
    assert result.warnings == (MALFORMED_WARNING,)
