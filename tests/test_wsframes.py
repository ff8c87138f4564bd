"""The links' short path through websocket framing reads and writes what wsproto does."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from transports.wsframes import LeanFrames, binary_frame, mask

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def open_pair() -> tuple[WSConnection, WSConnection]:
    """A wsproto client and server past the opening handshake, in memory."""
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="127.0.0.1", target="/")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    return client, server


def messages(events: list[Event]) -> list[tuple[str, Any]]:
    """Events as whole messages: wsproto hands out a frame in parts as its bytes come."""
    whole: list[tuple[str, Any]] = []
    parts: list[Any] = []
    for event in events:
        if isinstance(event, Message):
            parts.append(event.data)
            if event.message_finished:
                kind = "bytes" if isinstance(event, BytesMessage) else "text"
                joined = b"".join(parts) if kind == "bytes" else "".join(parts)
                whole.append((kind, joined))
                parts = []
        elif isinstance(event, Ping | Pong):
            whole.append((type(event).__name__, event.payload))
        elif isinstance(event, CloseConnection):
            whole.append(("close", (event.code, event.reason)))
        else:
            whole.append((type(event).__name__, None))
    return whole


def feed(receiver: WSConnection | LeanFrames, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        receiver.receive_data(chunk)
        events.extend(receiver.events())
    return events


def payload_of(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + b"x" * (size % 256)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


outgoing = st.one_of(
    st.binary(max_size=300).map(lambda data: BytesMessage(data=data)),
    st.sampled_from(SIZES).map(lambda size: BytesMessage(data=payload_of(size))),
    st.binary(max_size=100).map(
        lambda data: [
            BytesMessage(data=data[:5], message_finished=False),
            BytesMessage(data=data[5:]),
        ]
    ),
    # Two frames that break the protocol together: a message's first fragment, then a
    # whole message (made by hand, as wsproto would send it as the fragment's rest).
    st.just(BytesMessage(data=b"first of many", message_finished=False)),
    st.binary(max_size=20),
    st.text(max_size=50).map(lambda text: TextMessage(data=text)),
    st.binary(max_size=125).map(lambda payload: Ping(payload=payload)),
    st.binary(max_size=125).map(lambda payload: Pong(payload=payload)),
)


@settings(max_examples=150, deadline=None)
@given(
    sent=st.lists(outgoing, max_size=12),
    closing=st.booleans(),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    from_client=st.booleans(),
)
def test_lean_frames_read_what_wsproto_reads(
    sent: list[Any], closing: bool, cuts: list[int], from_client: bool
) -> None:
    """Any frames a peer sends, cut anywhere: the same messages, pings and close as
    wsproto alone gives (the short path takes the whole binary ones)."""
    sender = open_pair()[0 if from_client else 1]
    data = b""
    for item in sent:
        if isinstance(item, bytes):
            data += binary_frame(item, b"abcd" if from_client else None)
            continue
        for event in item if isinstance(item, list) else [item]:
            with contextlib.suppress(TypeError):  # text inside a binary message: refused
                data += sender.send(event)
    if closing:
        data += sender.send(CloseConnection(code=1000, reason="bye"))
        # A peer breaking the protocol: data after its close.
        data += binary_frame(b"after the close", b"abcd" if from_client else None)
    plain = open_pair()[1 if from_client else 0]
    lean = LeanFrames(open_pair()[1 if from_client else 0], max_payload=1 << 20)
    chunks = split(data, cuts)
    assert messages(feed(lean, chunks)) == messages(feed(plain, chunks))


def test_a_frame_bigger_than_the_link_takes_goes_to_wsproto_with_all_after_it() -> None:
    client, server = open_pair()
    lean = LeanFrames(server, max_payload=100)
    big, small = b"b" * 1000, b"small"
    data = client.send(BytesMessage(data=b"first")) + client.send(BytesMessage(data=big))
    data += client.send(BytesMessage(data=small))
    events = feed(lean, [data[:600], data[600:]])
    # wsproto handed out the big one in parts, as trio-websocket needs to refuse it early.
    assert len([e for e in events if isinstance(e, BytesMessage)]) > 3
    assert messages(events) == [("bytes", b"first"), ("bytes", big), ("bytes", small)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("client", [True, False])
def test_frames_sent_on_the_short_path_are_read_by_wsproto(size: int, client: bool) -> None:
    sender, receiver = open_pair() if client else open_pair()[::-1]
    payload = payload_of(size)
    lean = LeanFrames(sender, max_payload=1 << 20)
    frame = lean.send_binary(payload)
    assert messages(feed(receiver, [frame[:3], frame[3:]])) == [("bytes", payload)]


def test_a_client_masks_each_frame_with_a_new_key_and_a_server_does_not_mask() -> None:
    client, server = open_pair()
    payload = b"the same payload"
    lean = LeanFrames(client, 1024)
    first, second = lean.send_binary(payload), lean.send_binary(payload)
    assert first[1] & 0x80 and first[2:6] != second[2:6]
    assert mask(first[6:], first[2:6]) == payload
    assert binary_frame(payload, None) == LeanFrames(server, 1024).send_binary(payload)
    assert LeanFrames(server, 1024).send_binary(payload) == server.send(BytesMessage(data=payload))


def test_after_a_close_sending_goes_to_wsproto_which_refuses() -> None:
    client, _ = open_pair()
    lean = LeanFrames(client, 1024)
    lean.send(CloseConnection(code=1000))
    with pytest.raises(LocalProtocolError, match="cannot be sent in state"):
        lean.send_binary(b"late")


def test_the_peers_close_after_ours_ends_reading_without_an_error() -> None:
    """Closed both ways, wsproto takes no more bytes; what follows the close is dropped."""
    client, server = open_pair()
    lean = LeanFrames(server, 1024)
    client.receive_data(lean.send(CloseConnection(code=1000)))
    answer = [e for e in client.events() if isinstance(e, CloseConnection)]
    data = client.send(answer[0].response()) + binary_frame(b"late", b"abcd")
    assert messages(feed(lean, [data])) == [("close", (1000, ""))]
    assert lean.state.name == "CLOSED"
