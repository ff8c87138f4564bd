"""The tasks of ``bench/cluster_bench.py`` on taskiq with taskiq-redis: imported by its
``taskiq worker`` process and its client (``REDIS_URL`` names the bench's Redis)."""

import asyncio
import os

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")

broker = RedisStreamBroker(URL).with_result_backend(RedisAsyncResultBackend(URL))


@broker.task("noop")
async def noop() -> None:
    return None


@broker.task("nap")
async def nap() -> None:
    await asyncio.sleep(float(os.environ.get("NAP", "0.05")))
