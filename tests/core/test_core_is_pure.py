"""``openexec_mcp.core`` does no I/O and imports no framework (issue 10; import-linter enforces it too).

Two checks: the import statements of every core module, and what importing all of core actually
loads in a fresh interpreter (which also catches an indirect import through ``openexec_mcp.errors``).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import openexec_mcp.core

CORE = Path(openexec_mcp.core.__file__).parent
FORBIDDEN = ("anyio", "mcp", "mcp_types", "starlette", "httpx", "uvicorn", "sqlite3", "psycopg", "psycopg_pool",
             "asyncpg", "socket", "subprocess")  # fmt: skip
ALLOWED_OPENEXEC = ("openexec_mcp.core", "openexec_mcp.errors")


def core_modules() -> list[str]:
    return sorted(
        ".".join(("openexec_mcp", *path.relative_to(CORE.parent).with_suffix("").parts)).removesuffix(".__init__")
        for path in CORE.rglob("*.py")
    )


def test_core_modules_import_no_framework_driver_or_outer_layer() -> None:
    offenders: list[str] = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                if root in FORBIDDEN or (root == "openexec_mcp" and not name.startswith(ALLOWED_OPENEXEC)):
                    offenders.append(f"{path.relative_to(CORE)}: {name}")
    assert offenders == []


def test_importing_all_of_core_loads_no_framework_or_driver() -> None:
    script = (
        "import importlib, json, sys\n"
        "import openexec_mcp\n"
        "before = set(sys.modules)\n"
        f"for name in {core_modules()!r}: importlib.import_module(name)\n"
        "print(json.dumps({'all': sorted(sys.modules), 'core': sorted(set(sys.modules) - before)}))"
    )
    modules = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                       timeout=60).stdout)  # fmt: skip
    roots = {name.split(".")[0] for name in modules["all"]}
    # socket and subprocess may come in through the standard library; the rest never may.
    frameworks = set(FORBIDDEN) - {"socket", "subprocess"}
    assert roots.isdisjoint(frameworks), sorted(roots & frameworks)
    # The package's public API (``import openexec_mcp``) comes first; core then adds only core.
    outer = [
        name for name in modules["core"] if name.startswith("openexec_mcp") and not name.startswith(ALLOWED_OPENEXEC)
    ]
    assert outer == [], outer
