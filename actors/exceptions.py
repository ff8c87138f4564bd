"""Exceptions, with taskiq's names and tree so ``except`` clauses ported from taskiq still work.

Every exception here can be rebuilt from its ``args`` (``type(exc)(*exc.args)``), so it
survives the trip from a worker to a client with its own type (see ``actors.result``).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BrokerError",
    "DependencyFailedError",
    "NoResultError",
    "RemoteTaskError",
    "ResultBackendError",
    "ResultGetError",
    "ResultIsReadyError",
    "SecurityError",
    "SendTaskError",
    "SerializationError",
    "SharedBrokerSendTaskError",
    "TaskAbortedError",
    "TaskExpiredError",
    "TaskRejectedError",
    "TaskTimeoutError",
    "TaskiqError",
    "TaskiqResultTimeoutError",
    "UnknownTaskError",
]


class TaskiqError(Exception):
    """Base of every error the task queue raises on purpose."""

    #: Shown by ``str()`` when the exception was raised without a message.
    default_message: ClassVar[str] = ""

    def __str__(self) -> str:
        return super().__str__() or self.default_message


class BrokerError(TaskiqError):
    """The broker could not do what was asked."""


class SendTaskError(BrokerError):
    """A task message could not be handed to the broker."""

    default_message = "Cannot send the task to the broker"


class SharedBrokerSendTaskError(SendTaskError):
    """A shared task was kicked with no default broker set."""


class UnknownTaskError(BrokerError):
    """A message named a task that is not registered on this broker."""

    def __init__(self, task_name: str) -> None:
        super().__init__(task_name)
        self.task_name = task_name

    def __str__(self) -> str:
        return f"Unknown task: {self.task_name!r}"


class ResultBackendError(TaskiqError):
    """The result backend failed."""


class ResultGetError(ResultBackendError):
    """A result could not be fetched (unknown, expired or never stored)."""

    default_message = "Cannot get the task result"


class ResultIsReadyError(ResultBackendError):
    """Whether a result is ready could not be determined."""

    default_message = "Cannot check whether the result is ready"


class TaskiqResultTimeoutError(TaskiqError, TimeoutError):
    """Waiting for a result took longer than the caller's timeout."""

    default_message = "Waiting for the task result has timed out"

    def __init__(self, *args: object, timeout: float | None = None) -> None:
        super().__init__(*args)
        self.timeout = timeout


class NoResultError(TaskiqError):
    """Raised inside a task to end the run without storing a result (e.g. requeue)."""


class TaskRejectedError(TaskiqError):
    """The task was rejected and will not be run again."""

    default_message = "The task was rejected"


class SecurityError(TaskiqError):
    """A peer or a payload failed a security check."""


class SerializationError(TaskiqError):
    """A value could not be serialized or deserialized."""


class TaskAbortedError(TaskiqError):
    """The task was aborted before it finished."""

    default_message = "The task was aborted"


class TaskTimeoutError(TaskiqError, TimeoutError):
    """The task ran longer than its ``timeout`` label and was cancelled."""

    default_message = "The task timed out"

    def __init__(self, *args: object, timeout: float | None = None) -> None:
        super().__init__(*args)
        self.timeout = timeout


class TaskExpiredError(TaskiqError):
    """The task was not started before its ``expire`` time."""

    default_message = "The task expired before it was started"


class DependencyFailedError(TaskiqError):
    """A task this one waited for failed or was aborted, so this one cannot run."""

    default_message = "A dependency of the task failed"

    def __init__(self, *args: object, dependency_id: str | None = None) -> None:
        super().__init__(*args)
        self.dependency_id = dependency_id


class RemoteTaskError(TaskiqError):
    """Stands in for a remote exception whose type cannot be rebuilt here.

    ``type_name`` is the original ``module.qualname`` and ``message`` its ``str()``.
    """

    def __init__(self, type_name: str, message: str = "") -> None:
        super().__init__(type_name, message)
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name
