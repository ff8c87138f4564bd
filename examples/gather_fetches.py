"""``gather``: wait for several tasks at once, results in input order.

Each ``fetch_data`` task simulates a slow API call with ``trio.sleep`` (no network).
They run concurrently on the worker, so the whole batch takes about as long as the
slowest fetch, not the sum of them. ``gather`` accepts handles or the ``kiq(...)``
awaitables themselves, and raises ``TaskiqResultTimeoutError`` past its ``timeout``.

Run: ``python examples/gather_fetches.py``
"""

from __future__ import annotations

import random
from typing import Any

import trio

from actors import InMemoryBroker, TaskiqResultTimeoutError, gather

broker = InMemoryBroker()


@broker.task
async def fetch_data(url: str, delay: float) -> dict[str, Any]:
    """Pretend to call an API: wait ``delay`` seconds, return some content."""
    await trio.sleep(delay)
    return {"url": url, "data": f"content from {url}"}


async def fetch_multiple_sources(urls: list[str]) -> dict[str, str]:
    rng = random.Random(7)
    delays = [rng.uniform(0.1, 0.3) for _ in urls]
    started = trio.current_time()

    # Start the tasks; gather kicks them and waits for every result.
    kicks = (fetch_data.kiq(url, delay) for url, delay in zip(urls, delays, strict=True))
    results = await gather(*kicks)

    elapsed = trio.current_time() - started
    print(f"{len(results)} fetches in {elapsed:.2f}s (the delays add up to {sum(delays):.2f}s)")
    all_data: dict[str, str] = {}
    for result in results:
        payload = result.raise_for_error().return_value
        all_data[payload["url"]] = payload["data"]
    return all_data


async def main() -> None:
    urls = [f"https://api{i}.example.com" for i in range(1, 6)]
    async with broker:
        all_data = await fetch_multiple_sources(urls)
        for url, data in all_data.items():
            print(f"{url} -> {data}")
        print(f"In input order: {list(all_data) == urls}")

        # A timeout covers the whole gather.
        slow = await fetch_data.kiq("https://slow.example.com", 5.0)
        try:
            await gather(slow, timeout=0.2)
        except TaskiqResultTimeoutError:
            print("gather timed out after 0.2s")
        await slow.abort()  # do not keep the slow fetch running


if __name__ == "__main__":
    trio.run(main)
