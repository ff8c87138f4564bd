"""Formatters turn a ``TaskiqMessage`` into the bytes the broker queues, and back."""

from __future__ import annotations

from .protocol import BrokerMessage
from .result import TaskiqMessage, message_from_wire, message_to_wire
from .serializers import TaskiqSerializer

__all__ = ["JSONFormatter", "TaskiqFormatter"]


class TaskiqFormatter:
    """Base formatter: the whole message through the broker's serializer."""

    def __init__(self, serializer: TaskiqSerializer) -> None:
        self.serializer = serializer

    def dumps(self, message: TaskiqMessage) -> BrokerMessage:
        """Raises ``SerializationError`` naming the argument that cannot be sent."""
        return BrokerMessage(
            task_id=message.task_id,
            task_name=message.task_name,
            message=message_to_wire(message, self.serializer),
            labels=message.labels,
        )

    def loads(self, data: bytes) -> TaskiqMessage:
        return message_from_wire(data, self.serializer)


#: taskiq's name for the default formatter (it follows the broker's serializer).
JSONFormatter = TaskiqFormatter
