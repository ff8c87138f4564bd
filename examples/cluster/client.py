"""A client of the cluster: kicks tasks into the hub and waits for their results."""

import trio
from tasks import add, broker, fails, slow_square

from actors import gather


async def main() -> None:
    async with broker:
        print("add(1, 2) =", (await (await add.kiq(1, 2)).wait_result(timeout=10)).return_value)
        handles = [await slow_square.kiq(x) for x in range(8)]
        results = await gather(*handles, timeout=30)
        print("squares:", [result.return_value for result in results])
        workers = {result.worker_id.rsplit(".", 1)[0] for result in results if result.worker_id}
        print("worker processes used:", len(workers))
        failed = await (await fails.kiq()).wait_result(timeout=10)
        print(f"fails(): {type(failed.error).__name__}: {failed.error}")


if __name__ == "__main__":
    trio.run(main)
