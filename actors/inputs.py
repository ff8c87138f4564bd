"""What the task queue accepts from its users: labels and timeouts, checked where they
come in.

``kiq`` and ``@broker.task`` refuse a label the broker or a worker acts on when its value
is unusable, with ``SendTaskError`` naming the label. The broker and the workers read
labels with the same functions, so a value that slips past (a middleware that changes
labels, a message kicked without ``kiq``) fails that one task, never the role.
"""

from __future__ import annotations

import datetime
import math
import numbers
import sys
from collections.abc import Callable
from typing import Any

import pendulum

from .exceptions import SendTaskError

__all__ = [
    "check_labels",
    "eta_label",
    "ids_label",
    "int_label",
    "seconds_label",
    "ttl_label",
    "wait_limit",
]


def _refused(name: str, value: Any, wanted: str) -> SendTaskError:
    return SendTaskError(f"label {name!r} must be {wanted}, not {value!r}")


def seconds_label(labels: dict[str, Any], name: str) -> float | None:
    """A duration label: a finite number of seconds >= 0 (a number, a numeric string or
    a timedelta); None when absent."""
    value = labels.get(name)
    if value is None:
        return None
    wanted = "a finite number of seconds >= 0"
    try:
        if isinstance(value, datetime.timedelta):
            seconds = value.total_seconds()
        elif isinstance(value, str) or (
            isinstance(value, numbers.Real) and not isinstance(value, bool)
        ):
            seconds = float(value)
        else:
            raise _refused(name, value, wanted)
    except (ValueError, OverflowError):
        raise _refused(name, value, wanted) from None
    if not 0 <= seconds < math.inf:
        raise _refused(name, value, wanted)
    return seconds


def ttl_label(labels: dict[str, Any]) -> float | None:
    """The ``ttl`` label for storing a result; None when absent or unusable (the task
    already failed where its labels were checked)."""
    try:
        return seconds_label(labels, "ttl")
    except SendTaskError:
        return None


def int_label(labels: dict[str, Any], name: str, minimum: int | None = None) -> int | None:
    """A whole-number label (an int, a whole float or a numeric string); None when absent."""
    value = labels.get(name)
    if value is None:
        return None
    wanted = "a whole number" if minimum is None else f"a whole number >= {minimum}"
    if isinstance(value, bool):
        raise _refused(name, value, wanted)
    if isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, int | str):
        try:
            number = int(value)
        except ValueError:
            raise _refused(name, value, wanted) from None
    else:
        raise _refused(name, value, wanted)
    if minimum is not None and number < minimum:
        raise _refused(name, value, wanted)
    return number


def eta_label(labels: dict[str, Any], name: str = "eta") -> pendulum.DateTime | None:
    """An instant label (``eta``, ``kicked_at``): an ISO datetime string or a datetime
    (naive means UTC)."""
    value = labels.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = pendulum.parse(value)
        except Exception:  # pendulum raises several kinds for text it cannot read
            raise _refused(name, value, "an ISO datetime") from None
    if not isinstance(value, datetime.datetime):
        raise _refused(name, value, "an ISO datetime")
    return pendulum.instance(value)


def ids_label(labels: dict[str, Any], name: str) -> list[str] | None:
    """A label holding task ids: a list or tuple of strings."""
    value = labels.get(name)
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _refused(name, value, "a list of task ids (strings)")
    return list(value)


def _id_label(labels: dict[str, Any], name: str) -> str | None:
    value = labels.get(name)
    if value is not None and not isinstance(value, str):
        raise _refused(name, value, "a task id (a string)")
    return value


def _count_label(labels: dict[str, Any], name: str) -> int | None:
    return int_label(labels, name, minimum=0)


#: Every label the broker, a worker or a retry middleware acts on, with its reader.
_READERS: dict[str, Callable[[dict[str, Any], str], object]] = {
    "delay": seconds_label,
    "expire": seconds_label,
    "ttl": seconds_label,
    "timeout": seconds_label,
    "priority": int_label,
    "eta": eta_label,
    "kicked_at": eta_label,
    "max_tries": _count_label,
    "max_retries": _count_label,
    "_retries": _count_label,
    "X-Taskiq-requeue": _count_label,
    "depends_on": ids_label,
    "then_of": _id_label,
    "otherwise_of": _id_label,
    "unique_key": _id_label,
}


def check_labels(labels: dict[str, Any]) -> None:
    """Raise ``SendTaskError`` naming the first label whose value the queue cannot use."""
    if labels:  # most kicks carry none
        for name in labels.keys() & _READERS.keys():
            _READERS[name](labels, name)


def wait_limit(timeout: float | None) -> float:
    """Seconds to wait for a ``timeout`` argument of the task API.

    As in taskiq, None, 0 or a negative number mean no limit (``math.inf``); a positive
    number is seconds. NaN raises ``ValueError``, anything but a number ``TypeError``.
    """
    if timeout is None:
        return math.inf
    if type(timeout) is float and timeout <= 0:  # the default, -1.0, on every wait
        return math.inf
    # int and float first: they are the usual case, and the ABC check is slow.
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, numbers.Real)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if math.isnan(timeout):
        raise ValueError("timeout must be a number of seconds or None, not NaN")
    return float(timeout) if 0 < timeout <= sys.float_info.max else math.inf
