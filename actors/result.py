"""The data a task queue moves around: messages, results, progress, and errors on the wire.

Plain data only (no I/O), shared by the broker, the workers, the result store and clients.

Errors cross process boundaries as a dict (``encode_error``) and are rebuilt with their own
type on the other side when that type can be found safely (``decode_error``); otherwise they
become a ``RemoteTaskError`` that keeps the original type name and message. The remote
traceback travels as text and is attached to the rebuilt exception as a note, so it shows
up in the client's traceback.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import importlib
import sys
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, Generic, NoReturn

import attrs
import pendulum
from typing_extensions import TypeVar

from actors.exceptions import (
    RemoteTaskError,
    SerializationError,
    TaskAbortedError,
    TaskiqError,
)
from actors.serializers import (
    TaskiqSerializer,
    as_pendulum_utc,
    decode_datetime,
    encode_datetime,
)

__all__ = [
    "ResultStatus",
    "TaskProgress",
    "TaskiqMessage",
    "TaskiqResult",
    "as_seconds",
    "decode_error",
    "encode_error",
    "message_from_wire",
    "message_to_wire",
    "result_from_wire",
    "result_to_wire",
    "utc_now",
]


def as_seconds(value: Any) -> float | None:
    """A duration in seconds from a number, a numeric string or a timedelta (pendulum's
    ``Duration`` included); None for no value. Labels and schedules carry durations so."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return float(value)


def utc_now() -> pendulum.DateTime:
    """``pendulum.now("UTC")``, built without pendulum's Python layers: it is read three
    times per task."""
    return as_pendulum_utc(datetime.datetime.now(datetime.UTC))


_ReturnT = TypeVar("_ReturnT", default=Any)
_MetaT = TypeVar("_MetaT", default=Any)


def _as_list(value: Iterable[Any]) -> list[Any]:
    return list(value)


# No setattr hooks: the worker sets ``labels`` on every message it runs (``args`` given as
# a tuple still becomes a list when the message is built).
@attrs.define(kw_only=True, on_setattr=attrs.setters.NO_OP)
class TaskiqMessage:
    """What a worker receives: which task to run, with what arguments and labels."""

    task_id: str
    task_name: str
    labels: dict[str, Any] = attrs.field(factory=dict)
    args: list[Any] = attrs.field(factory=list, converter=_as_list)
    kwargs: dict[str, Any] = attrs.field(factory=dict)


class ResultStatus(enum.StrEnum):
    """Usual values of ``TaskiqResult.status`` (any string is allowed)."""

    DONE = "done"
    ERROR = "error"
    ABORTED = "aborted"


# Plain strings: an enum member's ``.value`` is a slow property, read once per result.
_DONE, _ERROR, _ABORTED = (
    ResultStatus.DONE.value,
    ResultStatus.ERROR.value,
    ResultStatus.ABORTED.value,
)


@attrs.define(kw_only=True)
class TaskiqResult(Generic[_ReturnT]):
    """The outcome of one task run, as taskiq's ``TaskiqResult`` plus bookkeeping fields.

    ``status`` defaults from the other fields: ``"done"``, ``"error"``, or ``"aborted"``
    when the error is a ``TaskAbortedError``. ``log`` is always None (kept for taskiq).
    """

    is_err: bool
    return_value: _ReturnT
    execution_time: float = 0.0
    labels: dict[str, Any] = attrs.field(factory=dict)
    error: BaseException | None = None
    log: str | None = None
    task_id: str = ""
    status: str = attrs.field()
    tries: int = 1
    worker_id: str | None = None
    enqueue_time: pendulum.DateTime | None = None
    start_time: pendulum.DateTime | None = None
    finish_time: pendulum.DateTime | None = None

    @status.default
    def _status_from_outcome(self) -> str:
        if not self.is_err:
            return _DONE
        if isinstance(self.error, TaskAbortedError):
            return _ABORTED
        return _ERROR

    def raise_for_error(self) -> TaskiqResult[_ReturnT]:
        """Return self for a success; raise the task's error for a failure."""
        if self.error is not None:
            raise self.error
        if self.is_err:
            raise TaskiqError(f"Task {self.task_id!r} failed without a recorded error")
        return self


def _check_fraction(_: object, __: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"progress must be between 0.0 and 1.0, got {value!r}")


def _meta_or_empty(value: dict[str, Any] | None) -> dict[str, Any]:
    return {} if value is None else value


@attrs.define(kw_only=True)
class TaskProgress(Generic[_MetaT]):
    """A running task's progress report; ``meta`` holds any extra (serializable) data."""

    progress: float = attrs.field(default=0.0, validator=_check_fraction)
    status: str = "PENDING"
    current: int | None = None
    total: int | None = None
    message: str = ""
    meta: dict[str, _MetaT] = attrs.field(factory=dict, converter=_meta_or_empty)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a serializer."""
        return {
            "progress": self.progress,
            "status": self.status,
            "current": self.current,
            "total": self.total,
            "message": self.message,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskProgress[Any]:
        """Inverse of ``to_dict``; missing keys take their defaults, unknown keys are ignored."""
        return cls(
            progress=float(data.get("progress", 0.0)),
            status=str(data.get("status", "PENDING")),
            current=data.get("current"),
            total=data.get("total"),
            message=str(data.get("message", "")),
            meta=dict(data.get("meta") or {}),
        )


# --- errors on the wire -------------------------------------------------------------------

_REMOTE_TRACEBACK_NOTE = "Remote traceback:\n"
_MAX_TRACEBACK_CHARS = 20_000
_MAX_DEPTH = 8


def _is_plain(value: object, depth: int = 0) -> bool:
    """True for values every serializer carries unchanged (modulo tuples becoming lists)."""
    if depth > _MAX_DEPTH:
        return False
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__qualname__}>"


def encode_error(exc: BaseException, *, _depth: int = 0) -> dict[str, Any]:
    """Describe an exception as plain data: type, message, args, traceback text.

    ``args`` is None when they are not plain data; plain public instance attributes and
    ``__notes__`` travel too, and exception groups carry their members.
    """
    exc_type = type(exc)
    notes: list[str] = []
    remote_tb: str | None = None
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, str) and note.startswith(_REMOTE_TRACEBACK_NOTE):
            remote_tb = note[len(_REMOTE_TRACEBACK_NOTE) :]
        elif isinstance(note, str):
            notes.append(note)
    if remote_tb is None:
        try:
            remote_tb = "".join(traceback.format_exception(exc))
        except Exception:
            remote_tb = ""
    extra = {
        name: value
        for name, value in getattr(exc, "__dict__", {}).items()
        if not name.startswith("_") and _is_plain(value)
    }
    data: dict[str, Any] = {
        "module": exc_type.__module__,
        "qualname": exc_type.__qualname__,
        "message": _safe_str(exc),
        "args": list(exc.args) if _is_plain(exc.args) else None,
        "attrs": extra,
        "notes": notes,
        "traceback": remote_tb[-_MAX_TRACEBACK_CHARS:],
    }
    if isinstance(exc, BaseExceptionGroup) and _depth < _MAX_DEPTH:
        data["group_message"] = exc.message
        data["exceptions"] = [encode_error(e, _depth=_depth + 1) for e in exc.exceptions]
    return data


def _find_exception_type(module: str, qualname: str) -> type[Exception] | None:
    """The named exception class, if it can be found without running unexpected code.

    A module is used if it is already imported, or imported if its top-level package
    already is (so a peer cannot make us import e.g. ``antigravity``). Only ``Exception``
    subclasses qualify: a remote ``KeyboardInterrupt``, ``SystemExit`` or ``trio.Cancelled``
    would stop or cancel the client instead of reporting a failed task.
    """
    if not all(part.isidentifier() for part in module.split(".")):
        return None
    if not all(part.isidentifier() for part in qualname.split(".")):
        return None  # e.g. "f.<locals>.Error": not reachable by name
    mod = sys.modules.get(module)
    if mod is None:
        if module.partition(".")[0] not in sys.modules:
            return None
        try:
            mod = importlib.import_module(module)
        except Exception:
            return None
    obj: object = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None


def _restore_attrs(exc: BaseException, data: Mapping[str, Any]) -> None:
    for name, value in dict(data.get("attrs") or {}).items():
        if isinstance(name, str) and not name.startswith("_"):
            try:
                if getattr(exc, name, object()) != value:
                    setattr(exc, name, value)
            except Exception:
                pass  # read-only or odd attribute: the message still tells the story


def _restore_notes(exc: BaseException, data: Mapping[str, Any]) -> None:
    for note in data.get("notes") or ():
        if isinstance(note, str):
            exc.add_note(note)
    tb = data.get("traceback")
    if isinstance(tb, str) and tb:
        exc.add_note(_REMOTE_TRACEBACK_NOTE + tb)


def _build(cls: type[Exception], data: Mapping[str, Any], message: str) -> Exception:
    """Rebuild via the constructor, or via ``__new__`` if that reproduces the message better.

    ``cls(*args)`` is what pickle does, but it misreads classes whose ``__init__`` takes
    something other than their ``args``; setting ``args`` and attributes directly fixes those.
    """
    args = data.get("args")
    call_args = tuple(args) if isinstance(args, list | tuple) else (message,)
    built: Exception | None = None
    try:
        built = cls(*call_args)
        if not isinstance(built, cls):
            built = None
        else:
            _restore_attrs(built, data)
            if _safe_str(built) == message:
                return built
    except Exception:
        built = None
    try:
        bare = cls.__new__(cls, *call_args)
        bare.args = call_args
        _restore_attrs(bare, data)
        if built is None or _safe_str(bare) == message:
            return bare
    except Exception:
        pass
    if built is not None:
        return built
    return RemoteTaskError(f"{cls.__module__}.{cls.__qualname__}", message)


def _decode(data: Mapping[str, Any], depth: int) -> Exception:
    module = data.get("module")
    qualname = data.get("qualname")
    message = data.get("message")
    module = module if isinstance(module, str) else "builtins"
    qualname = qualname if isinstance(qualname, str) else "Exception"
    message = message if isinstance(message, str) else ""
    cls = _find_exception_type(module, qualname)

    members = data.get("exceptions")
    exc: Exception
    if isinstance(members, list) and members and depth < _MAX_DEPTH:
        children = [_decode(m if isinstance(m, Mapping) else {}, depth + 1) for m in members]
        group_message = data.get("group_message")
        group_message = group_message if isinstance(group_message, str) else message
        exc = ExceptionGroup(group_message, children)
        if cls is not None and issubclass(cls, ExceptionGroup):
            with contextlib.suppress(Exception):
                exc = cls(group_message, children)
    elif cls is not None:
        exc = _build(cls, data, message)
    else:
        type_name = qualname if module == "builtins" else f"{module}.{qualname}"
        exc = RemoteTaskError(type_name, message)
    _restore_notes(exc, data)
    return exc


def decode_error(data: Mapping[str, Any]) -> BaseException:
    """Rebuild an exception described by ``encode_error``; never raises.

    The original type is used when it is an ``Exception`` subclass that can be found
    safely (see ``_find_exception_type``), otherwise a ``RemoteTaskError`` stands in.
    """
    try:
        return _decode(data, 0)
    except Exception as exc:  # malformed description: degrade, never crash the reader
        return RemoteTaskError("<undecodable error>", f"{data!r:.200} ({exc!r})")


# --- results and messages on the wire -----------------------------------------------------

_WIRE_VERSION = 1


def _time_to_wire(value: pendulum.DateTime | None) -> list[Any] | None:
    return None if value is None else encode_datetime(value)


def _time_from_wire(value: object) -> pendulum.DateTime | None:
    if value is None:
        return None
    if isinstance(value, pendulum.DateTime):  # a serializer that keeps datetimes itself
        return value
    if isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[0], str):
        return decode_datetime(value[0], value[1] if isinstance(value[1], str) else None)
    raise ValueError(f"not a wire datetime: {value!r:.100}")


def result_to_wire(result: TaskiqResult[Any], serializer: TaskiqSerializer) -> bytes:
    """Serialize a result; the return value and labels go through ``serializer``.

    Raises ``SerializationError`` if they cannot be serialized (the caller should then
    store an error result in its place).
    """
    payload = {
        "v": _WIRE_VERSION,
        "task_id": result.task_id,
        "is_err": result.is_err,
        "status": str(result.status),
        "return_value": result.return_value,
        "execution_time": result.execution_time,
        "labels": result.labels,
        "error": None if result.error is None else encode_error(result.error),
        "tries": result.tries,
        "worker_id": result.worker_id,
        "enqueue_time": _time_to_wire(result.enqueue_time),
        "start_time": _time_to_wire(result.start_time),
        "finish_time": _time_to_wire(result.finish_time),
    }
    try:
        return serializer.dumpb(payload)
    except Exception as exc:  # user serializers may not raise SerializationError
        raise SerializationError(
            f"Cannot serialize the result of task {result.task_id!r}: {exc}"
        ) from exc


#: What a decoded map may be; ``dict`` first, as ``isinstance`` against an ABC is slow.
_MAP = (dict, Mapping)


def _field(payload: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = payload[key]
    if not isinstance(value, kind):
        raise TypeError(f"{key} has type {type(value).__name__}")
    return value


def _unreadable_result(task_id: str, message: str) -> TaskiqResult[Any]:
    return TaskiqResult(
        is_err=True,
        return_value=None,
        error=SerializationError(message),
        task_id=task_id,
    )


def result_from_wire(data: bytes, serializer: TaskiqSerializer) -> TaskiqResult[Any]:
    """Rebuild a result; undecodable data gives an error result, never an exception."""
    try:
        payload = serializer.loadb(data)
    except Exception as exc:
        return _unreadable_result("", f"Stored result cannot be deserialized: {exc}")
    if not isinstance(payload, Mapping):
        return _unreadable_result("", "Stored result is not a map")
    task_id = payload.get("task_id")
    task_id = task_id if isinstance(task_id, str) else ""
    try:
        error_data = payload.get("error")
        worker_id = payload.get("worker_id")
        return TaskiqResult(
            task_id=task_id,
            is_err=_field(payload, "is_err", bool),
            status=_field(payload, "status", str),
            return_value=payload.get("return_value"),
            execution_time=float(_field(payload, "execution_time", (int, float))),
            labels=dict(_field(payload, "labels", Mapping)),
            error=None if error_data is None else decode_error(error_data),
            tries=_field(payload, "tries", int),
            worker_id=worker_id if isinstance(worker_id, str) else None,
            enqueue_time=_time_from_wire(payload.get("enqueue_time")),
            start_time=_time_from_wire(payload.get("start_time")),
            finish_time=_time_from_wire(payload.get("finish_time")),
        )
    except Exception as exc:
        return _unreadable_result(task_id, f"Result of task {task_id!r} cannot be rebuilt: {exc!r}")


def message_to_wire(message: TaskiqMessage, serializer: TaskiqSerializer) -> bytes:
    """Serialize a task message; raises ``SerializationError`` naming the bad argument type."""
    payload = {
        "task_id": message.task_id,
        "task_name": message.task_name,
        "labels": message.labels,
        "args": message.args,
        "kwargs": message.kwargs,
    }
    try:
        return serializer.dumpb(payload)
    except Exception as exc:
        raise SerializationError(
            f"Cannot serialize the arguments of task {message.task_name!r}: {exc}"
        ) from exc


def _raise_bad_message(reason: str) -> NoReturn:
    raise SerializationError(f"Malformed task message: {reason}")


def message_from_wire(data: bytes, serializer: TaskiqSerializer) -> TaskiqMessage:
    """Rebuild a task message; raises ``SerializationError`` if it is malformed."""
    try:
        payload = serializer.loadb(data)
    except Exception as exc:
        _raise_bad_message(str(exc))
    if not isinstance(payload, _MAP):
        _raise_bad_message("not a map")
    try:
        return TaskiqMessage(
            task_id=_field(payload, "task_id", str),
            task_name=_field(payload, "task_name", str),
            labels=dict(_field(payload, "labels", _MAP)),
            args=_field(payload, "args", (list, tuple)),
            kwargs=dict(_field(payload, "kwargs", _MAP)),
        )
    except (KeyError, TypeError) as exc:
        _raise_bad_message(repr(exc))
