"""A short path through websocket framing for the one frame shape links exchange.

Links send each message as one unfragmented binary frame without extensions. wsproto's
general parser, written for every frame a peer may send, took about 40 us per message
on these machines (``bench/link_bench.py``: its ``wsproto`` case against plain ``tcp``),
a sixth of a W2 round trip's four hops. :class:`LeanFrames` stands in for trio-websocket's
wsproto connection once the websocket is open: it reads and writes that one shape itself
(RFC 6455, section 5.2) and hands wsproto every other frame whole (pings, pongs, close,
text, fragments, reserved bits, a wrong mask), so wsproto still decides everything but
the common case. A frame too big for the link goes to wsproto with all that follows (as
trio-websocket then closes the link with 1009 from wsproto's partial messages, without
our buffering it whole), and so does all that follows a close or a frame wsproto
refused.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Event

__all__ = ["LeanFrames"]

_FIN_BINARY = 0x82
_MASKED = 0x80
_SHORT = struct.Struct("!H")
_LONG = struct.Struct("!Q")
#: Masking keys are taken from one read of the system's random source per this many.
_KEYS_PER_READ = 1024


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XORed with the repeated 4-byte ``key`` (masking is its own inverse)."""
    size = len(payload)
    if not size:
        return b""
    repeated = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        size, "little"
    )


def binary_frame(payload: bytes, key: bytes | None) -> bytes:
    """One final binary frame carrying ``payload``, masked with ``key`` when given."""
    size = len(payload)
    mask_bit = 0 if key is None else _MASKED
    if size < 126:
        header = bytes((_FIN_BINARY, mask_bit | size))
    elif size < 65536:
        header = bytes((_FIN_BINARY, mask_bit | 126)) + _SHORT.pack(size)
    else:
        header = bytes((_FIN_BINARY, mask_bit | 127)) + _LONG.pack(size)
    if key is None:
        return header + payload
    return header + key + mask(payload, key)


class LeanFrames:
    """trio-websocket's wsproto connection, with the short path above; made once the
    websocket is open (see :meth:`install`).

    trio-websocket uses ``client``, ``state``, ``send``, ``receive_data`` and ``events``
    of its connection; those are all this offers.
    """

    def __init__(self, inner: WSConnection, max_payload: int) -> None:
        self._inner = inner
        self._max_payload = max_payload
        self.client = inner.client
        #: What a peer must do to its frames: a client's are masked, a server's not.
        self._peer_masks = not inner.client
        self._buffer = bytearray()
        #: False until wsproto holds no bytes of its own, and again for good once a frame
        #: too big for the short path, or a close, went to it.
        self._lean = False
        #: Inside a fragmented message (each fragment went to wsproto).
        self._fragmented = False
        self._keys = b""
        self._next_key = 0

    @classmethod
    def install(cls, ws: Any) -> LeanFrames:
        """Put one in front of ``ws``'s wsproto connection (a trio-websocket
        ``WebSocketConnection``: private attributes, checked by the link tests)."""
        lean: LeanFrames = cls(ws._wsproto, ws._max_message_size)
        ws._wsproto = lean
        return lean

    @property
    def state(self) -> ConnectionState:
        return self._inner.state

    def send(self, event: Event) -> bytes:
        if type(event) is BytesMessage and event.message_finished:
            return self.send_binary(bytes(event.data))
        return self._inner.send(event)

    def send_binary(self, payload: bytes) -> bytes:
        """The frame that sends ``payload`` as one binary message."""
        if self._inner.state is not ConnectionState.OPEN:
            return self._inner.send(BytesMessage(data=payload))  # wsproto refuses it
        if not self.client:
            return binary_frame(payload, None)
        at = self._next_key
        if at == len(self._keys):
            self._keys, at = os.urandom(4 * _KEYS_PER_READ), 0
        self._next_key = at + 4
        return binary_frame(payload, self._keys[at : at + 4])

    def receive_data(self, data: bytes | None) -> None:
        if not self._lean:
            self._lean = data is not None and self._inner_is_empty()
        if self._lean and data is not None:
            self._buffer += data
        else:
            self._inner.receive_data(data)

    def _inner_is_empty(self) -> bool:
        """Whether wsproto holds no part of a frame or message (private attributes of
        wsproto 1.2; with others the short path is never taken)."""
        proto = getattr(self._inner.connection, "_proto", None)
        frames = getattr(proto, "_frame_decoder", None)
        messages = getattr(proto, "_message_decoder", None)
        return (
            getattr(frames, "header", True) is None
            and len(getattr(frames, "buffer", b"?")) == 0
            and getattr(messages, "opcode", True) is None
        )

    def events(self) -> Iterator[Event]:
        if self._lean:
            yield from self._lean_events()
            if self._lean:
                return
        yield from self._inner.events()

    def _lean_events(self) -> Iterator[Event]:
        buffer = self._buffer
        start = 0
        try:
            while True:
                available = len(buffer) - start
                if available < 2:
                    return
                first, second = buffer[start], buffer[start + 1]
                size = second & 0x7F
                header = 2
                if size == 126:
                    header = 4
                    if available < header:
                        return
                    size = _SHORT.unpack_from(buffer, start + 2)[0]
                elif size == 127:
                    header = 10
                    if available < header:
                        return
                    size = _LONG.unpack_from(buffer, start + 2)[0]
                masked = bool(second & _MASKED)
                if masked:
                    header += 4
                if size > self._max_payload:
                    # wsproto streams it in parts; trio-websocket refuses it (1009).
                    start = self._leave(start)
                    return
                end = start + header + size
                if len(buffer) < end:
                    return
                if (
                    first == _FIN_BINARY
                    and masked == self._peer_masks
                    and not self._fragmented
                    and self._inner.state is ConnectionState.OPEN
                ):
                    payload = bytes(buffer[start + header : end])
                    if masked:
                        payload = mask(payload, bytes(buffer[start + header - 4 : start + header]))
                    start = end
                    yield BytesMessage(data=payload, frame_finished=True, message_finished=True)
                else:
                    opcode = first & 0x0F
                    if opcode < 8:  # a data frame: fragments follow while FIN is clear
                        self._fragmented = not first & 0x80
                    frame = bytes(buffer[start:end])
                    start = end
                    self._inner.receive_data(frame)
                    closing = False
                    for event in self._inner.events():
                        closing = closing or isinstance(event, CloseConnection)
                        yield event
                    if closing:  # the peer's close, or a frame wsproto refused
                        start = self._leave(start)
                        return
        finally:
            del buffer[:start]

    def _leave(self, start: int) -> int:
        """Hand wsproto the bytes from ``start`` on, and all later ones; returns where
        the buffer now ends."""
        self._lean = False
        rest = bytes(self._buffer[start:])
        if rest and self._inner.state is not ConnectionState.CLOSED:  # else it refuses them
            self._inner.receive_data(rest)
        return len(self._buffer)
