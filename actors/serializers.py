"""Serializers turn task arguments and results into bytes and back.

JSON is the default. Both JSON and msgpack carry date/time values as small tagged maps so
that they come back as the same kind of value, with the same time zone:

* ``datetime`` (stdlib or pendulum) -> ``{"__datetime__": iso, "tz": zone name or None}``,
  read back as a ``pendulum.DateTime`` in the same named zone (``Europe/Paris`` stays
  ``Europe/Paris``, daylight-saving fold included); a fixed offset stays a fixed offset and
  a naive value stays naive. An unknown zone name degrades to the fixed offset.
* ``date`` -> ``{"__date__": iso}`` -> ``pendulum.Date``; ``time`` -> ``{"__time__": iso}``
  -> ``pendulum.Time``; ``timedelta`` (and ``pendulum.Duration``) ->
  ``{"__timedelta__": [days, seconds, microseconds]}`` -> ``pendulum.Duration`` (a
  Duration's months and years travel as the days they stand for).

attrs instances and dataclasses are written as a map of their fields, enums as their
value and UUIDs as their string; those come back as plain data (``cast_types`` structures
them into the task's annotations). Tuples come back as lists. Anything else raises
``SerializationError`` naming the type. ``PickleSerializer`` round-trips any picklable
object but runs code on load: use it only between peers you trust, and only by choosing it
explicitly.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import pickle
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, cast

import attrs
import msgpack
import orjson
import pendulum

from actors.exceptions import SecurityError, SerializationError

__all__ = [
    "JSONSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "TaskiqSerializer",
    "decode_datetime",
    "encode_datetime",
    "serializer_by_name",
]


class TaskiqSerializer(ABC):
    """Turns Python values into bytes and back (taskiq's serializer interface)."""

    #: The name peers use to agree on a serializer.
    name: ClassVar[str] = ""

    @abstractmethod
    def dumpb(self, value: Any) -> bytes:
        """Serialize ``value``; raise ``SerializationError`` if it cannot be."""

    @abstractmethod
    def loadb(self, data: bytes) -> Any:
        """Deserialize ``data``; raise ``SerializationError`` if it is malformed."""


# Typed by hand: typeshed does not know the pickle-state form used below.
_new_datetime = cast(Callable[..., pendulum.DateTime], datetime.datetime.__new__)
_new_naive = cast(Callable[..., datetime.datetime], datetime.datetime.__new__)
#: The standard library's, not pendulum's (which gives its fields instead).
_datetime_state = datetime.datetime.__reduce__


def as_pendulum_utc(instant: datetime.datetime) -> pendulum.DateTime:
    """A stdlib datetime in UTC as a pendulum ``DateTime`` in UTC, at C speed.

    It is made from the datetime's pickle state (``datetime.__new__(cls, state, tzinfo)``
    is how pickle rebuilds a datetime): 4.7k instructions, against 8.6k for passing its
    eight fields one by one and far more through pendulum's own constructors. The state
    has no ``fold``, which UTC never needs."""
    return _new_datetime(pendulum.DateTime, instant.__reduce__()[1][0], pendulum.UTC)


def iso_format(value: datetime.datetime) -> str:
    """``value.isoformat()``; in pendulum's UTC (most times that cross a link) without
    its Python ``utcoffset``, in half the time: the same time without its zone, made
    from its pickle state (see :func:`as_pendulum_utc`), writes the same digits."""
    if value.tzinfo is not pendulum.UTC:
        return value.isoformat()
    naive = _new_naive(datetime.datetime, _datetime_state(value)[1][0])
    return naive.isoformat() + "+00:00"


def _zone_name(value: datetime.datetime) -> str | None:
    """The IANA name of an aware datetime's zone, or None for naive/fixed-offset values."""
    tz = value.tzinfo
    if isinstance(tz, pendulum.FixedTimezone):
        return None
    key = getattr(tz, "key", None)  # zoneinfo.ZoneInfo and pendulum.Timezone
    return key if isinstance(key, str) else None


def encode_datetime(value: datetime.datetime) -> list[Any]:
    """``[iso, zone name or None]``: enough to rebuild the value in its own zone."""
    return [iso_format(value), _zone_name(value)]


def decode_datetime(iso: str, zone: str | None) -> pendulum.DateTime:
    """Inverse of ``encode_datetime``; falls back to the fixed offset if the zone is unknown."""
    parsed = datetime.datetime.fromisoformat(iso)
    if parsed.tzinfo is None:
        return pendulum.instance(parsed, tz=None)
    if zone is not None:
        try:
            tz = pendulum.timezone(zone)
        except Exception:  # unknown on this machine: the exact offset is kept
            pass
        else:
            return in_zone(parsed, tz)
    return pendulum.instance(parsed)


def in_zone(value: datetime.datetime, tz: pendulum.Timezone) -> pendulum.DateTime:
    """The aware ``value`` as a pendulum ``DateTime`` in ``tz``: what
    ``pendulum.instance(value).in_timezone(tz)`` gives, in a third of the time (every
    result that crosses a link carries three)."""
    if tz is pendulum.UTC and value.tzinfo is datetime.UTC:  # most: no zone arithmetic
        return as_pendulum_utc(value)
    local = value.astimezone(tz)
    return pendulum.DateTime(
        *(local.year, local.month, local.day, local.hour, local.minute, local.second),
        local.microsecond,
        tzinfo=tz,
        fold=local.fold,
    )


def _to_plain(value: Any) -> Any:
    """``default`` hook for json and msgpack: tag date/time values, flatten records."""
    # datetime before date: datetime is a subclass of date.
    if isinstance(value, datetime.datetime):
        iso, zone = encode_datetime(value)
        return {"__datetime__": iso, "tz": zone}
    if isinstance(value, datetime.date):
        return {"__date__": value.isoformat()}
    if isinstance(value, datetime.time):
        return {"__time__": value.isoformat()}
    if isinstance(value, datetime.timedelta):
        # pendulum.Duration redefines days/seconds; normalise to a stdlib timedelta first.
        plain = datetime.timedelta.__add__(datetime.timedelta(), value)
        return {"__timedelta__": [plain.days, plain.seconds, plain.microseconds]}
    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=False)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    raise SerializationError(
        f"Object of type {type(value).__module__}.{type(value).__qualname__} cannot be serialized"
    )


def _from_plain(data: dict[Any, Any]) -> Any:
    """``object_hook`` for json and msgpack: turn tagged maps back into date/time values."""
    try:
        if len(data) == 2 and isinstance(data.get("__datetime__"), str) and "tz" in data:
            return decode_datetime(data["__datetime__"], data["tz"])
        if len(data) == 1:
            if isinstance(data.get("__date__"), str):
                return pendulum.Date.fromisoformat(data["__date__"])
            if isinstance(data.get("__time__"), str):
                return pendulum.Time.fromisoformat(data["__time__"])
            if isinstance(data.get("__timedelta__"), list):
                days, seconds, micros = data["__timedelta__"]
                return pendulum.Duration(days=days, seconds=seconds, microseconds=micros)
    except (TypeError, ValueError):
        pass  # looked like a tag but is not one: leave the user's map alone
    return data


# Built once: ``json.dumps``/``loads`` with options build a new encoder/decoder per call.
_json_encoder = json.JSONEncoder(default=_to_plain, ensure_ascii=False, separators=(",", ":"))
_json_decoder = json.JSONDecoder(object_hook=_from_plain)

# orjson writes what the standard library writes, several times faster, except: NaN and
# infinities (it writes null), integers past 64 bits and nesting past 254 levels (it
# refuses them), and non-string keys (refused; the standard library converts some). It
# reads integers past 64 bits as floats and has no hook to turn tagged maps back into
# dates. So JSONSerializer takes orjson's answer only where it is the same, and the
# standard library does the rest.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_TAG = b'"__'
_ESCAPE = b"\\u"
# A run of 19 digits may be an integer past 64 bits; found by turning digits into zeros
# (bytes.translate), several times faster than a regular expression here. A fraction's
# digits are no integer: orjson writes 4.1e-05 as 0.000041000000000000004 (every result
# has an execution time), so a run found is looked at again, unless it follows a point.
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19
_LONG_INTEGER = re.compile(rb"(?<![.0-9])[0-9]{19}")


def _may_hold_a_long_integer(data: bytes) -> bool:
    return _NINETEEN_DIGITS in data.translate(_DIGITS_AS_ZEROS) and bool(_LONG_INTEGER.search(data))


_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


def _nulls_are_nones(value: Any) -> bool:
    """Whether every null in orjson's JSON of ``value`` is a None: it holds plain JSON
    types only (what ``default`` makes of others is not looked into) and no float that
    is NaN or infinite."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _PLAIN_SCALARS:
            continue
        if kind is float:
            if not math.isfinite(item):
                return False
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        else:
            return False
    return True


class JSONSerializer(TaskiqSerializer):
    """UTF-8 JSON (the default; see the module docstring): orjson where it gives the same
    bytes and values as the standard library, the standard library otherwise."""

    name = "json"

    def dumpb(self, value: Any) -> bytes:
        try:
            data = orjson.dumps(value, default=_to_plain, option=_ORJSON_OPTIONS)
            # A null may stand for a NaN or an infinity (every result has one: its error).
            if b"null" not in data or _nulls_are_nones(value):
                # A copy: orjson's bytes keep the whole buffer it wrote into (4 KiB at
                # least), and a kicked task's bytes live until it runs.
                return bytes(memoryview(data))
        except orjson.JSONEncodeError:
            pass  # beyond orjson (see above), or an error for the standard library to report
        try:
            return _json_encoder.encode(value).encode()
        except SerializationError:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            # ValueError includes UnicodeEncodeError: a lone surrogate has no UTF-8.
            raise SerializationError(f"Cannot serialize to JSON: {exc}") from exc

    def loadb(self, data: bytes) -> Any:
        if (
            _TAG not in data
            # An escape could spell a tag. Looking for one byte first is a fast memchr;
            # a search for two bytes costs 2.5k instructions on a 100-byte message.
            and (b"\\" not in data or _ESCAPE not in data)
            and not _may_hold_a_long_integer(data)
        ):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass  # NaN, a lone surrogate, ...: the standard library decides
        try:
            return _json_decoder.decode(data.decode())
        except (ValueError, TypeError, RecursionError) as exc:  # includes JSONDecodeError
            raise SerializationError(f"Cannot deserialize JSON: {exc}") from exc


class MsgpackSerializer(TaskiqSerializer):
    """msgpack; compact, carries bytes natively, same tagging as JSON."""

    name = "msgpack"

    def dumpb(self, value: Any) -> bytes:
        try:
            packed = msgpack.packb(value, default=_to_plain, use_bin_type=True)
        except SerializationError:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializationError(f"Cannot serialize to msgpack: {exc}") from exc
        assert isinstance(packed, bytes)
        return packed

    def loadb(self, data: bytes) -> Any:
        try:
            return msgpack.unpackb(data, raw=False, object_hook=_from_plain, strict_map_key=False)
        except Exception as exc:  # msgpack raises a zoo of types for malformed input
            raise SerializationError(f"Cannot deserialize msgpack: {exc}") from exc


class PickleSerializer(TaskiqSerializer):
    """pickle: any picklable value, but loading runs code. Only for trusted peers."""

    name = "pickle"

    def dumpb(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # PicklingError, TypeError, AttributeError, ...
            raise SerializationError(
                f"Cannot pickle value of type {type(value).__qualname__}: {exc}"
            ) from exc

    def loadb(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)  # opt-in only, trusted peers only
        except Exception as exc:  # UnpicklingError, EOFError, ImportError, ...
            raise SerializationError(f"Cannot unpickle: {exc}") from exc


_BY_NAME: dict[str, type[TaskiqSerializer]] = {
    cls.name: cls for cls in (JSONSerializer, MsgpackSerializer, PickleSerializer)
}


def serializer_by_name(name: str, *, allow_pickle: bool = False) -> TaskiqSerializer:
    """A serializer for a name a peer sent; pickle is refused unless explicitly allowed."""
    if name == PickleSerializer.name and not allow_pickle:
        raise SecurityError("pickle serializer refused: pass allow_pickle=True to use it")
    try:
        return _BY_NAME[name]()
    except KeyError:
        raise SerializationError(f"Unknown serializer {name!r}") from None
