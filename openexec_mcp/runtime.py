"""Start-up: from settings to a ready :class:`~openexec_mcp.gate.pipeline.Gate` (SPEC §4, §5, §7, §9).

The order is fixed: load actions, freeze the policy, open the store, load (or create) the server
key, then record every call found ``started`` as ``indeterminate`` before accepting new calls.
The runtime also owns the process's :class:`Housekeeping`, the upkeep that runs beside the calls
and never on their path: nonce retention sweeps and, on PostgreSQL, the recording of dead
replicas' calls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from openexec_mcp.builtins import build_builtin_actions
from openexec_mcp.config import Settings
from openexec_mcp.core.clock import utc_now
from openexec_mcp.core.receipt import ServerKey
from openexec_mcp.faults import unsafe_faults_enabled
from openexec_mcp.gate.approvals import Approver, build_keyring
from openexec_mcp.gate.catalog import Catalog
from openexec_mcp.gate.pipeline import Gate
from openexec_mcp.gate.policy import Policy, build_policy
from openexec_mcp.governance.link import ClawshieldLink, link_from_environment
from openexec_mcp.keystore import load_or_create_server_key
from openexec_mcp.ledger.checkpoints import Ledger
from openexec_mcp.ledger.retention import NonceSweeper
from openexec_mcp.ledger.witnessing import Witnessing, build_witnessing
from openexec_mcp.registry import Registry, load_registry
from openexec_mcp.store import Store, open_store
from openexec_mcp.upstream.manager import UpstreamManager

__all__ = ["Housekeeping", "Runtime", "build_runtime"]

logger = logging.getLogger("openexec_mcp")

DEMO_WARNING = (
    "DEMO MODE: every action is approved automatically (approval policy 'auto'). "
    'Do not expose this server to untrusted agents; set mode = "clawshield" to require signed approvals.'
)


class Housekeeping:
    """Background upkeep of one serving process, on a daemon thread of its own.

    Every ``tick_seconds`` it starts the nonce retention sweep when one is due (hourly, SPEC §4);
    the sweeper also records the calls of dead replicas as ``indeterminate`` where the store can
    tell them apart (PostgreSQL). A failing sweep is logged and retried; it never fails a call.

    Args:
        sweeper: The retention sweeper, or ``None`` when nothing is to be done (maintenance
            commands).
        tick_seconds: How often to look whether a sweep is due, in seconds.
    """

    def __init__(self, sweeper: NonceSweeper | None, *, tick_seconds: float = 60.0) -> None:
        self.sweeper = sweeper
        self._tick_seconds = tick_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Sweep once now (on this thread), then start the background thread."""
        if self.sweeper is None or self._thread is not None:
            return
        self.sweeper.sweep()
        self._thread = threading.Thread(target=self._loop, name="openexec-housekeeping", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        sweeper = self.sweeper
        assert sweeper is not None
        while not self._stop.wait(self._tick_seconds):
            sweeper.maybe_sweep()
            sweeper.join()

    def stop(self, timeout_seconds: float = 10) -> None:
        """Stop the thread after the sweep under way, if any (waits at most ``timeout_seconds``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
        if self.sweeper is not None:
            self.sweeper.join(timeout_seconds)


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
    housekeeping: Housekeeping
    witnessing: Witnessing | None = None
    upstreams: UpstreamManager | None = None
    """The guarded upstream MCP servers (SPEC §11); started by ``serve`` (:meth:`UpstreamManager.running`)."""
    link: ClawshieldLink | None = None
    """The governance link of the seed's ``CLAWSHIELD_BASE_URL`` + ``CLAWSHIELD_API_KEY`` (SPEC §13)."""

    def close(self) -> None:
        """Close the store (after a running retention sweep and witness submissions finish)."""
        if self.link is not None:
            self.link.close()
        self.housekeeping.stop(timeout_seconds=10)
        if self.witnessing is not None:
            self.witnessing.close()  # SPEC §14: stops the background submissions
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
    if registry is None:
        registry = load_registry(settings.actions.modules, extra=build_builtin_actions(settings))
    policy = build_policy(settings, registry, toolset=toolset)
    keyring = build_keyring(settings)  # fail closed on a bad key before anything opens
    store = open_store(settings.storage_url(), sqlite_synchronous=settings.storage.sqlite_synchronous, clock=utc_now)
    try:
        server_key = load_or_create_server_key(settings.state_dir)
        approver = Approver(settings, keyring, store)
        ledger = Ledger(store, server_key, settings.server_id)
        catalog = Catalog(registry.values())
        upstreams = UpstreamManager(settings.upstreams, publish=catalog.publish) if settings.upstreams else None
        gate = Gate(
            registry=registry, policy=policy, store=store, server_key=server_key, server_id=settings.server_id,
            approver=approver, catalog=catalog,
            rate_limit_per_second=settings.limits.rate_limit_per_second,
            rate_limit_burst=settings.limits.rate_limit_burst, on_append=ledger.note_appended,
        )  # fmt: skip
        sweeper = (
            NonceSweeper(store, settings.nonce.retention_seconds, utc_now, recover=_dead_replica_recovery(store, gate))
            if serving
            else None
        )
        housekeeping = Housekeeping(sweeper)
        recovered = store.recover_started(gate.receipts.for_indeterminate) if serving else []
        witnessing = build_witnessing(settings, ledger) if serving else None
    except BaseException:
        store.close()
        raise
    if not serving:
        return Runtime(settings, registry, policy, store, server_key, gate, ledger, housekeeping, None, upstreams)
    housekeeping.start()  # a sweep now; then hourly, beside the calls (SPEC §4 retention)
    for entry in recovered:
        logger.warning("call %s (%s) was cut off by a restart; recorded as indeterminate", entry.exec_id, entry.action)
    if settings.mode == "demo":
        logger.warning(DEMO_WARNING)
    if armed := unsafe_faults_enabled():
        logger.warning("UNSAFE: fault injection armed at %s; this process will kill itself", ",".join(sorted(armed)))
    if witnessing is not None:
        witnessing.start()
    link = link_from_environment(settings, approver, store)
    if link is not None:
        approver.on_request = link.announce
        link.start()
    logger.info(
        "openexec-mcp ready: mode=%s storage=%s actions=%s policy_hash=%s kid=%s",
        settings.mode, store.kind, ",".join(policy.approvals), policy.policy_hash, server_key.kid,
    )  # fmt: skip
    return Runtime(
        settings, registry, policy, store, server_key, gate, ledger, housekeeping, witnessing, upstreams, link
    )


def _dead_replica_recovery(store: Store, gate: Gate) -> Callable[[], int] | None:
    """Return the periodic recovery of dead replicas' calls, where the store can tell them apart.

    PostgreSQL holds a lock per live replica, so ``recover_started`` there touches only calls of
    replicas that died. SQLite cannot tell, and every ``started`` row may be this process's own
    running call: there, recovery happens only at start-up.
    """
    if store.kind != "postgresql":
        return None
    return lambda: len(store.recover_started(gate.receipts.for_indeterminate))
