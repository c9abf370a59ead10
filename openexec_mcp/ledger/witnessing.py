"""The execution server's side of witnessing: submit each new checkpoint to every witness (SPEC §14).

``[[ledger.witnesses]] name, url, public_key`` names the witnesses (``name`` is the key name of
their cosignature lines, ``public_key`` base64 of the raw Ed25519 key or a vkey) and
``ledger.witness_quorum`` how many must cosign (default: all).

Flow: one background thread signs a checkpoint covering the receipts appended so far, at most every
``ledger.witness_interval_seconds``, and wakes one thread per witness. Each witness thread submits
the latest checkpoint with ``POST <url>/add-checkpoint`` (c2sp.org/tlog-witness) and the
consistency proof from the size the witness last cosigned: a 409 answer names the witness's size,
and the submission is retried once from there; a 200 answer's cosignature lines are verified with
the witness's key and kept. A witness that is down or refuses is retried with exponential backoff
(0.5 s doubling to 60 s); nothing here runs on a call's path, so no call ever waits for a witness.

Collected cosignatures live in ``witnesses.db`` in ``state_dir`` (SQLite), beside the checkpoint
notes they sign, so ``GET /ledger/checkpoint``, ``GET /ledger/proof/...`` and ``ledger bundle`` can
attach them, and a restart resumes from the sizes the witnesses last cosigned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from openexec_mcp.core.tlog.checkpoint import parse_checkpoint
from openexec_mcp.core.tlog.cosignature import WitnessKey, format_add_checkpoint, verify_cosignatures
from openexec_mcp.errors import MalformedInputError, VerificationError
from openexec_mcp.ledger.checkpoints import Ledger
from openexec_mcp.ledger.cosignatures import WITNESSES_DB, CosignatureStore
from openexec_mcp.store.base import StoredCheckpoint

__all__ = ["WITNESSES_DB", "ConfiguredWitness", "Witnessing", "build_witnessing"]

logger = logging.getLogger("openexec_mcp.ledger.witnessing")


_BACKOFF_START: Final = 0.5
_BACKOFF_MAX: Final = 60.0


@dataclass(frozen=True, slots=True)
class ConfiguredWitness:
    """One ``[[ledger.witnesses]]`` entry.

    Attributes:
        key: The witness's trusted name and public key.
        url: Its submission prefix (``POST <url>/add-checkpoint``).
    """

    key: WitnessKey
    url: str


@dataclass
class _WitnessStatus:
    cosigned_size: int | None = None
    last_cosigned_at: float | None = None
    last_error: str | None = None
    failures: int = 0
    wake: threading.Event = field(default_factory=threading.Event)


class Witnessing:
    """Collects cosignatures on the ledger's checkpoints in the background.

    Args:
        ledger: The ledger service (checkpoints and consistency proofs).
        witnesses: The configured witnesses.
        quorum: Cosignatures a checkpoint needs to count as witnessed (None: all).
        state_path: ``witnesses.db``.
        interval_seconds: Shortest time between two submissions to one witness, and between two
            checkpoints signed for witnessing, in seconds.
        timeout_seconds: HTTP timeout of one submission.
    """

    def __init__(
        self,
        ledger: Ledger,
        witnesses: Sequence[ConfiguredWitness],
        *,
        quorum: int | None,
        state_path: Path,
        interval_seconds: float = 1.0,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.ledger = ledger
        self.witnesses = list(witnesses)
        self.quorum = len(self.witnesses) if quorum is None else quorum
        self.cosignatures = CosignatureStore(state_path)
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._stop = threading.Event()
        self._status = {w.key.name: _WitnessStatus(self.cosignatures.cosigned_size(w.key.name)) for w in witnesses}
        self._threads: list[threading.Thread] = []

    @property
    def names(self) -> list[str]:
        """The configured witness names."""
        return [w.key.name for w in self.witnesses]

    def start(self) -> None:
        """Start the checkpoint thread and one submission thread per witness."""
        self._threads.append(threading.Thread(target=self._checkpoint_loop, name="openexec-witness-ckpt", daemon=True))
        for witness in self.witnesses:
            thread = threading.Thread(
                target=self._witness_loop, args=(witness,), name=f"openexec-witness-{witness.key.name}", daemon=True
            )
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop the threads (a submission under way finishes or times out) and close the database."""
        self._stop.set()
        for status in self._status.values():
            status.wake.set()
        for thread in self._threads:
            thread.join(timeout=self._timeout + 5)
        self.cosignatures.close()

    # -- what the routes read ---------------------------------------------------------------------

    def decorate(self, checkpoint: StoredCheckpoint) -> str:
        """Return the checkpoint note followed by every cosignature line collected for it."""
        return checkpoint.note + "".join(self.cosignatures.lines(checkpoint.size, checkpoint.root, self.names))

    def witnessed(self, min_size: int = 0) -> str | None:
        """Return the largest checkpoint that reached the quorum (with its cosignatures), or None."""
        return self.cosignatures.witnessed(self.quorum, self.names, min_size)

    def health(self) -> dict[str, Any]:
        """Return ``{"witness_quorum", "witnesses": {name: {"cosigned_size", "last_cosigned_at", "last_error"}}}``.

        ``cosigned_size`` is None until the witness first cosigned; ``last_cosigned_at`` is POSIX
        seconds; ``last_error`` the reason of the latest failed submission since the last success.
        """
        return {
            "witness_quorum": self.quorum,
            "witnesses": {
                name: {
                    "cosigned_size": status.cosigned_size,
                    "last_cosigned_at": status.last_cosigned_at,
                    "last_error": status.last_error,
                }
                for name, status in self._status.items()
            },
        }

    # -- background -------------------------------------------------------------------------------

    def _checkpoint_loop(self) -> None:
        store = self.ledger.store
        while not self._stop.wait(self._interval):
            try:
                latest = store.latest_checkpoint()
                if latest is None or store.ledger_size() > latest.size:
                    latest = self.ledger.checkpoint()
            except Exception as exc:  # the store may be down for a while; calls report that themselves
                logger.warning("witnessing: cannot read or sign a checkpoint: %s", exc)
                continue
            for witness in self.witnesses:
                status = self._status[witness.key.name]
                if status.cosigned_size is None or status.cosigned_size < latest.size:
                    status.wake.set()

    def _witness_loop(self, witness: ConfiguredWitness) -> None:
        status = self._status[witness.key.name]
        with httpx.Client(timeout=self._timeout) as client:
            while not self._stop.is_set():
                status.wake.wait()
                status.wake.clear()
                if self._stop.is_set():
                    return
                try:
                    self._submit_latest(client, witness, status)
                    status.failures, status.last_error = 0, None
                except Exception as exc:
                    status.failures += 1
                    status.last_error = str(exc) or type(exc).__name__
                    delay = min(_BACKOFF_MAX, _BACKOFF_START * 2 ** (status.failures - 1))
                    logger.warning("witness %s: %s; retrying in %.1f s", witness.key.name, status.last_error, delay)
                    if self._stop.wait(delay):
                        return
                    status.wake.set()
                    continue
                if self._stop.wait(self._interval):  # bounded rate: one submission per interval
                    return

    def _submit_latest(self, client: httpx.Client, witness: ConfiguredWitness, status: _WitnessStatus) -> None:
        checkpoint = self.ledger.store.latest_checkpoint()
        if checkpoint is None or (status.cosigned_size is not None and status.cosigned_size >= checkpoint.size):
            return
        old = status.cosigned_size or 0
        for _attempt in range(2):
            proof = self.ledger.consistency(old, checkpoint.size).proof if 0 < old < checkpoint.size else []
            body = format_add_checkpoint(old, proof, checkpoint.note)
            answer = client.post(witness.url.rstrip("/") + "/add-checkpoint", content=body)
            if answer.status_code == 409:
                size = _parse_size(answer.text)
                if size > checkpoint.size:
                    raise RuntimeError(f"the witness holds size {size}, above this ledger's {checkpoint.size}")
                old = size  # (size == ours: it cosigned this size before; resubmitted as old == size)
                continue
            if answer.status_code != 200:
                raise RuntimeError(f"add-checkpoint answered {answer.status_code}: {answer.text.strip()[:200]}")
            self._keep(witness, status, checkpoint, answer.text)
            return
        raise RuntimeError("add-checkpoint kept answering 409")

    def _keep(
        self, witness: ConfiguredWitness, status: _WitnessStatus, checkpoint: StoredCheckpoint, text: str
    ) -> None:
        # Verify the witness's lines on our note (c2sp.org/tlog-witness: concatenate and verify).
        lines = [line + "\n" for line in text.split("\n") if line]
        valid: dict[str, int] = {}
        try:
            valid = verify_cosignatures(checkpoint.note + "".join(lines), [witness.key])
            parse_checkpoint(checkpoint.note)
        except (VerificationError, MalformedInputError) as exc:
            raise RuntimeError(f"the witness answered an invalid cosignature: {exc.message}") from None
        if witness.key.name not in valid:
            raise RuntimeError("the witness answered no cosignature by its configured key")
        mine = [line for line in lines if verify_cosignatures(checkpoint.note + line, [witness.key])]
        self.cosignatures.add(checkpoint, witness.key.name, mine[0], valid[witness.key.name])
        status.cosigned_size, status.last_cosigned_at = checkpoint.size, time.time()
        logger.info("witness %s cosigned checkpoint %d", witness.key.name, checkpoint.size)


def _parse_size(text: str) -> int:
    value = text.strip()
    if not value.isascii() or not value.isdecimal():
        raise RuntimeError("a 409 answer without a tree size")
    return int(value)


def build_witnessing(settings: Any, ledger: Ledger) -> Witnessing | None:
    """Return the witnessing service of ``[ledger]`` settings (not started), or None without witnesses.

    Raises:
        ConfigError: A witness public key is malformed, two witnesses share a name, or the quorum
            exceeds the number of witnesses.
    """
    from openexec_mcp.core.tlog.cosignature import parse_witness_key
    from openexec_mcp.errors import ConfigError

    section = settings.ledger
    if not section.witnesses:
        return None
    configured: list[ConfiguredWitness] = []
    for entry in section.witnesses:
        try:
            key = parse_witness_key(f"{entry.name}={entry.public_key}")
        except MalformedInputError as exc:
            raise ConfigError(f"invalid config: ledger.witnesses {entry.name}: {exc.message}") from None
        if key.name != entry.name:
            raise ConfigError(f"invalid config: ledger.witnesses {entry.name}: the vkey names {key.name}")
        configured.append(ConfiguredWitness(key, entry.url))
    if len({w.key.name for w in configured}) != len(configured):
        raise ConfigError("invalid config: ledger.witnesses: two witnesses share a name")
    if section.witness_quorum is not None and section.witness_quorum > len(configured):
        raise ConfigError("invalid config: ledger.witness_quorum exceeds the number of witnesses")
    return Witnessing(
        ledger,
        configured,
        quorum=section.witness_quorum,
        state_path=settings.state_dir / WITNESSES_DB,
        interval_seconds=section.witness_interval_seconds,
    )
