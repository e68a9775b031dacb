"""Fixtures of the index's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from swarmreg.index.store import IndexStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[IndexStore]:
    """An IndexStore on a fresh database file, open."""
    async with IndexStore(tmp_path / "index.db") as opened:
        yield opened
