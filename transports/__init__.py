"""Links between nodes: the protocol (:mod:`transports.base`) and its implementations."""

from .base import (
    DEFAULT_MAX_FRAME as DEFAULT_MAX_FRAME,
    Address as Address,
    HandshakeError as HandshakeError,
    Link as Link,
    LinkClosed as LinkClosed,
    LinkHandler as LinkHandler,
    LinkState as LinkState,
    Transport as Transport,
)
from .local import LocalLink as LocalLink, LocalTransport as LocalTransport
from .websocket import WebSocketLink as WebSocketLink, WebSocketTransport as WebSocketTransport
