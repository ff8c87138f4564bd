"""The public surface: every name the spec promises is exported, typed, and documented."""

from __future__ import annotations

import importlib.resources
import inspect

import actors
import transports

PROMISED = [
    "Actor",
    "ActorRef",
    "Supervisor",
    "ChildSpec",
    "Node",
    "AskTimeoutError",
    "ActorCrashedError",
    "PeerLostError",
    "AsyncBroker",
    "InMemoryBroker",
    "async_shared_broker",
    "AsyncTaskiqTask",
    "AsyncKicker",
    "AsyncTaskiqDecoratedTask",
    "TaskiqResult",
    "TaskiqMessage",
    "TaskProgress",
    "Context",
    "TaskiqDepends",
    "TaskiqState",
    "TaskiqEvents",
    "gather",
    "AsyncResultBackend",
    "InmemoryResultBackend",
    "DummyResultBackend",
    "TaskiqMiddleware",
    "SimpleRetryMiddleware",
    "SmartRetryMiddleware",
    "JSONSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "TaskStatus",
    "TaskInfo",
    "TaskiqError",
    "SendTaskError",
    "UnknownTaskError",
    "ResultGetError",
    "ResultIsReadyError",
    "TaskiqResultTimeoutError",
    "NoResultError",
    "TaskRejectedError",
    "TaskAbortedError",
    "TaskTimeoutError",
    "TaskExpiredError",
    "DependencyFailedError",
    "TaskiqScheduler",
    "ScheduleSource",
    "LabelScheduleSource",
    "InMemoryScheduleSource",
    "SqliteScheduleSource",
    "CreatedSchedule",
    "CronSpec",
]


def test_every_promised_name_is_exported() -> None:
    missing = [name for name in PROMISED if not hasattr(actors, name)]
    assert missing == []


def test_exported_classes_and_functions_are_documented() -> None:
    undocumented = [
        name
        for name in dir(actors)
        if not name.startswith("_")
        and (inspect.isclass(getattr(actors, name)) or inspect.isfunction(getattr(actors, name)))
        # Its own docstring: ``inspect.getdoc`` would take a base class's.
        and not (getattr(actors, name).__doc__ or "").strip()
    ]
    assert undocumented == []


def test_packages_ship_type_information() -> None:
    for package in (actors, transports):
        assert importlib.resources.files(package).joinpath("py.typed").is_file()


def test_taskiq_exception_tree() -> None:
    assert issubclass(actors.UnknownTaskError, actors.TaskiqError)
    assert issubclass(actors.ResultGetError, actors.TaskiqError)
    assert issubclass(actors.TaskiqResultTimeoutError, TimeoutError)
    assert issubclass(actors.TaskTimeoutError, TimeoutError)
    assert issubclass(actors.TaskAbortedError, actors.TaskiqError)
