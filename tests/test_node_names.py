"""Names for nodes nobody names by hand: many client processes of one program."""

from __future__ import annotations

import os
import socket

import trio

from actors import Node
from actors.runtime import unique_node_name
from transports import LocalTransport


def test_unique_node_names_say_where_they_come_from_and_differ() -> None:
    names = {unique_node_name("client") for _ in range(100)}
    assert len(names) == 100
    prefix, host, pid, random = next(iter(names)).rsplit("-", 3)
    assert (prefix, host, pid) == ("client", socket.gethostname().split(".")[0], str(os.getpid()))
    assert len(random) == 6


async def test_nodes_without_a_name_get_unique_ones_and_all_link_to_one_listener() -> None:
    with trio.fail_after(10):
        async with Node.open("hub", listen="local://") as hub:
            assert hub.address is not None
            async with (
                Node.open(connect=[hub.address]) as one,
                Node.open(connect=[hub.address]) as two,
            ):
                assert one.name != two.name
                assert one.name.startswith("node-")
                await hub.wait_for_peer(one.name)
                await hub.wait_for_peer(two.name)
                assert sorted(hub.peers) == sorted([one.name, two.name])


def test_a_node_without_a_name_takes_its_transports() -> None:
    assert Node(transport=LocalTransport("named")).name == "named"
