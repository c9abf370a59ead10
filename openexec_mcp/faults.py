"""Fault injection for crash tests: kill the process at a named write point.

Off unless ``OPENEXEC_UNSAFE_FAULTS`` names points (comma-separated), e.g.
``OPENEXEC_UNSAFE_FAULTS=after_claim``. The process then SIGKILLs itself at that point, as a
power cut or an OOM kill would, so tests can show what survives. Never set it in production; the
server warns at start when it is set.

Points: ``after_claim`` (the nonce is durably ``started``), ``in_handler`` (the handler is
running), ``before_finish`` (the handler returned; outcome not yet committed),
``after_finish`` (outcome and receipt committed; answer not yet sent), ``in_checkpoint`` (a
checkpoint is signed and not yet stored), ``in_server_key`` (half of a new server key written).
"""

from __future__ import annotations

import os
import signal
from typing import Final

__all__ = ["FAULT_POINTS", "unsafe_fault_point", "unsafe_faults_enabled"]

FAULT_POINTS: Final = frozenset(
    {"after_claim", "in_handler", "before_finish", "after_finish", "in_checkpoint", "in_server_key"}
)
_ENABLED: Final = frozenset(
    name.strip() for name in os.environ.get("OPENEXEC_UNSAFE_FAULTS", "").split(",") if name.strip()
)


def unsafe_faults_enabled() -> frozenset[str]:
    """Return the fault points armed in this process (empty in production)."""
    return _ENABLED


def unsafe_fault_point(name: str) -> None:
    """SIGKILL this process if the fault point ``name`` is armed; otherwise do nothing."""
    if name in _ENABLED:
        os.kill(os.getpid(), signal.SIGKILL)
