"""Which credential keys header values refer to (SPEC 3.1). Pure: no I/O, no grpc.

The vault uses `referenced_keys` to decide which values `Resolve` returns; the router's
substitution engine (services/router/placeholders.py) uses the same syntax.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from services.common.credential_rules import KEY_PATTERN

PLACEHOLDER = re.compile(r"\{\{credential:(" + KEY_PATTERN.pattern + r")\}\}")
"""A well-formed placeholder `{{credential:KEY}}`; group 1 is the key."""


def referenced_keys(values: Iterable[str]) -> list[str]:
    """Keys of the well-formed placeholders in `values`, each once, in order of first use.

    Malformed lookalikes (`{{credential: key}}`, `{{Credential:key}}`, ...) reference nothing.
    """
    keys: dict[str, None] = {}
    for value in values:
        for match in PLACEHOLDER.finditer(value):
            keys.setdefault(match.group(1), None)
    return list(keys)
