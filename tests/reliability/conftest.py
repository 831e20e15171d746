"""Fixtures for the reliability suite: the registry tests' tiny dataset, model and template store.

They are imported, not copied, so the suite builds the same tiny model the registry tests use.
"""

from __future__ import annotations

from tests.registry.conftest import (  # noqa: F401 - fixtures
    _own_cache,
    client,
    registered,
    settings,
    template_store,
    tiny_model,
    tiny_root,
)
