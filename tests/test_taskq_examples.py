"""Every task-queue example runs as a real program and prints what it promises."""

from __future__ import annotations

import re

import pytest

from .programs import ROOT, run_example


def test_quickstart_prints_the_sum() -> None:
    out = run_example("quickstart")
    assert "Sum: 15" in out
    assert "is_err: False" in out
    assert "Awaited directly: 15" in out
    assert "Called locally: 30" in out


def test_error_handling_shows_every_way_to_see_the_error() -> None:
    out = run_example("error_handling")
    assert "Had error: True" in out
    assert "Error type: ValueError" in out
    assert "Error message: Negative values not allowed" in out
    assert "raise_for_error raised: ValueError('Negative values not allowed')" in out
    assert "Success: 42" in out
    assert "Task failed: Negative values not allowed" in out
    assert "Unexpected success" not in out


def test_context_aware_requeues_with_the_same_id_and_rejects() -> None:
    out = run_example("context_aware")
    assert re.search(r"Processed: hello \(ID: [0-9a-f]+\)", out)
    requeued = re.findall(r"Requeuing task ([0-9a-f]+) \(attempt (\d)\)", out)
    assert [attempt for _, attempt in requeued] == ["1", "2"]
    assert len({task_id for task_id, _ in requeued}) == 1  # the same task id every time
    assert f"Processed: retry_me (ID: {requeued[0][0]})" in out
    assert "runs: 3, X-Taskiq-requeue: 2" in out
    assert "'invalid' failed with TaskRejectedError" in out
    assert "rejected: True" in out


def test_gather_runs_the_fetches_concurrently_in_input_order() -> None:
    out = run_example("gather_fetches")
    match = re.search(r"5 fetches in ([\d.]+)s \(the delays add up to ([\d.]+)s\)", out)
    assert match is not None, out
    assert float(match[1]) < float(match[2])  # concurrent, not one after another
    for i in range(1, 6):
        assert f"https://api{i}.example.com -> content from https://api{i}.example.com" in out
    assert "In input order: True" in out
    assert "gather timed out after 0.2s" in out


def test_fibonacci_stores_results_in_the_backend() -> None:
    out = run_example("fibonacci")
    assert "Fibonacci(10) = 55" in out
    assert "Series: [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377]" in out
    assert "Results in the backend: 16" in out
    assert "Read from the backend: 55 (is_err=False)" in out
    assert "Ready: True, value: 55" in out


def test_large_dataset_reports_progress_while_running() -> None:
    out = run_example("large_dataset_progress")
    reports = re.findall(r"Progress: ([\d.]+)% \| Items: (\d+)/100", out)
    assert reports, out
    assert any(0 < float(percent) < 100 for percent, _ in reports)  # seen mid-run
    percents = [float(percent) for percent, _ in reports]
    assert percents == sorted(percents)
    assert "Task completed: {'processed_count': 100, 'checksum': 328350}" in out
    assert "Last progress report: Processing complete (100%)" in out


def test_file_backend_writes_and_reads_result_files() -> None:
    out = run_example("file_backend")
    assert "Pushed to the waiter: is_err=True, error=ZeroDivisionError(" in out
    assert "Success: {'quotient': 2.5}" in out
    assert "Files written: 2" in out
    assert '"return_value": {"quotient": 2.5}' in out
    assert '"error_type": "ZeroDivisionError"' in out
    assert "Read back from the file: is_err=True, error=Exception('ZeroDivisionError:" in out
    assert "ok is ready: True" in out
    assert "After delete_result: ok is ready: False" in out


def test_streaq_features() -> None:
    out = run_example("streaq_features")
    assert "status: running / queued" in out
    assert "abort queued: True, abort running: True" in out
    assert "aborted result: TaskAbortedError, status=aborted" in out
    assert "status after: done, abort again: False" in out
    assert "delayed status: scheduled" in out
    assert "run order: ['blocker', 'high', 'high-2', 'mid', 'low']" in out
    assert "then: 3 apples each, 2 apples left over" in out
    assert "otherwise: user:42 from the replica" in out
    assert "after: second" in out
    assert "after a failure: DependencyFailedError" in out
    assert "unique: same task True, result 'index users rebuilt'" in out


TASK_QUEUE_EXAMPLES = [
    "quickstart",
    "error_handling",
    "context_aware",
    "gather_fetches",
    "fibonacci",
    "large_dataset_progress",
    "file_backend",
    "streaq_features",
]


@pytest.mark.parametrize("name", TASK_QUEUE_EXAMPLES)
def test_every_task_queue_example_has_a_docstring_and_main(name: str) -> None:
    text = (ROOT / "examples" / f"{name}.py").read_text()
    assert text.startswith('"""'), "module docstring says what the example shows"
    assert 'if __name__ == "__main__":\n    trio.run(main)' in text


def test_the_cluster_example_runs_a_hub_two_workers_and_a_client() -> None:
    out = run_example("cluster/run")
    assert re.search(r"hub listening at ws://127\.0\.0\.1:\d+", out)
    assert out.count("serving 3 tasks") == 2
    assert "add(1, 2) = 3" in out
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49]" in out
    assert "worker processes used: 2" in out
    assert "fails(): ValueError: raised on a worker, seen by the client" in out
    assert "stopped: hub and 2 workers" in out
