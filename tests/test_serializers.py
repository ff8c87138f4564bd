"""Serializers round-trip plain data and date/time values, and fail with SerializationError."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import uuid
import zoneinfo
from typing import Any

import attrs
import pendulum
import pytest
from hypothesis import given, strategies as st

from actors.exceptions import SecurityError, SerializationError
from actors.serializers import (
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    TaskiqSerializer,
    _from_plain,
    _may_hold_a_long_integer,
    _to_plain,
    decode_datetime,
    encode_datetime,
    iso_format,
    serializer_by_name,
)

TAGGING = [JSONSerializer(), MsgpackSerializer()]


def roundtrip(serializer: TaskiqSerializer, value: Any) -> Any:
    data = serializer.dumpb(value)
    assert isinstance(data, bytes)
    return serializer.loadb(data)


@pytest.mark.parametrize("serializer", TAGGING, ids=lambda s: s.name)
@pytest.mark.parametrize(
    "value",
    [None, True, 0, -(2**40), 1.5, "héllo ✓", [1, "a", None], {"a": {"b": [1.0, 2.0]}}],
)
def test_plain_values_roundtrip(serializer: TaskiqSerializer, value: Any) -> None:
    assert roundtrip(serializer, value) == value


@pytest.mark.parametrize("serializer", TAGGING, ids=lambda s: s.name)
def test_pendulum_datetime_keeps_named_zone(serializer: TaskiqSerializer) -> None:
    value = pendulum.datetime(2024, 7, 1, 9, 30, 15, 123456, tz="Europe/Paris")
    back = roundtrip(serializer, {"when": value})["when"]
    assert isinstance(back, pendulum.DateTime)
    assert back == value
    assert back.timezone_name == "Europe/Paris"
    assert back.utcoffset() == datetime.timedelta(hours=2)


@pytest.mark.parametrize("serializer", TAGGING, ids=lambda s: s.name)
def test_ambiguous_wall_time_keeps_its_fold(serializer: TaskiqSerializer) -> None:
    # 02:30 happens twice in Paris on 2024-10-27; the second one is fold=1 (+01:00).
    value = pendulum.datetime(2024, 10, 27, 2, 30, tz="Europe/Paris", fold=1)
    back = roundtrip(serializer, value)
    assert back == value
    assert back.utcoffset() == datetime.timedelta(hours=1)
    assert back.timezone_name == "Europe/Paris"


@pytest.mark.parametrize("serializer", TAGGING, ids=lambda s: s.name)
def test_stdlib_datetimes(serializer: TaskiqSerializer) -> None:
    zoned = datetime.datetime(2024, 1, 5, 8, 0, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
    plus_three = datetime.timezone(datetime.timedelta(hours=3))
    fixed = datetime.datetime(2024, 1, 5, 8, 0, tzinfo=plus_three)
    naive = datetime.datetime(2024, 1, 5, 8, 0)
    back_zoned, back_fixed, back_naive = roundtrip(serializer, [zoned, fixed, naive])
    assert back_zoned == zoned
    assert back_zoned.timezone_name == "America/New_York"
    assert back_fixed == fixed
    assert back_fixed.utcoffset() == datetime.timedelta(hours=3)
    assert back_naive.tzinfo is None
    assert back_naive == naive


@pytest.mark.parametrize("serializer", TAGGING, ids=lambda s: s.name)
def test_date_time_and_duration(serializer: TaskiqSerializer) -> None:
    values = [
        datetime.date(2024, 2, 29),
        datetime.time(23, 59, 1, 5),
        datetime.timedelta(days=2, seconds=5, microseconds=7),
        pendulum.duration(hours=-3),
    ]
    back = roundtrip(serializer, values)
    assert back == values
    assert isinstance(back[0], pendulum.Date)
    assert isinstance(back[2], pendulum.Duration)


@attrs.define
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Box:
    corner: Point
    created: datetime.datetime


class Color(enum.Enum):
    RED = "red"


@pytest.mark.parametrize("serializer", TAGGING, ids=lambda s: s.name)
def test_records_and_enums_become_plain_data(serializer: TaskiqSerializer) -> None:
    created = pendulum.datetime(2024, 1, 1, tz="Asia/Tokyo")
    back = roundtrip(serializer, {"box": Box(Point(1, 2), created), "color": Color.RED})
    assert back == {"box": {"corner": {"x": 1, "y": 2}, "created": created}, "color": "red"}
    assert back["box"]["created"].timezone_name == "Asia/Tokyo"


@pytest.mark.parametrize("serializer", TAGGING, ids=lambda s: s.name)
def test_tuples_come_back_as_lists(serializer: TaskiqSerializer) -> None:
    assert roundtrip(serializer, (1, (2, 3))) == [1, [2, 3]]


class Opaque:
    pass


@pytest.mark.parametrize("serializer", TAGGING, ids=lambda s: s.name)
@pytest.mark.parametrize(("value", "type_name"), [(Opaque(), "Opaque"), ({1, 2}, "set")])
def test_unserializable_value_names_its_type(
    serializer: TaskiqSerializer, value: Any, type_name: str
) -> None:
    with pytest.raises(SerializationError, match=type_name):
        serializer.dumpb({"args": [1, value]})


def test_json_rejects_non_string_keys_and_cycles() -> None:
    with pytest.raises(SerializationError, match="tuple"):
        JSONSerializer().dumpb({(1, 2): "x"})
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(SerializationError):
        JSONSerializer().dumpb(cycle)


# What the standard library alone writes and reads: JSONSerializer's reference.
def stdlib_dumps(value: Any) -> bytes:
    return json.dumps(value, default=_to_plain, ensure_ascii=False, separators=(",", ":")).encode()


def stdlib_loads(data: bytes) -> Any:
    return json.loads(data, object_hook=_from_plain)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: past 64 bits too
    | st.floats()  # NaN and infinities too
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_json_writes_and_reads_what_the_standard_library_does(value: Any) -> None:
    serializer = JSONSerializer()
    written = serializer.dumpb(value)
    # repr, so a NaN compares equal to a NaN
    assert repr(stdlib_loads(written)) == repr(stdlib_loads(stdlib_dumps(value)))
    assert repr(serializer.loadb(written)) == repr(stdlib_loads(written))
    assert repr(serializer.loadb(stdlib_dumps(value))) == repr(stdlib_loads(stdlib_dumps(value)))


@pytest.mark.parametrize(
    "value",
    [
        [float("nan"), float("inf"), float("-inf")],  # orjson would write null
        {"error": None, "values": [1.5, float("nan")]},  # a None beside them
        2**64 + 1,  # orjson refuses to write it, and reads it back as a float
        -(2**70),
        [4.1191000491380695e-05, 2**64 + 1],  # a fraction's long digits beside a long int
        {1: "int key"},  # orjson refuses; the standard library writes "1"
        ["null", "__datetime__"],  # strings that only look like what sends us the long way
        uuid.UUID(int=7),
    ],
)
def test_json_edge_values_match_the_standard_library(value: Any) -> None:
    serializer = JSONSerializer()
    assert repr(serializer.loadb(serializer.dumpb(value))) == repr(
        stdlib_loads(stdlib_dumps(value))
    )


@pytest.mark.parametrize(
    ("data", "long"),
    [
        (b'{"execution_time":0.00004119100049138069}', False),  # orjson's digits
        (b'{"execution_time":0.0012345678901234567}', False),
        (b"[12345678901234567890]", True),
        (b"[-1234567890123456789012]", True),
        (b'{"n":1e+1234567890123456789}', True),
        (b'["id 1234567890123456789"]', True),  # in a string: the long way, to be safe
        (b"[123456789012345678]", False),  # 18 digits fit 64 bits
    ],
)
def test_json_looks_closer_at_long_digit_runs(data: bytes, long: bool) -> None:
    """Only a run of 19 digits that may be an integer sends JSON to the standard library."""
    assert _may_hold_a_long_integer(data) is long


def test_json_reads_an_escaped_lone_surrogate_and_refuses_to_write_one() -> None:
    serializer = JSONSerializer()
    assert serializer.loadb(b'["\\ud800"]') == ["\ud800"]  # orjson alone would refuse
    with pytest.raises(SerializationError):
        serializer.dumpb(["\ud800"])


def test_json_reads_a_tag_spelled_with_escapes() -> None:
    data = b'{"\\u005f_date__": "2020-01-02"}'
    assert JSONSerializer().loadb(data) == stdlib_loads(data) == pendulum.Date(2020, 1, 2)


def test_deep_nesting_is_written_and_read() -> None:
    deep: Any = []
    for _ in range(300):  # past orjson's limit of 254 levels
        deep = [deep]
    serializer = JSONSerializer()
    assert serializer.loadb(serializer.dumpb(deep)) == deep


def test_json_reads_what_other_writers_write() -> None:
    serializer = JSONSerializer()
    assert serializer.loadb(b' \n{"a": [1, 2]}\n ') == {"a": [1, 2]}
    for bad in (b"", b"  ", b'{"a": 1} trailing', b"[1,]"):
        with pytest.raises(SerializationError):
            serializer.loadb(bad)


@pytest.mark.parametrize("serializer", [*TAGGING, PickleSerializer()], ids=lambda s: s.name)
def test_malformed_input_raises_serialization_error(serializer: TaskiqSerializer) -> None:
    with pytest.raises(SerializationError):
        serializer.loadb(b"\xc1\xff{not valid")


@pytest.mark.parametrize("serializer", TAGGING, ids=lambda s: s.name)
def test_map_that_only_looks_like_a_tag_is_left_alone(serializer: TaskiqSerializer) -> None:
    value = {"__datetime__": "not a date", "tz": None}
    assert roundtrip(serializer, value) == value
    assert roundtrip(serializer, {"__date__": 5}) == {"__date__": 5}


def test_unknown_zone_degrades_to_fixed_offset() -> None:
    back = decode_datetime("2024-07-01T09:30:00+02:00", "Mars/Olympus_Mons")
    assert back.utcoffset() == datetime.timedelta(hours=2)
    assert back == pendulum.datetime(2024, 7, 1, 7, 30, tz="UTC")


def test_msgpack_carries_bytes() -> None:
    assert roundtrip(MsgpackSerializer(), {"blob": b"\x00\x01"}) == {"blob": b"\x00\x01"}


def test_pickle_roundtrips_arbitrary_objects_and_reports_failures() -> None:
    value = {"set": {1, 2}, "point": Point(3, 4), "tuple": (1, 2)}
    assert roundtrip(PickleSerializer(), value) == value
    with pytest.raises(SerializationError, match="function"):
        PickleSerializer().dumpb(lambda: None)


def test_serializer_by_name_refuses_pickle_unless_allowed() -> None:
    assert isinstance(serializer_by_name("json"), JSONSerializer)
    assert isinstance(serializer_by_name("msgpack"), MsgpackSerializer)
    with pytest.raises(SecurityError):
        serializer_by_name("pickle")
    assert isinstance(serializer_by_name("pickle", allow_pickle=True), PickleSerializer)
    with pytest.raises(SerializationError, match="yaml"):
        serializer_by_name("yaml")


@given(st.datetimes(timezones=st.sampled_from([pendulum.UTC, datetime.UTC])))
def test_utc_times_read_quickly_are_the_times_read_the_long_way(value: datetime.datetime) -> None:
    instant = pendulum.instance(value).in_timezone("UTC")
    assert iso_format(instant) == instant.isoformat()
    back = decode_datetime(*encode_datetime(instant))
    assert (back, back.tzinfo, type(back)) == (instant, pendulum.UTC, pendulum.DateTime)
    assert (back.year, back.hour, back.microsecond) == (value.year, value.hour, value.microsecond)
