"""The pytest plugin (``actors.testing``) as its users meet it: their tasks module, their
conftest and their tests, run by ``pytester``."""

from __future__ import annotations

import textwrap

import pytest

TASKS = """
    import os

    from actors import WebSocketBroker

    # As in production: the hub's URL and secret come from the environment.
    broker = WebSocketBroker(os.environ.get("HUB_URL", "ws://hub.example:9000"), secret="s3")


    @broker.task
    async def add(a: int, b: int) -> int:
        return a + b


    @broker.task
    async def fails() -> None:
        raise ValueError("from the worker")
"""

CONFTEST = """
    import pytest

    import tasks


    @pytest.fixture
    def actors_broker():
        return tasks.broker
"""


def run_user_tests(
    pytester: pytest.Pytester, tests: str, conftest: str | None = None
) -> pytest.RunResult:
    """pytest on a user's project: ``tasks.py``, their ``conftest`` and ``tests``."""
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(tasks=textwrap.dedent(TASKS), test_user=textwrap.dedent(tests))
    if conftest is not None:
        pytester.makeconftest(textwrap.dedent(conftest))
    return pytester.runpytest("-p", "no:cacheprovider")


USING_THEIR_BROKER = """
            import pytest

            import tasks


            async def test_add(actors_running):
                assert actors_running is tasks.broker
                assert actors_running.url.startswith("local://")
                assert await (await tasks.add.kiq(1, 2)) == 3
                with pytest.raises(ValueError, match="from the worker"):
                    await (await tasks.fails.kiq())


            async def test_its_url_is_put_back(actors_running):
                pass


            def test_after_the_cluster():
                assert tasks.broker.url == "ws://hub.example:9000"
        """


def test_a_users_broker_runs_their_tasks_across_a_link(pytester: pytest.Pytester) -> None:
    result = run_user_tests(pytester, USING_THEIR_BROKER, CONFTEST)
    result.assert_outcomes(passed=3)


USING_A_CLUSTER = """
            import tasks


            async def test_add(actors_cluster):
                async with actors_cluster(tasks.broker, websockets=True, workers=2) as cluster:
                    assert cluster.url.startswith("ws://127.0.0.1:")
                    assert cluster.broker is tasks.broker
                    handles = [await tasks.add.kiq(i, i) for i in range(10)]
                    results = [await handle.wait_result(timeout=10) for handle in handles]
                assert [result.return_value for result in results] == list(range(0, 20, 2))
                assert tasks.broker.url == "ws://hub.example:9000"
        """


def test_a_cluster_over_websockets_with_several_workers(pytester: pytest.Pytester) -> None:
    result = run_user_tests(pytester, USING_A_CLUSTER)
    result.assert_outcomes(passed=1)


USING_THE_DEFAULT = """
            from actors import InMemoryBroker


            async def test_declared_here(actors_broker, actors_running):
                assert isinstance(actors_running, InMemoryBroker)

                @actors_running.task
                async def double(x: int) -> int:
                    return 2 * x

                assert await (await double.kiq(21)) == 42
        """


def test_the_default_broker_is_in_memory_for_tasks_a_test_declares(
    pytester: pytest.Pytester,
) -> None:
    result = run_user_tests(pytester, USING_THE_DEFAULT)
    result.assert_outcomes(passed=1)
