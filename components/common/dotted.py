"""Dotted `key=value` overrides (`model.max_events=32`, `tuning.steps=10`) into a nested mapping: the
one implementation the training profile and the evaluation settings share."""

from __future__ import annotations

from typing import Any


def set_dotted(d: dict, key: str, value: Any, error: type[ValueError] = ValueError) -> None:
    """`d["a"]["b"] = value` for `key` "a.b", creating groups; `error` when a prefix is not a group."""
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise error(f"override {key!r}: {p!r} is not a group of settings")
    d[parts[-1]] = value
