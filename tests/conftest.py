"""Fixtures shared by the task-queue tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actors import InMemoryBroker


@pytest.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    """A running in-process broker with the default settings."""
    the_broker = InMemoryBroker()
    async with the_broker:
        yield the_broker
