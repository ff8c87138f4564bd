"""The public surface: every name the spec promises is exported, typed, and documented."""

from __future__ import annotations

import ast
import builtins
import importlib.resources
import inspect
import pathlib
import re

import actors
import transports

PACKAGE = pathlib.Path(actors.__file__).parent

PROMISED = [
    "Actor",
    "ActorRef",
    "Supervisor",
    "ChildSpec",
    "Node",
    "AskTimeoutError",
    "ActorCrashedError",
    "PeerLostError",
    "AsyncBroker",
    "InMemoryBroker",
    "async_shared_broker",
    "AsyncTaskiqTask",
    "AsyncKicker",
    "AsyncTaskiqDecoratedTask",
    "TaskiqResult",
    "TaskiqMessage",
    "TaskProgress",
    "Context",
    "TaskiqDepends",
    "TaskiqState",
    "TaskiqEvents",
    "gather",
    "AsyncResultBackend",
    "InmemoryResultBackend",
    "DummyResultBackend",
    "TaskiqMiddleware",
    "SimpleRetryMiddleware",
    "SmartRetryMiddleware",
    "JSONSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "TaskStatus",
    "TaskInfo",
    "TaskiqError",
    "SendTaskError",
    "UnknownTaskError",
    "ResultGetError",
    "ResultIsReadyError",
    "TaskiqResultTimeoutError",
    "NoResultError",
    "TaskRejectedError",
    "TaskAbortedError",
    "TaskTimeoutError",
    "TaskExpiredError",
    "DependencyFailedError",
    "TaskiqScheduler",
    "ScheduleSource",
    "LabelScheduleSource",
    "InMemoryScheduleSource",
    "SqliteScheduleSource",
    "CreatedSchedule",
    "CronSpec",
]


def test_every_promised_name_is_exported() -> None:
    missing = [name for name in PROMISED if not hasattr(actors, name)]
    assert missing == []


def test_exported_classes_and_functions_are_documented() -> None:
    undocumented = [
        name
        for name in dir(actors)
        if not name.startswith("_")
        and (inspect.isclass(getattr(actors, name)) or inspect.isfunction(getattr(actors, name)))
        # Its own docstring: ``inspect.getdoc`` would take a base class's.
        and not (getattr(actors, name).__doc__ or "").strip()
    ]
    assert undocumented == []


def test_packages_ship_type_information() -> None:
    for package in (actors, transports):
        assert importlib.resources.files(package).joinpath("py.typed").is_file()


def test_taskiq_exception_tree() -> None:
    assert issubclass(actors.UnknownTaskError, actors.TaskiqError)
    assert issubclass(actors.ResultGetError, actors.TaskiqError)
    assert issubclass(actors.TaskiqResultTimeoutError, TimeoutError)
    assert issubclass(actors.TaskTimeoutError, TimeoutError)
    assert issubclass(actors.TaskAbortedError, actors.TaskiqError)


def test_every_name_docs_taskqueue_shows_imports_from_actors() -> None:
    """The page promises it: class names in its prose, the page's own imports, and the
    lowercase names it presents as importable."""
    text = (pathlib.Path(__file__).parent.parent / "docs" / "taskqueue.md").read_text()
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    spans = (
        re.match(r"([A-Za-z_]\w*)(\(.*\))?$", span) for span in re.findall(r"`([^`\n]+)`", prose)
    )
    names = {
        match[1] for match in spans if match and match[1][0].isupper() and not match[1].isupper()
    }
    names -= set(dir(builtins)) | {"Depends"}  # Python's own, and taskiq-dependencies' name
    for imported in re.findall(r"from actors import ([\w, ]+)", text):
        names.update(name.strip() for name in imported.split(","))
    names.update(["gather", "serializer_by_name", "async_shared_broker"])
    assert sorted(name for name in names if not hasattr(actors, name)) == []


def _module_imports() -> dict[str, set[str]]:
    """Each module of ``actors`` and the modules of ``actors`` it names in an import,
    counting imports made only for type checking and inside functions. ``actors`` itself,
    whose ``__init__`` re-exports everything, is left out."""
    paths = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            paths[".".join(("actors", *parts))] = path
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in paths)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base) if node.level else ""
                target = ".".join(filter(None, [target, node.module or ""]))
                for alias in node.names:
                    if f"{target}.{alias.name}" in paths:
                        edges.add(f"{target}.{alias.name}")
                    elif target in paths:
                        edges.add(target)
        graph[name] = edges
    return graph


def test_the_broker_modules_are_on_no_import_cycle() -> None:
    """The roles name a protocol of what they use, not the broker classes, so nothing the
    broker, facade or wiring imports leads back to them (at run or type-checking time)."""
    graph = _module_imports()
    assert {"actors.worker", "actors.tasks"} <= graph["actors.inmemory"] | graph["actors.facade"]
    on_cycles = []
    for start in ("actors.broker", "actors.facade", "actors.inmemory", "actors.roles"):
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph.get(module, ()))
        if start in seen:
            on_cycles.append(start)
    assert on_cycles == []
