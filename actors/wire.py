"""What crosses a link: a closed grammar of tagged frames, encoded with msgpack.

Every frame is a frozen attrs class with a ``Literal`` ``kind`` tag. User messages travel
inside a frame's ``body``: the bytes of a msgpack ``[tag, payload]`` pair, made by one
cattrs converter. Attrs classes carry a stable tag (their import path, or the name given to
:func:`register`), anything else is sent as plain msgpack data (so a tuple arrives as a
list). A receiver rebuilds only classes it registered itself (actor classes register their
message types when they are defined), so a peer cannot make us import or build anything.
Actor refs travel as their address and are rebuilt by the decoding node
(:func:`register_address_type`, :func:`decode_value`'s ``refs``).

The body is encoded by the sender's own task (:func:`encode_value`), so a message that
cannot cross a link fails there with :class:`WireError` instead of breaking the link it
would have been batched on. Frames are parsed strictly (:func:`decode_frames`): anything
but the four known shapes is a :class:`WireError`, and the node closes that one link.
"""

from __future__ import annotations

import datetime
import enum
import itertools
import operator
import types
import typing
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Literal

import attrs
import msgpack
import pendulum
from cattrs.preconf.msgpack import make_converter

from .serializers import in_zone, iso_format

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
    "frame_size",
    "lazy_types",
    "register",
    "register_address_type",
    "register_codec",
    "register_lazy",
    "register_message_type",
    "structure_by_key",
    "structure_datetime",
    "unstructure_datetime",
]


class WireError(ValueError):
    """A frame or a value could not be encoded or decoded."""


converter = make_converter()
#: One packer for every message (building one per ``msgpack.packb`` call cost 0.4 us, a
#: few times per message); it empties itself after each ``pack``, even one that fails.
_pack = msgpack.Packer().pack


def unstructure_datetime(value: pendulum.DateTime) -> list[str]:
    # The zone *name* travels beside the instant so "Europe/Paris" stays itself.
    return [iso_format(value), value.timezone_name or "UTC"]


def structure_datetime(raw: Any, _: type = pendulum.DateTime) -> pendulum.DateTime:
    iso, zone = raw
    # The standard library's parser and zone arithmetic: a third of the time of
    # ``pendulum.parse(iso).in_timezone(zone)``, which a worker paid on every run.
    try:
        parsed = datetime.datetime.fromisoformat(iso)
        tz = pendulum.timezone(zone)
    except (TypeError, ValueError):
        raise WireError(f"not a datetime: {raw!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return in_zone(parsed, tz)


converter.register_unstructure_hook(pendulum.DateTime, unstructure_datetime)
converter.register_structure_hook(pendulum.DateTime, structure_datetime)


def structure_by_key(union: Any, cls: type[Any], key: str) -> None:
    """Decode a dict holding ``key`` as ``cls`` at once where ``union`` is expected, and
    anything else as before. ``key`` must be a field of ``cls`` and of no other member.

    For speed: cattrs's general union disambiguation took over half the time of decoding
    a ``StoreResult`` on the hub (18 us of a cluster task's hub work)."""
    fallback = converter.get_structure_hook(union)
    member = converter.get_structure_hook(cls)

    def structure(value: Any, type_: Any) -> Any:
        if type(value) is dict and key in value:
            return member(value, cls)
        return fallback(value, type_)

    converter.register_structure_hook_func(lambda type_: type_ == union, structure)


#: Builds, on the node decoding, a ref from an actor's address ``(node name, actor name)``.
RefMaker = Callable[[str, str], Any]
#: The decoding node's :data:`RefMaker`, while :func:`decode_value` runs.
_ref_maker: ContextVar[RefMaker | None] = ContextVar("_ref_maker", default=None)
#: The tag of a ref sent as a whole value (not inside an attrs class).
_REF_TAG = "@ref"
_address_types: tuple[type[Any], ...] = ()


def register_address_type(cls: type[Any]) -> None:
    """Send instances of ``cls`` (and of its subclasses, generic or not) as their address,
    ``[node_name, name]``, and rebuild them with the decoding node's ref maker (see
    :func:`decode_value`). The runtime registers ``ActorRef``; wire knows no node."""
    global _address_types
    _address_types = (*_address_types, cls)

    def is_address(type_: Any) -> bool:
        origin = typing.get_origin(type_) or type_
        return isinstance(origin, type) and issubclass(origin, cls)

    converter.register_unstructure_hook_func(is_address, _unstructure_address)
    converter.register_structure_hook_func(is_address, _structure_address)


def _unstructure_address(ref: Any) -> list[str]:
    return [ref.node_name, ref.name]


def _structure_address(raw: Any, _: Any) -> Any:
    make = _ref_maker.get()
    if make is None:
        raise WireError("an actor ref can only be decoded by a node")
    if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(p, str) for p in raw)):
        raise WireError(f"malformed actor address: {raw!r:.80}")
    return make(raw[0], raw[1])


@attrs.frozen
class Tell:
    kind: Literal["tell"]
    target: str
    body: bytes


@attrs.frozen
class Ask:
    kind: Literal["ask"]
    id: int
    target: str
    body: bytes


@attrs.frozen
class Answer:
    kind: Literal["answer"]
    id: int
    body: bytes


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

_registry: dict[str, type[Any]] = {"pendulum.DateTime": pendulum.DateTime}
#: Registered classes, and the other types that keep their type as a whole value.
_tags: dict[type[Any], str] = {pendulum.DateTime: "pendulum.DateTime"}


def register(cls: type[Any], name: str | None = None) -> type[Any]:
    """Make an attrs class or an enum decodable from the wire under the tag ``name``.

    Without a name the tag is the class's import path; a name keeps the tag stable when
    the class moves between modules (or runs as ``__main__``), and replaces the import
    path as the class's tag even if that was registered first (by ``Actor[...]``).
    """
    if not (attrs.has(cls) or issubclass(cls, enum.Enum)):
        raise TypeError(f"{cls.__qualname__} is not an attrs class or an enum")
    tag = name or f"{cls.__module__}.{cls.__qualname__}"
    known = _registry.get(tag)
    if tag == _REF_TAG:
        raise ValueError(f"wire tag {tag!r} is reserved for actor refs")
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


#: Message types a node may hold back a little on a link (see :func:`register_lazy`).
lazy_types: set[type[Any]] = set()


def register_lazy(cls: type[Any]) -> None:
    """Let a tell of a ``cls`` wait on its link, a few milliseconds at most, for another
    frame to share a link message with: for messages nobody waits on, such as
    acknowledgements. Order on the link is kept; a frame that is not lazy takes the
    waiting ones along."""
    lazy_types.add(cls)


def register_codec(
    cls: type[Any],
    to_list: Callable[[Any], list[Any]],
    from_list: Callable[[list[Any]], Any],
    *types: type[Any] | tuple[type[Any], ...],
) -> None:
    """Send ``cls`` as ``to_list(value)`` instead of cattrs's map, and rebuild it with
    ``from_list`` once the list has one item of each of ``types`` (exact types, as
    ``decode_frames`` checks; a tuple for a choice).

    For the few messages every task sends (their field names stay off the wire, and
    decoding takes half the time); ``from_list`` raises for anything else malformed."""
    choices = [kind if isinstance(kind, tuple) else (kind,) for kind in types]
    signatures = frozenset(itertools.product(*choices))

    def structure(raw: Any, _: Any) -> Any:
        if type(raw) is not list or tuple(map(type, raw)) not in signatures:
            raise WireError(f"malformed {cls.__name__}: {raw!r:.80}")
        return from_list(raw)

    converter.register_unstructure_hook(cls, to_list)
    converter.register_structure_hook(cls, structure)


def encode_value(value: Any) -> bytes:
    """A user value as the msgpack bytes of ``[tag, payload]``; ``tag`` is None for plain
    data. Raises :class:`WireError` when the value cannot be encoded."""
    cls = type(value)
    try:
        tag = _tags.get(cls)
        if tag is None and attrs.has(cls):
            tag = _tags[register(cls)]
        if tag is not None:
            pair = [tag, converter.unstructure(value, cls)]
        elif isinstance(value, _address_types):
            pair = [_REF_TAG, _unstructure_address(value)]
        else:
            pair = [None, converter.unstructure(value)]
        return _pack(pair)  # type: ignore[no-any-return]
    except Exception as exc:
        raise WireError(f"cannot encode a {cls.__qualname__} for the wire: {exc}") from exc


def decode_value(body: bytes, refs: RefMaker | None = None) -> Any:
    """Rebuild a value from :func:`encode_value`'s output; :class:`WireError` if we can't.

    ``refs`` is the decoding node's ref maker: actor addresses inside the value become
    refs usable on that node. Without it, a value holding a ref cannot be decoded.
    """
    try:
        tag, payload = msgpack.unpackb(body)
    except Exception as exc:
        raise WireError(f"malformed value body: {body!r:.80}") from exc
    if tag is None:
        return payload
    cls = _registry.get(tag) if isinstance(tag, str) else None
    if cls is None and tag != _REF_TAG:
        raise WireError(f"unknown message tag {tag!r:.80} (not registered on this node)")
    token = _ref_maker.set(refs)
    try:
        if cls is None:  # a ref sent as a whole value
            return _structure_address(payload, None)
        return converter.structure(payload, cls)
    except WireError:
        raise
    except Exception as exc:
        raise WireError(f"cannot rebuild {tag}: {exc}") from exc
    finally:
        _ref_maker.reset(token)


#: Each frame's fields after ``kind``, with the one type each must have.
_FRAME_FIELDS: dict[str, tuple[type[Any], tuple[tuple[str, type[Any]], ...]]] = {
    "tell": (Tell, (("target", str), ("body", bytes))),
    "ask": (Ask, (("id", int), ("target", str), ("body", bytes))),
    "answer": (Answer, (("id", int), ("body", bytes))),
    "fault": (Fault, (("id", int), ("error", str), ("message", str))),
}

#: Each frame's fields as a tuple, ``kind`` first: its encoding.
_FIELDS_OF: dict[type[Any], Callable[[Any], tuple[Any, ...]]] = {
    cls: operator.attrgetter("kind", *(name for name, _ in fields))
    for cls, fields in _FRAME_FIELDS.values()
}

#: Bytes a frame's envelope adds to its variable fields (an upper bound).
FRAME_OVERHEAD = 64


def frame_size(frame: Frame) -> int:
    """An upper bound of the frame's encoded size, to keep batches under a link's limit."""
    if isinstance(frame, Fault):
        return FRAME_OVERHEAD + len(frame.error) * 4 + len(frame.message) * 4
    target = len(frame.target) * 4 if isinstance(frame, Tell | Ask) else 0
    return FRAME_OVERHEAD + target + len(frame.body)


def encode_frames(frames: list[Frame]) -> bytes:
    """Several frames in one link message (the writer batches when the link is busy).

    Each frame is an array of its fields, ``kind`` first: a map per frame (its field
    names included) took almost three times as long to pack."""
    try:
        return _pack([_FIELDS_OF[type(frame)](frame) for frame in frames])  # type: ignore[no-any-return]
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"cannot encode frame: {exc}") from exc


def decode_frames(data: bytes) -> list[Frame]:
    """Parse one link message; :class:`WireError` on anything malformed."""
    try:
        raw = msgpack.unpackb(data)
    except Exception as exc:
        raise WireError(f"malformed frame: {exc}") from exc
    if type(raw) is not list:
        raise WireError("malformed frame: a link message is a list of frames")
    frames: list[Frame] = []
    for item in raw:
        if type(item) is not list or not item:
            raise WireError(f"malformed frame: {item!r:.80}")
        kind = item[0]
        shape = _FRAME_FIELDS.get(kind) if type(kind) is str else None
        if shape is None:
            raise WireError(f"malformed frame: unknown kind {kind!r:.40}")
        cls, fields = shape
        if len(item) != len(fields) + 1:
            raise WireError(f"malformed {kind} frame: {len(item) - 1} fields")
        for (name, expected), value in zip(fields, item[1:], strict=True):
            if type(value) is not expected:
                raise WireError(f"malformed {kind} frame: bad {name!r}")
        frames.append(cls(*item))
    return frames
