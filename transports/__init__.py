"""Links between nodes: the protocol (:mod:`transports.base`) and its implementations."""

from .base import (
    DEFAULT_MAX_FRAME as DEFAULT_MAX_FRAME,
    HandshakeError as HandshakeError,
    Link as Link,
    LinkClosed as LinkClosed,
    LinkHandler as LinkHandler,
    LinkState as LinkState,
    Transport as Transport,
)
