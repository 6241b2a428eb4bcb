"""Which environment variables each service reads, taken from the code itself.

Every service builds one settings object with `Settings.from_env(environ)` (docs/architecture.md).
Calling it with a Mapping that records every key asked for gives the exact names, including
ones composed at run time (e.g. `f"{prefix}_CA"`), with no grepping.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

SERVICES = ("vault", "router", "gateway")
_SETTINGS_MODULES = ("config", "settings")
ROOT = Path(__file__).resolve().parents[2]


class RecordingEnviron(Mapping[str, str]):
    """An environment in which every variable is unset, that remembers what was looked up."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self.asked: set[str] = set()
        self._values = dict(values or {})

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return self._values.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("settings must ask for variables by name, not iterate the env")

    def __len__(self) -> int:
        return len(self._values)


def settings_classes(service: str) -> list[type]:
    """The classes with a `from_env` classmethod in services/<service>/{config,settings}.py."""
    found: list[type] = []
    for name in _SETTINGS_MODULES:
        if not (ROOT / "services" / service / f"{name}.py").exists():
            continue
        module = importlib.import_module(f"services.{service}.{name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and callable(getattr(cls, "from_env", None)):
                found.append(cls)
    return found


def variables_read(service: str) -> set[str]:
    """Every environment variable the service's settings ask for."""
    asked: set[str] = set()
    for cls in settings_classes(service):
        environ = RecordingEnviron()
        cls.from_env(environ)  # type: ignore[attr-defined]
        asked |= environ.asked
    return asked
