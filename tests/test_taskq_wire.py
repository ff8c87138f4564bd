"""The task queue's messages and replies cross a link: each encodes with the wire's
stable tags and comes back equal."""

from __future__ import annotations

from typing import Any

import attrs
import msgpack
import pendulum
import pytest

from actors import protocol, wire
from actors.exceptions import RemoteTaskError, ResultGetError, TaskAbortedError
from actors.lifecycle import TaskStatus
from actors.protocol import (
    Abort,
    Accepted,
    Barrier,
    BrokerMessage,
    CancelRun,
    CopyResult,
    Counters,
    Drain,
    EncodedResult,
    Enqueue,
    Finished,
    FinishRuns,
    GetCounters,
    GetOverview,
    GetProgress,
    GetResult,
    GetSchedules,
    GetTaskEvents,
    Inspect,
    IsReady,
    Kick,
    ListTasks,
    LiveTask,
    MarkRead,
    MinuteRow,
    NameCounters,
    NodeLost,
    NoResult,
    Overview,
    Pushed,
    Reannounce,
    ReclaimOver,
    Run,
    RunEnded,
    Runs,
    ScheduleList,
    ScheduleRow,
    SchedulesReport,
    SetProgress,
    Status,
    StatusReply,
    StopWaiting,
    StoreResult,
    TaskEvent,
    TaskEvents,
    TaskPage,
    TaskRow,
    Tick,
    Unschedule,
    WaitResult,
    Watch,
    WorkerLeaving,
    WorkerReady,
    WorkerRow,
    WorkerTasks,
)
from actors.result import TaskiqResult, TaskProgress, result_to_wire
from actors.results import open_result
from actors.runtime import ActorRef
from actors.serializers import JSONSerializer

NOW = pendulum.datetime(2026, 1, 2, 3, 4, 5, tz="Europe/Paris")
KICKED = BrokerMessage("t1", "tasks:add", b'{"args": [1, 2]}', {"priority": 3, "retry": True})

SAMPLES: list[Any] = [
    KICKED,
    Enqueue(KICKED),
    Kick(KICKED, "client-1", "taskq.acks-1", resend=True),
    Accepted(["t1", "t2"]),
    WorkerReady("worker-1", "taskq.worker-0", "w0", 30, 2, ["tasks:add"], ["t1", "t2"]),
    WorkerTasks("w0", ["tasks:add", "tasks:mul"]),
    RunEnded("t1", "again", delay=1.5, labels={"x": 1}, delivery=3),
    Finished("w0", [RunEnded("t1", "done", is_err=True), RunEnded("t2", "aborted")]),
    Tick(),
    NodeLost("worker-1"),
    Abort("t1"),
    Inspect("t1"),
    LiveTask(KICKED, 2, TaskStatus.SCHEDULED, NOW, NOW.add(seconds=5), ["a"], ["b", "c"]),
    LiveTask(KICKED, 0, TaskStatus.QUEUED, NOW, None, [], []),
    Status("t1"),
    StatusReply(TaskStatus.RUNNING),
    StatusReply(None),
    Drain(),
    WorkerLeaving("worker-1"),
    Run(KICKED, 1, NOW),
    Runs([Run(KICKED, 1, NOW)], 4),
    CancelRun("t1"),
    FinishRuns(),
    Reannounce(),
    ReclaimOver(),
    StoreResult("t1", EncodedResult(b"\x00bytes", is_err=False), ttl=2.5),
    StoreResult("t1", None),
    EncodedResult(b"data", is_err=True),
    NoResult("task t1 ended without a result"),
    CopyResult("t1", "t2", None),
    WaitResult("t1", "waiter-1"),
    Barrier(),
    StopWaiting("t1", "waiter-1"),
    Watch("client-1", "taskq.acks-1", ["t1", "t2"]),
    Pushed(["t1", "t2"], [EncodedResult(b"r", is_err=False), NoResult("gone")]),
    MarkRead(["t1", "t2"]),
    GetResult("t1", with_logs=True),
    IsReady("t1"),
    SetProgress("t1", TaskProgress(progress=0.5, current=1, total=2, meta={"k": [1]})),
    GetProgress("t1"),
    TaskProgress(progress=1.0, status="DONE"),
    GetOverview(5),
    Overview(
        "hub",
        [(3, 1), (0, 1_000_000)],
        2,
        1,
        0,
        4,
        [MinuteRow(1_800_000_000.0, 5, 1, 2, 0)],
        [WorkerRow("w0", "worker-1", 30, 2, 1_800_000_000.5, True)],
        ["worker-1"],
        1,
        {"taskq.broker": 3},
    ),
    ListTasks("queued", "add", "10:t1", 20),
    TaskPage([TaskRow("t1", "tasks:add", "running", NOW, 1, 3, "w0")], "1:t1"),
    TaskPage([], None),
    GetTaskEvents("t1"),
    TaskEvents([TaskEvent(1_800_000_000.5, "tasks:add", "started", "w0")]),
    TaskEvent(1_800_000_000.5, "tasks:add", "kicked"),
    GetCounters(),
    Counters([NameCounters("tasks:add", 3, 3, 2, 1, 0, 0, 0.25, [1] * 15)]),
    NameCounters("tasks:add", 0, 0, 0, 0, 0, 0, 0.0, [0] * 15),
    MinuteRow(0.0, 0, 0, 0, 0),
    WorkerRow("w0", "hub", 1, 0, 0.0, False),
    TaskRow("t1", "tasks:add", "succeeded", None),
    ScheduleRow("s1", "tasks:add", "every 30 s", NOW, "scheduler-1"),
    ScheduleRow("s2", "tasks:add", "once at 2026-01-02", None, "scheduler-1"),
    SchedulesReport(
        ActorRef("scheduler-1", "scheduler.actor"), [ScheduleRow("s1", "a", "", None, "n")]
    ),
    GetSchedules(),
    ScheduleList([]),
    Unschedule("s1"),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda message: type(message).__name__)
def test_each_message_round_trips_through_the_wire_under_a_stable_tag(message: Any) -> None:
    body = wire.encode_value(message)
    assert wire.decode_value(body, ActorRef) == message
    assert msgpack.unpackb(body)[0] == f"taskq.{type(message).__name__}"


def test_every_protocol_class_has_a_sample() -> None:
    classes = {
        cls
        for cls in vars(protocol).values()
        if isinstance(cls, type) and attrs.has(cls) and cls.__module__ == protocol.__name__
    }
    assert classes <= {type(message) for message in SAMPLES}


def test_a_result_object_does_not_cross_a_link() -> None:
    """Results with exception objects cross only encoded (the hub never decodes them)."""
    result = TaskiqResult(is_err=True, return_value=None, error=ValueError("x"), task_id="t1")
    with pytest.raises(wire.WireError):
        wire.encode_value(StoreResult("t1", result))


def test_an_encoded_result_opens_on_the_client_with_its_error() -> None:
    serializer = JSONSerializer()
    error = TaskAbortedError("task t1 was aborted")
    result = TaskiqResult(is_err=True, return_value=None, error=error, task_id="t1")
    crossed = wire.decode_value(
        wire.encode_value(EncodedResult(result_to_wire(result, serializer), True))
    )
    opened = open_result(crossed, "t2", serializer)
    assert opened.task_id == "t2"  # copied under a second id (``otherwise``)
    assert isinstance(opened.error, TaskAbortedError)
    assert str(opened.error) == "task t1 was aborted"


def test_an_error_type_the_client_cannot_import_opens_as_a_remote_task_error() -> None:
    serializer = JSONSerializer()
    stored = TaskiqResult(is_err=True, return_value=None, error=ValueError("boom"), task_id="t1")
    data = serializer.loadb(result_to_wire(stored, serializer))
    data["error"]["module"] = "tasks_only_on_the_worker"
    encoded = EncodedResult(serializer.dumpb(data), True)
    assert isinstance(open_result(encoded, "t1", serializer).error, RemoteTaskError)


def test_no_result_opens_as_taskiqs_error() -> None:
    with pytest.raises(ResultGetError, match="ended without a result"):
        open_result(NoResult("task t1 ended without a result"), "t1", JSONSerializer())


HOT = [
    Kick(KICKED, "client-1", "taskq.acks-1", resend=True),
    Run(KICKED, 1, NOW),
    RunEnded("t1", "again", delay=1.5, labels={"x": 1}, delivery=3),
    StoreResult("t1", EncodedResult(b"\x00bytes", is_err=True), ttl=2.5),
]


@pytest.mark.parametrize("message", HOT, ids=lambda message: type(message).__name__)
def test_the_messages_every_task_sends_cross_as_lists_and_each_field_is_checked(
    message: Any,
) -> None:
    tag, fields = msgpack.unpackb(wire.encode_value(message))
    assert type(fields) is list
    assert wire.decode_value(msgpack.packb([tag, fields])) == message
    malformed = [fields[:-1], [*fields, 1], "not a list"]
    for index, value in enumerate(fields):
        wrong = "not this" if type(value) in (dict, type(None)) else {"not": "this"}
        malformed.append([*fields[:index], wrong, *fields[index + 1 :]])
    for payload in malformed:
        with pytest.raises(wire.WireError):
            wire.decode_value(msgpack.packb([tag, payload]))


def test_a_run_ended_with_an_unknown_outcome_or_a_run_with_a_bad_time_is_refused() -> None:
    tag, ended = msgpack.unpackb(wire.encode_value(HOT[2]))
    with pytest.raises(wire.WireError, match="outcome"):
        wire.decode_value(msgpack.packb([tag, ["t1", "later", *ended[2:]]]))
    tag, run = msgpack.unpackb(wire.encode_value(HOT[1]))
    with pytest.raises(wire.WireError):
        wire.decode_value(msgpack.packb([tag, [*run[:-1], ["yesterday", "UTC"]]]))
