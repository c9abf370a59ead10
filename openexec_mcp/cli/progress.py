"""Progress lines for long commands: on a terminal only, on stderr, at most ten updates a second.

Piped or redirected, a command prints nothing extra, so its stdout and stderr stay machine-readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """A ``label: done/total`` line redrawn in place on stderr when stderr is a terminal.

    Args:
        label: What is being counted (``"verify"``, ``"export"``...).
        total: The expected count, or ``None`` when unknown.
        stream: Where to draw (default ``sys.stderr``); nothing is drawn unless it is a TTY.
        interval_seconds: The least time between two redraws.
    """

    def __init__(
        self, label: str, total: int | None, *, stream: TextIO | None = None, interval_seconds: float = 0.1
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = self._stream.isatty()
        self._label = label
        self._total = total
        self._interval = interval_seconds
        self._next = 0.0
        self._drawn = False

    def update(self, done: int) -> None:
        """Record that ``done`` items are finished; redraw if the interval has passed."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        self._draw(done)

    def close(self, done: int | None = None) -> None:
        """Draw the final count (when given) and end the line."""
        if not self.enabled:
            return
        if done is not None:
            self._draw(done)
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, done: int) -> None:
        if self._total:
            text = f"\r{self._label}: {done:,}/{self._total:,} ({100 * done // self._total}%)"
        else:
            text = f"\r{self._label}: {done:,}"
        self._stream.write(text)
        self._stream.flush()
        self._drawn = True
