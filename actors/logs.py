"""Logging for operators: one structured line per task event, and a JSON formatter.

Task events go to the ``actors.task_events`` logger with ``event``, ``task_id`` and
``task_name`` (and some event-specific fields) as the record's attributes, so a JSON
log carries them as fields and a text log shows them in its message. The command line
installs the handler (``--log-level``, ``--log-format text|json``); a program that uses
the library configures logging itself, as with any library.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

__all__ = ["TASK_EVENTS", "JSONFormatter", "configure", "task_event"]

#: The logger of task events: ``kicked`` (client); ``queued``, ``dispatched``,
#: ``requeued`` (hub, DEBUG); ``started``, ``succeeded``, ``failed``, ``retried``,
#: ``aborted`` (worker, INFO; ``failed`` WARNING).
TASK_EVENTS = logging.getLogger("actors.task_events")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has; the rest of its attributes came from ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def task_event(
    event: str, task_id: str, task_name: str, level: int = logging.INFO, **fields: Any
) -> None:
    """Log one task event (nothing is built when its level is off).

    Callers on a task's path check ``TASK_EVENTS.isEnabledFor(level)`` first, once for
    what they log together: with the level off, that check is all a task pays (a call
    of this function and its keyword arguments would cost more, five times per task)."""
    if TASK_EVENTS.isEnabledFor(level):
        details = "".join(f" {key}={value}" for key, value in fields.items())
        TASK_EVENTS.log(
            level,
            "task %s %s %s%s",
            task_name,
            task_id,
            event,
            details,
            extra={"event": event, "task_id": task_id, "task_name": task_name, **fields},
        )


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ``extra`` fields,
    and the exception's traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str, log_format: str) -> None:
    """Send the process's logs to stderr at ``level``, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
