"""Input rules only the vault has: user ids.

The rules the vault shares with the gateway live once in `services.common`: credential keys and
values in `credential_rules`, providers in `provider_rules`, scopes in `scopes`.
"""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

_USER_ID = re.compile(r"[\x21-\x7e]{1,256}")


def validate_user_id(user_id: str) -> str:
    if not _USER_ID.fullmatch(user_id):
        raise InvalidArgument(
            "user_id is required: 1-256 printable ASCII characters without spaces"
        )
    return user_id
