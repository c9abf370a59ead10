"""Start-up: from settings to a ready :class:`~openexec_mcp.gate.pipeline.Gate` (SPEC §4, §5, §7, §9).

The order is fixed: load actions, freeze the policy, open the store, load (or create) the server
key, then record every call found ``started`` as ``indeterminate`` before accepting new calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from openexec_mcp.config import Settings
from openexec_mcp.core.receipt import ServerKey
from openexec_mcp.faults import unsafe_faults_enabled
from openexec_mcp.gate.approvals import Approver, build_keyring
from openexec_mcp.gate.pipeline import Gate
from openexec_mcp.gate.policy import Policy, build_policy
from openexec_mcp.keystore import load_or_create_server_key
from openexec_mcp.ledger.checkpoints import Ledger
from openexec_mcp.registry import Registry, load_registry
from openexec_mcp.store import Store, open_store

__all__ = ["Runtime", "build_runtime"]

logger = logging.getLogger("openexec_mcp")

DEMO_WARNING = (
    "DEMO MODE: every action is approved automatically (approval policy 'auto'). "
    'Do not expose this server to untrusted agents; set mode = "clawshield" to require signed approvals.'
)


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything one server process holds, built once at start."""

    settings: Settings
    registry: Registry
    policy: Policy
    store: Store
    server_key: ServerKey
    gate: Gate
    ledger: Ledger

    def close(self) -> None:
        """Close the store (after a running retention sweep, if any, finishes)."""
        if self.gate.sweeper is not None:
            self.gate.sweeper.join(timeout_seconds=10)
        self.ledger.close()  # finishes the batch checkpoint being signed, if any
        self.store.close()


def build_runtime(
    settings: Settings, *, toolset: str | None = None, registry: Registry | None = None, serving: bool = True
) -> Runtime:
    """Build the runtime of one server process.

    Args:
        settings: The loaded settings.
        toolset: Expose only this ``[toolsets]`` entry.
        registry: Use these actions instead of loading modules (tests and embedding).
        serving: ``False`` for maintenance commands that run beside live servers (``ledger
            resolve``): no start-up recovery, which would cut off the running calls of a live SQLite
            server, and no retention sweeps.

    Raises:
        ConfigError: Invalid actions, policy, toolset or server key.
        StoreUnavailableError: The store cannot be opened.
    """
    registry = registry if registry is not None else load_registry(settings.actions.modules)
    policy = build_policy(settings, registry, toolset=toolset)
    keyring = build_keyring(settings)  # fail closed on a bad key before anything opens
    store = open_store(settings.storage_url(), sqlite_synchronous=settings.storage.sqlite_synchronous)
    try:
        server_key = load_or_create_server_key(settings.state_dir)
        approver = Approver(settings, keyring, store)
        ledger = Ledger(store, server_key, settings.server_id)
        gate = Gate(
            registry=registry, policy=policy, store=store, server_key=server_key, server_id=settings.server_id,
            approver=approver,
            rate_limit_per_second=settings.limits.rate_limit_per_second,
            rate_limit_burst=settings.limits.rate_limit_burst, on_append=ledger.note_appended,
            nonce_retention_seconds=settings.nonce.retention_seconds if serving else None,
        )  # fmt: skip
        recovered = store.recover_started(gate.receipts.for_indeterminate) if serving else []
    except BaseException:
        store.close()
        raise
    if not serving:
        return Runtime(settings, registry, policy, store, server_key, gate, ledger)
    if gate.sweeper is not None:
        gate.sweeper.sweep()  # at start; then hourly, piggy-backed on calls (SPEC §4 retention)
    for entry in recovered:
        logger.warning("call %s (%s) was cut off by a restart; recorded as indeterminate", entry.exec_id, entry.action)
    if settings.mode == "demo":
        logger.warning(DEMO_WARNING)
    if armed := unsafe_faults_enabled():
        logger.warning("UNSAFE: fault injection armed at %s; this process will kill itself", ",".join(sorted(armed)))
    logger.info(
        "openexec-mcp ready: mode=%s storage=%s actions=%s policy_hash=%s kid=%s",
        settings.mode, store.kind, ",".join(policy.approvals), policy.policy_hash, server_key.kid,
    )  # fmt: skip
    return Runtime(settings, registry, policy, store, server_key, gate, ledger)
