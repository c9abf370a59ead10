"""The decision journal: the console's history and the seed's decision queue, across restarts (SPEC §13).

With a state directory, every decision is appended to ``decisions.jsonl``, one JSON object a
line: ``{"decision": {...Decision...}, "seed": {cursor, kind, artifact} | null}``; ``seed`` is the
signed artifact queued for the execution servers that poll ``GET /v1/decisions``. On start the
lines are read back: the history (newest first, at most :attr:`DecisionJournal.MAX_HISTORY`),
which requests are decided (never shown as pending again), the queue and its cursor. A malformed
line is skipped with a warning. Without a state directory, all of it is kept in memory only.

Not thread-safe: the service calls it holding its lock.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from openexec_mcp.governance.records import Decision

__all__ = ["DecisionJournal"]

logger = logging.getLogger("openexec_mcp.governance")


class DecisionJournal:
    """The history of decisions, the requests they decided, and the seed decisions servers poll.

    Attributes:
        history: Decisions, newest first, at most :attr:`MAX_HISTORY`.
        decided: ``(source, request_id)`` of every decision recorded (the whole journal, not only the history).
        seed_decisions: ``{"cursor": int, "kind": "approval" | "grant", "artifact": {...}}``, oldest first.
    """

    MAX_HISTORY = 1_000

    def __init__(self, path: Path | None) -> None:
        """Read back ``path`` (``<state_dir>/decisions.jsonl``) when it exists; ``None`` keeps memory only."""
        self.path = path
        self.history: list[Decision] = []
        self.decided: set[tuple[str, str]] = set()
        self.seed_decisions: list[dict[str, Any]] = []
        self._cursor = 0
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                decision = Decision(**entry["decision"])
            except (ValueError, KeyError, TypeError):
                logger.warning("skipping a malformed line of %s", self.path)
                continue
            self.history.insert(0, decision)
            self.decided.add((decision.source, decision.request_id))
            if entry.get("seed") is not None:
                self.seed_decisions.append(entry["seed"])
                self._cursor = max(self._cursor, int(entry["seed"]["cursor"]))
        del self.history[self.MAX_HISTORY :]

    def queue(self, kind: str, artifact: dict[str, Any]) -> dict[str, Any]:
        """Queue a signed artifact for the seed poll and return its entry (``kind``: ``approval`` | ``grant``).

        The entry is journaled with its decision by :meth:`record`.
        """
        entry = {"cursor": self._next_cursor(), "kind": kind, "artifact": artifact}
        self.seed_decisions.append(entry)
        return entry

    def record(self, decision: Decision, seed: dict[str, Any] | None) -> None:
        """Keep a decision in memory and, with a state directory, append it (and its seed entry) to the file.

        Raises:
            OSError: The journal cannot be written.
        """
        self.history.insert(0, decision)
        del self.history[self.MAX_HISTORY :]
        self.decided.add((decision.source, decision.request_id))
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"decision": asdict(decision), "seed": seed}, sort_keys=True) + "\n")

    def since(self, since: int, limit: int = 100) -> dict[str, Any]:
        """Return at most ``limit`` seed decisions after ``since``.

        Returns:
            ``{"decisions": [{cursor, kind, artifact}], "next_cursor": int}``; ``next_cursor`` is
            the last cursor returned, or ``since`` (at least 0) when there is none.
        """
        page = [d for d in self.seed_decisions if d["cursor"] > since][:limit]
        last = page[-1]["cursor"] if page else max(since, 0)
        return {"decisions": page, "next_cursor": last}

    def _next_cursor(self) -> int:
        """Return a cursor that only grows, across restarts too (microseconds since the epoch, or one more)."""
        self._cursor = max(self._cursor + 1, time.time_ns() // 1000)
        return self._cursor
