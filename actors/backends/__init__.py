"""Storage behind the task queue's actors: result backends and schedule sources."""

from actors.backends.results import (
    AsyncResultBackend as AsyncResultBackend,
    DecodedResults as DecodedResults,
    DummyResultBackend as DummyResultBackend,
    EncodedResultBackend as EncodedResultBackend,
    InmemoryResultBackend as InmemoryResultBackend,
    SqliteResultBackend as SqliteResultBackend,
)
from actors.backends.schedules import (
    InMemoryScheduleSource as InMemoryScheduleSource,
    LabelScheduleSource as LabelScheduleSource,
    SqliteScheduleSource as SqliteScheduleSource,
)
