"""The masking rules: provider headers and the literal-secret warning (SPEC 2.3), credential
values (SPEC 2.2), table-driven."""

from __future__ import annotations

import pytest

from services.common.header_masking import (
    MASKED,
    is_sensitive_header,
    literal_secret_warnings,
    mask_credential_value,
    mask_header_value,
    mask_headers,
)
from services.common.placeholders import referenced_keys

SHOWN = "shown"

CASES = [
    # (header, value, expected)
    ("Authorization", "Bearer {{credential:openai_api_key}}", SHOWN),
    ("Authorization", "Bearer sk-123", MASKED),
    ("X-API-Key", "{{credential:anthropic_api_key}}", SHOWN),
    ("Cookie", "a=b", MASKED),
    ("X-Title", "hello", SHOWN),
    ("authorization", "bearer {{credential:k}}", SHOWN),
    ("Proxy-Authorization", "Basic {{credential:user}}:{{credential:password}}", SHOWN),
    ("Proxy-Authorization", "Basic dXNlcjpwYXNzd29yZA==", MASKED),
    ("Api-Key", "{{credential:azure_key}}", SHOWN),
    ("Api-Key", "0123456789abcdef", MASKED),
    ("X-Goog-Api-Key", "AIzaSyA-literal-google-key", MASKED),
    ("X-Custom-Token", "Token {{credential:t}}", SHOWN),
    ("X-Client-Secret", "{{credential:a}}{{credential:b}}", SHOWN),
    ("X-Db-Password", "hunter2", MASKED),
    ("Cookie", "session={{credential:session_cookie}}", SHOWN),
    ("Cookie", "session={{credential:s}}; tracking=abcdefgh12345", MASKED),
    ("Authorization", "Bearer {{credential:k}} sk-abcdefghijkl", MASKED),
    ("Authorization", "Bearer {{credential:k}} sk-123", MASKED),  # short, still a literal
    ("Proxy-Authorization", "Basic {{credential:user}}:hunter2", MASKED),
    ("Cookie", "session={{credential:s}}; theme=dark", MASKED),
    ("Cookie", "a={{credential:a}}; b={{credential:b}}", SHOWN),
    ("X-Api-Key", "{{credential:a}}-{{credential:b}}", SHOWN),
    ("X-Api-Key", "{{credential:a}}x{{credential:b}}", MASKED),
    ("Authorization", "Token token={{credential:t}}", SHOWN),
    ("Cookie", "session=", MASKED),  # a name with no placeholder: a literal like any other
    ("Authorization", "Bearer {{credential: openai_api_key}}", MASKED),
    ("Authorization", "Bearer {{Credential:openai_api_key}}", MASKED),
    ("Authorization", "", SHOWN),  # nothing secret in it
    ("Authorization", "Bearer", SHOWN),
    ("Authorization", "Bearer x", MASKED),
    ("X-Request-Source", "sk-looks-secret-but-header-is-not-sensitive", SHOWN),
    ("Anthropic-Version", "2023-06-01", SHOWN),
    ("OpenAI-Organization", "org-123456789", SHOWN),
]


@pytest.mark.parametrize(("header", "value", "expected"), CASES)
def test_masking_table(header: str, value: str, expected: str) -> None:
    shown = mask_header_value(header, value)
    assert shown == (value if expected == SHOWN else MASKED)
    warnings = literal_secret_warnings({header: [value]})
    if expected == MASKED:
        assert warnings == [f"header {header} holds a literal secret; use {{{{credential:...}}}}"]
    else:
        assert warnings == []


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("Authorization", True),
        ("PROXY-AUTHORIZATION", True),
        ("x-api-key", True),
        ("Api-Key", True),
        ("Cookie", True),
        ("X-Monkey", True),  # contains `key`: better masked than leaked
        ("X-Auth-User", True),
        ("X-Password-Hint", True),
        ("X-Title", False),
        ("Content-Type", False),
        ("Anthropic-Version", False),
    ],
)
def test_sensitive_header_names(name: str, sensitive: bool) -> None:
    assert is_sensitive_header(name) is sensitive


def test_the_literal_secret_warning_text_and_one_per_header() -> None:
    headers = {
        "Authorization": ["Bearer sk-123", "Bearer sk-456"],
        "X-Title": ["sk-not-a-secret-header"],
        "X-API-Key": ["{{credential:k}}"],
        "Cookie": ["{{credential:c}}", "a=b"],
    }
    assert literal_secret_warnings(headers) == [
        "header Authorization holds a literal secret; use {{credential:...}}",
        "header Cookie holds a literal secret; use {{credential:...}}",
    ]
    assert mask_headers(headers) == {
        "Authorization": [MASKED, MASKED],
        "X-Title": ["sk-not-a-secret-header"],
        "X-API-Key": ["{{credential:k}}"],
        "Cookie": ["{{credential:c}}", MASKED],
    }


def test_referenced_keys_are_well_formed_only_unique_and_in_order() -> None:
    values = [
        "Bearer {{credential:openai_api_key}}",
        "{{credential:b}}-{{credential:a}}-{{credential:b}}",
        "{{credential: spaced}} {{Credential:upper}} {{credential:}} {{ credential:x }}",
        "{{credential:" + "k" * 129 + "}}",
        "{{credential:" + "k" * 128 + "}}",
    ]
    assert referenced_keys(values) == ["openai_api_key", "b", "a", "k" * 128]
    assert referenced_keys([]) == []


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("", MASKED),
        ("short", MASKED),
        ("x" * 15, MASKED),  # 15: one short of showing anything
        ("sk-abcdefghijklmnop", "sk-...mnop"),  # 16 and over: first 3 and last 4
        ("0123456789abcdef", "012...cdef"),
        ("sk-" + "a" * 5000 + "wxyz", "sk-...wxyz"),  # the joint does not tell the length
    ],
)
def test_credential_values_are_masked_as_spec_2_2(value: str, shown: str) -> None:
    # The gateway's `?masked=true` and the router's Preview both showed values this way, each
    # with its own copy; both must now call this one.
    assert mask_credential_value(value) == shown
