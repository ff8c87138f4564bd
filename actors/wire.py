"""What crosses a link: a closed grammar of tagged frames, encoded by one cattrs converter.

Every frame is a frozen attrs class with a ``Literal`` ``kind`` tag. User messages travel
inside a frame's ``body`` as ``[tag, payload]``: attrs classes carry a stable tag (their
import path, or the name given to :func:`register`), anything else is sent as plain data.
A receiver rebuilds only classes it registered itself (actor classes register their
message types when they are defined), so a peer cannot make us import or build anything.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import attrs
import msgpack
import pendulum
from cattrs.preconf.msgpack import make_converter

__all__ = [
    "Answer",
    "Ask",
    "Fault",
    "Frame",
    "Tell",
    "WireError",
    "converter",
    "decode_frames",
    "decode_value",
    "encode_frames",
    "encode_value",
    "register",
]


class WireError(ValueError):
    """A frame or a value could not be encoded or decoded."""


converter = make_converter()


def _unstructure_datetime(value: pendulum.DateTime) -> list[str]:
    # The zone *name* travels beside the instant so "Europe/Paris" stays itself.
    return [value.isoformat(), value.timezone_name or "UTC"]


def _structure_datetime(raw: Any, _: type) -> pendulum.DateTime:
    iso, zone = raw
    parsed = pendulum.parse(iso)
    if not isinstance(parsed, pendulum.DateTime):
        raise WireError(f"not a datetime: {iso!r}")
    return parsed.in_timezone(zone)


converter.register_unstructure_hook(pendulum.DateTime, _unstructure_datetime)
converter.register_structure_hook(pendulum.DateTime, _structure_datetime)


@attrs.frozen
class Tell:
    kind: Literal["tell"]
    target: str
    body: Any


@attrs.frozen
class Ask:
    kind: Literal["ask"]
    id: int
    target: str
    body: Any


@attrs.frozen
class Answer:
    kind: Literal["answer"]
    id: int
    body: Any


@attrs.frozen
class Fault:
    """An ask that failed on the far side; ``error`` names the runtime error class."""

    kind: Literal["fault"]
    id: int
    error: str
    message: str


Frame = Tell | Ask | Answer | Fault

_FRAME_CLASSES: dict[str, type[Any]] = {
    "tell": Tell,
    "ask": Ask,
    "answer": Answer,
    "fault": Fault,
}

_registry: dict[str, type[Any]] = {}
_tags: dict[type[Any], str] = {}


def register(cls: type[Any], tag: str | None = None) -> type[Any]:
    """Make an attrs class decodable from the wire under a stable ``tag``."""
    if not attrs.has(cls):
        raise TypeError(f"{cls.__qualname__} is not an attrs class; wire messages must be")
    tag = tag or f"{cls.__module__}.{cls.__qualname__}"
    known = _registry.get(tag)
    if known is not None and known is not cls:
        raise ValueError(f"wire tag {tag!r} already names {known.__qualname__}")
    _registry[tag] = cls
    _tags[cls] = tag
    return cls


def register_message_type(message_type: Any) -> None:
    """Register every attrs class inside a message type (a class or a union of them)."""
    if isinstance(message_type, types.UnionType) or typing.get_origin(message_type) is typing.Union:
        for arg in typing.get_args(message_type):
            register_message_type(arg)
    elif isinstance(message_type, type) and attrs.has(message_type) and message_type not in _tags:
        register(message_type)


def encode_value(value: Any) -> list[Any]:
    """A user value as ``[tag, payload]``; ``tag`` is None for plain data."""
    cls = type(value)
    if attrs.has(cls):
        tag = _tags.get(cls)
        if tag is None:
            register(cls)
            tag = _tags[cls]
        return [tag, converter.unstructure(value, cls)]
    return [None, converter.unstructure(value)]


def decode_value(body: Any) -> Any:
    """Rebuild a value from :func:`encode_value`'s output; :class:`WireError` if we can't."""
    try:
        tag, payload = body
    except (TypeError, ValueError) as exc:
        raise WireError(f"malformed value body: {body!r:.80}") from exc
    if tag is None:
        return payload
    cls = _registry.get(tag)
    if cls is None:
        raise WireError(f"unknown message tag {tag!r} (not registered on this node)")
    try:
        return converter.structure(payload, cls)
    except Exception as exc:
        raise WireError(f"cannot rebuild {tag}: {exc}") from exc


def encode_frames(frames: list[Frame]) -> bytes:
    """Several frames in one link message (the writer batches when the link is busy)."""
    try:
        return msgpack.packb([converter.unstructure(frame) for frame in frames])  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"cannot encode frame: {exc}") from exc


def decode_frames(data: bytes) -> list[Frame]:
    """Parse one link message; :class:`WireError` on anything malformed."""
    try:
        raw = msgpack.unpackb(data)
        if not isinstance(raw, list):
            raise TypeError("a link message is a list of frames")
        frames: list[Frame] = []
        for item in raw:
            cls = _FRAME_CLASSES[item["kind"]]
            frames.append(converter.structure(item, cls))
        return frames
    except WireError:
        raise
    except Exception as exc:
        raise WireError(f"malformed frame: {exc}") from exc
