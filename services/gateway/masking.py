"""Masking of credential values for screens that need no plaintext (SPEC 2.2 `?masked=true`).

Provider headers are masked by the vault (`services.common.header_masking`); this is only the
credential-value rule.
"""

from __future__ import annotations

MASKED = "MASKED"
_MIN_PARTIAL = 16


def mask_credential_value(value: str) -> str:
    """First 3 and last 4 characters of a value of at least 16, joined by `...`; else MASKED.

    The joint has a fixed width, so the masked form does not tell the value's length.
    """
    if len(value) < _MIN_PARTIAL:
        return MASKED
    return f"{value[:3]}...{value[-4:]}"
