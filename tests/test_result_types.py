"""Messages, results and progress, and how errors and results survive the wire."""

from __future__ import annotations

import sys
from typing import Any

import pendulum
import pytest

from actors.exceptions import (
    RemoteTaskError,
    SerializationError,
    TaskAbortedError,
    TaskiqError,
    TaskiqResultTimeoutError,
    UnknownTaskError,
)
from actors.result import (
    TaskiqMessage,
    TaskiqResult,
    TaskProgress,
    decode_error,
    encode_error,
    message_from_wire,
    message_to_wire,
    result_from_wire,
    result_to_wire,
)
from actors.serializers import JSONSerializer, MsgpackSerializer, TaskiqSerializer

SERIALIZERS = [JSONSerializer(), MsgpackSerializer()]


class PaymentError(Exception):
    """A user's exception, importable from this module."""

    def __init__(self, order_id: int, reason: str) -> None:
        super().__init__(f"order {order_id}: {reason}")
        self.order_id = order_id
        self.reason = reason


def raised(exc: BaseException) -> BaseException:
    """``exc`` with a real traceback, as a worker would have it."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def roundtrip_error(exc: BaseException) -> BaseException:
    return decode_error(encode_error(raised(exc)))


# --- TaskiqMessage, TaskiqResult, TaskProgress ---------------------------------------------


def test_message_defaults_and_tuple_args() -> None:
    message = TaskiqMessage(task_id="1", task_name="add", args=(1, 2))
    assert message.args == [1, 2]
    assert message.kwargs == {}
    assert message.labels == {}


@pytest.mark.parametrize(
    ("is_err", "error", "status"),
    [
        (False, None, "done"),
        (True, ValueError("x"), "error"),
        (True, TaskAbortedError(), "aborted"),
    ],
)
def test_result_status_follows_outcome(
    is_err: bool, error: BaseException | None, status: str
) -> None:
    result = TaskiqResult(is_err=is_err, return_value=None, error=error)
    assert result.status == status
    assert TaskiqResult(is_err=is_err, return_value=None, status="custom").status == "custom"


def test_raise_for_error() -> None:
    ok = TaskiqResult(is_err=False, return_value=3)
    assert ok.raise_for_error() is ok
    failed = TaskiqResult(is_err=True, return_value=None, error=KeyError("k"))
    with pytest.raises(KeyError):
        failed.raise_for_error()
    no_error = TaskiqResult(is_err=True, return_value=None, task_id="t9")
    with pytest.raises(TaskiqError, match="t9"):
        no_error.raise_for_error()


def test_result_defaults_match_taskiq() -> None:
    result: TaskiqResult[int] = TaskiqResult(is_err=False, return_value=1, execution_time=0.5)
    assert result.log is None
    assert result.error is None
    assert result.labels == {}
    assert result.tries == 1
    assert result.worker_id is None
    assert result.enqueue_time is result.start_time is result.finish_time is None


def test_progress_to_dict_from_dict() -> None:
    progress: TaskProgress[Any] = TaskProgress(
        progress=0.25, status="RUNNING", current=5, total=20, message="chunk 5", meta={"k": 1}
    )
    data = progress.to_dict()
    assert data == {
        "progress": 0.25,
        "status": "RUNNING",
        "current": 5,
        "total": 20,
        "message": "chunk 5",
        "meta": {"k": 1},
    }
    assert TaskProgress.from_dict(data) == progress
    # Through a serializer and back, and tolerant of missing or extra keys.
    serializer = JSONSerializer()
    assert TaskProgress.from_dict(serializer.loadb(serializer.dumpb(data))) == progress
    assert TaskProgress.from_dict({"progress": 1, "extra": True}) == TaskProgress(progress=1.0)


def test_progress_defaults_and_validation() -> None:
    progress: TaskProgress[Any] = TaskProgress()
    assert (progress.progress, progress.status, progress.message) == (0.0, "PENDING", "")
    assert progress.current is None and progress.total is None
    assert TaskProgress(meta=None).meta == {}
    with pytest.raises(ValueError, match="between"):
        TaskProgress(progress=1.5)
    with pytest.raises(ValueError, match="between"):
        TaskProgress(progress=float("nan"))


# --- errors on the wire --------------------------------------------------------------------


def test_builtin_error_keeps_type_and_args() -> None:
    back = roundtrip_error(ValueError("bad value", 3))
    assert type(back) is ValueError
    assert back.args == ("bad value", 3)
    back_key = roundtrip_error(KeyError("missing"))
    assert type(back_key) is KeyError and str(back_key) == "'missing'"


def test_module_level_custom_error_keeps_type_message_and_attributes() -> None:
    back = roundtrip_error(PaymentError(42, "card declined"))
    assert type(back) is PaymentError
    assert str(back) == "order 42: card declined"
    assert back.order_id == 42
    assert back.reason == "card declined"


def test_project_errors_keep_their_attributes() -> None:
    unknown = roundtrip_error(UnknownTaskError("tasks:nope"))
    assert isinstance(unknown, UnknownTaskError) and unknown.task_name == "tasks:nope"
    timeout = roundtrip_error(TaskiqResultTimeoutError(timeout=2.5))
    assert isinstance(timeout, TaskiqResultTimeoutError) and timeout.timeout == 2.5


def test_remote_traceback_becomes_a_note_once() -> None:
    def failing_step() -> None:
        raise RuntimeError("deep failure")

    try:
        failing_step()
    except RuntimeError as exc:
        back = decode_error(encode_error(exc))
    assert type(back) is RuntimeError
    notes = back.__notes__
    assert len(notes) == 1 and "failing_step" in notes[0]
    # Sending the rebuilt error on again keeps the original traceback, not a second copy.
    again = decode_error(encode_error(back))
    assert len(again.__notes__) == 1
    assert "failing_step" in again.__notes__[0]


def test_user_notes_travel() -> None:
    exc = ValueError("x")
    exc.add_note("while parsing line 3")
    back = roundtrip_error(exc)
    assert back.__notes__[0] == "while parsing line 3"


def test_unknown_type_degrades_to_remote_task_error() -> None:
    data = encode_error(raised(ValueError("original message")))
    data["module"], data["qualname"] = "no_such_package.errors", "VanishedError"
    back = decode_error(data)
    assert isinstance(back, RemoteTaskError)
    assert back.type_name == "no_such_package.errors.VanishedError"
    assert back.message == "original message"
    assert str(back) == "no_such_package.errors.VanishedError: original message"


def test_local_class_degrades_to_remote_task_error() -> None:
    class LocalError(Exception):
        pass

    back = roundtrip_error(LocalError("inner"))
    assert isinstance(back, RemoteTaskError)
    assert "LocalError" in back.type_name and back.message == "inner"


@pytest.mark.parametrize(
    ("module", "qualname"),
    [("os", "system"), ("builtins", "dict"), ("builtins", "KeyboardInterrupt"), ("os", "sep")],
)
def test_refuses_non_exceptions_and_base_exceptions(module: str, qualname: str) -> None:
    back = decode_error({"module": module, "qualname": qualname, "message": "m", "args": ["m"]})
    assert isinstance(back, RemoteTaskError)
    assert back.message == "m"


def test_does_not_import_unrelated_modules() -> None:
    assert "antigravity" not in sys.modules
    back = decode_error({"module": "antigravity", "qualname": "Error", "message": "m"})
    assert isinstance(back, RemoteTaskError)
    assert "antigravity" not in sys.modules


def test_exception_group_keeps_members() -> None:
    group = ExceptionGroup("two failed", [ValueError("a"), PaymentError(1, "b")])
    back = roundtrip_error(group)
    assert isinstance(back, ExceptionGroup)
    assert back.message == "two failed"
    assert [type(e) for e in back.exceptions] == [ValueError, PaymentError]


@pytest.mark.parametrize(
    "data", [{}, {"module": 5, "qualname": None}, {"args": "nope"}, {"exceptions": [1, 2]}]
)
def test_malformed_error_data_never_raises(data: dict[str, Any]) -> None:
    assert isinstance(decode_error(data), BaseException)


# --- results and messages on the wire ------------------------------------------------------


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.name)
def test_result_roundtrip_keeps_fields_and_zones(serializer: TaskiqSerializer) -> None:
    enqueued = pendulum.datetime(2024, 3, 30, 23, 59, tz="Europe/Paris")
    started = pendulum.datetime(2024, 3, 31, 3, 0, 1, tz="America/New_York")
    result = TaskiqResult(
        is_err=False,
        return_value={"due": pendulum.datetime(2025, 1, 1, tz="Asia/Kolkata"), "n": [1, 2]},
        execution_time=1.25,
        labels={"priority": 3},
        task_id="abc",
        tries=2,
        worker_id="node-a/worker-1",
        enqueue_time=enqueued,
        start_time=started,
        finish_time=started.add(seconds=1),
    )
    back = result_from_wire(result_to_wire(result, serializer), serializer)
    assert back == result
    assert back.enqueue_time is not None and back.enqueue_time.timezone_name == "Europe/Paris"
    assert back.start_time is not None
    assert back.start_time.timezone_name == "America/New_York"
    assert back.return_value["due"].timezone_name == "Asia/Kolkata"


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: s.name)
def test_error_result_roundtrip(serializer: TaskiqSerializer) -> None:
    result = TaskiqResult(
        is_err=True, return_value=None, error=raised(PaymentError(7, "no funds")), task_id="e1"
    )
    back = result_from_wire(result_to_wire(result, serializer), serializer)
    assert back.is_err and back.status == "error" and back.task_id == "e1"
    with pytest.raises(PaymentError, match="order 7: no funds"):
        back.raise_for_error()


def test_unserializable_return_value_raises_serialization_error() -> None:
    result = TaskiqResult(is_err=False, return_value=object(), task_id="r1")
    with pytest.raises(SerializationError, match="r1") as info:
        result_to_wire(result, JSONSerializer())
    assert "object" in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [b"\xff\x00 not json", b"[1, 2]", b'{"task_id": "t5", "is_err": "yes"}'],
)
def test_unreadable_result_becomes_error_result(payload: bytes) -> None:
    back = result_from_wire(payload, JSONSerializer())
    assert back.is_err
    assert isinstance(back.error, SerializationError)
    if b"t5" in payload:
        assert back.task_id == "t5"
        assert "t5" in str(back.error)


def test_message_roundtrip() -> None:
    serializer = JSONSerializer()
    when = pendulum.datetime(2024, 6, 1, 12, tz="Europe/London")
    message = TaskiqMessage(
        task_id="m1", task_name="mod:fn", labels={"retry": "3"}, args=[1, when], kwargs={"a": "b"}
    )
    back = message_from_wire(message_to_wire(message, serializer), serializer)
    assert back == message
    assert back.args[1].timezone_name == "Europe/London"


def test_unserializable_argument_raises_serialization_error() -> None:
    message = TaskiqMessage(task_id="m2", task_name="mod:fn", args=[{1, 2, 3}])
    with pytest.raises(SerializationError, match="set") as info:
        message_to_wire(message, JSONSerializer())
    assert "mod:fn" in str(info.value)


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"task_id": "x"}'])
def test_malformed_message_raises_serialization_error(payload: bytes) -> None:
    with pytest.raises(SerializationError):
        message_from_wire(payload, JSONSerializer())
