"""The exposed actions, which may change while the server runs (SPEC §1, §11).

The registry's actions (``@action``, the real actions) are the source ``registry`` and never change;
each upstream is a source ``upstream:<name>`` whose actions are replaced whenever the upstream
(re)lists its tools. A name belongs to one source: an upstream tool whose advertised name is taken
by another source is skipped with a warning (the registry wins, then the first upstream).
Listeners are told after every change (the MCP transport re-lists its tools and sends
``notifications/tools/list_changed``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["Catalog"]

logger = logging.getLogger("openexec_mcp.gate")

REGISTRY_SOURCE = "registry"


class Catalog:
    """Name → action, by source.

    Args:
        actions: The fixed actions (source ``registry``).
    """

    def __init__(self, actions: Iterable[Any] = ()) -> None:
        self._sources: dict[str, dict[str, Any]] = {REGISTRY_SOURCE: {action.name: action for action in actions}}
        self._by_name: dict[str, Any] = dict(self._sources[REGISTRY_SOURCE])
        self._listeners: list[Callable[[], Any]] = []
        self._async_listeners: list[Callable[[], Awaitable[None]]] = []

    def get(self, name: str) -> Any | None:
        """Return the action called ``name``, or ``None``."""
        return self._by_name.get(name)

    def all(self) -> list[Any]:
        """Return every action, by name."""
        return [self._by_name[name] for name in sorted(self._by_name)]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self, source: str) -> list[str]:
        """Return the names one source currently provides."""
        return sorted(self._sources.get(source, {}))

    def replace_source(self, source: str, actions: Iterable[Any]) -> bool:
        """Replace every action of ``source``; return whether the exposed set changed.

        Raises:
            ValueError: ``source`` is the fixed ``registry`` source.
        """
        if source == REGISTRY_SOURCE:
            raise ValueError("the registry's actions are fixed")
        owned: dict[str, Any] = {}
        for action in actions:
            holder = self._owner(action.name)
            if holder is not None and holder != source:
                logger.warning("%s: tool %r is already provided by %s; skipped", source, action.name, holder)
                continue
            owned[action.name] = action
        before = self._sources.get(source, {})
        self._sources[source] = owned
        self._by_name = {name: item for actions_of in self._sources.values() for name, item in actions_of.items()}
        changed = set(before) != set(owned) or any(
            _fingerprint(before[name]) != _fingerprint(owned[name]) for name in owned
        )
        if changed:
            for listener in list(self._listeners):
                try:
                    listener()
                except Exception:  # one listener's fault must not hide the change from the others
                    logger.exception("catalog listener failed")
        return changed

    def on_change(self, listener: Callable[[], Any]) -> None:
        """Call ``listener()`` (sync; schedule async work yourself) after every change."""
        self._listeners.append(listener)

    def on_change_async(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Await ``listener()`` after every change made through :meth:`publish`."""
        self._async_listeners.append(listener)

    async def publish(self, source: str, actions: Iterable[Any]) -> None:
        """:meth:`replace_source`, then await the async listeners when the set changed."""
        if self.replace_source(source, actions):
            for listener in list(self._async_listeners):
                try:
                    await listener()
                except Exception:
                    logger.exception("catalog listener failed")

    def _owner(self, name: str) -> str | None:
        for source, actions in self._sources.items():
            if name in actions:
                return source
        return None


def _fingerprint(action: Any) -> Any:
    """Return what a client sees of an action: a re-listing that yields the same is no change."""
    fingerprint = getattr(action, "fingerprint", None)
    return fingerprint() if callable(fingerprint) else id(action)
