"""`?masked=true` (`rest_api.credentials.mask_credential_value`, SPEC 2.2)."""

from __future__ import annotations

import pytest

from services.gateway.rest_api.credentials import mask_credential_value


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("sk-1234567890abcdef", "sk-...cdef"),
        ("0123456789abcdef", "012...cdef"),  # exactly 16
        ("0123456789abcde", "MASKED"),  # 15
        ("x", "MASKED"),
    ],
)
def test_mask_credential_value(value: str, masked: str) -> None:
    assert mask_credential_value(value) == masked
