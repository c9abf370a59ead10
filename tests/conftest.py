"""Shared fixtures: a clean environment, settings in a temporary state dir, runtimes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).parent
sys.path.insert(0, str(TESTS_DIR))  # makes oe_testing importable, as servers see it via PYTHONPATH

from openexec_mcp.builtins import build_builtin_actions  # noqa: E402
from openexec_mcp.config import Settings, load_settings  # noqa: E402
from openexec_mcp.registry import Action, Registry, load_registry  # noqa: E402
from openexec_mcp.runtime import Runtime, build_runtime  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OPENEXEC_* / CLAWSHIELD_* from the developer's shell; a private counter file."""
    for name in list(os.environ):
        if name.startswith(("OPENEXEC_", "CLAWSHIELD_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OPENEXEC_TEST_COUNTER", str(tmp_path / "executions.txt"))


@pytest.fixture
def counter_file(tmp_path: Path) -> Path:
    return tmp_path / "executions.txt"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def make_settings(state_dir: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        overrides.setdefault("state_dir", state_dir)
        return load_settings(None, **overrides)

    return make


@pytest.fixture
def make_runtime(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Runtime]]:
    """Build runtimes on SQLite files in the test's state dir; closed at teardown."""
    made: list[Runtime] = []

    def make(registry_actions: list[Action] | None = None, toolset: str | None = None, **overrides: Any) -> Runtime:
        overrides.setdefault("actions", {"modules": ["oe_testing.actions"]})
        settings = make_settings(**overrides)
        registry = (
            Registry(registry_actions)
            if registry_actions is not None
            else load_registry(settings.actions.modules, extra=build_builtin_actions(settings))
        )
        runtime = build_runtime(settings, toolset=toolset, registry=registry)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


def server_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a server subprocess: tests/ on PYTHONPATH, the test actions loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENEXEC_", "CLAWSHIELD_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env["OPENEXEC_STATE_DIR"] = str(state_dir)
    env["OPENEXEC_ACTIONS__MODULES"] = '["oe_testing.actions"]'
    env["OPENEXEC_TEST_COUNTER"] = os.environ["OPENEXEC_TEST_COUNTER"]
    env.update(extra)
    return env


def module_env(root: Path, **extra: str) -> dict[str, str]:
    """``server_env`` for a module-scoped server: state in ``root/state``, counter ``root/executions.txt``.

    At module scope the per-test counter variable (``clean_environment``) is not set yet.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENEXEC_TEST_COUNTER", str(root / "executions.txt"))
        return server_env(root / "state", **extra)
