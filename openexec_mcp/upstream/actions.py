"""Upstream tools as guarded actions (SPEC §11, "Tools"; the gate contract of the action sources).

Each upstream tool whose advertised name ``<upstream>.<tool>`` matches the SPEC §1 regex becomes
one :class:`UpstreamAction`; the others are skipped with one warning each (per upstream and tool
name, not per re-listing). The action:

- advertises the upstream ``inputSchema`` (the transport adds the reserved ``nonce`` unless the
  tool declares its own, in which case the gate's nonce comes from ``_meta["dev.openexec/nonce"]``);
- validates the arguments against that schema with a JSON Schema validator (2020-12 unless the
  schema names another ``$schema``), strictly: no coercion, no network look-ups for ``$ref``;
- passes ``title`` and the annotations through (MCP defaults when absent: not read-only,
  destructive, not idempotent, open world);
- forwards the call through its :class:`~openexec_mcp.upstream.connection.UpstreamConnection`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from openexec_mcp.core.action import TOOL_NAME_PATTERN
from openexec_mcp.errors import InvalidRequestError
from openexec_mcp.registry import Action
from openexec_mcp.upstream.connection import UpstreamConnection

__all__ = ["UpstreamAction", "actions_for"]

logger = logging.getLogger("openexec_mcp.upstream")

_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True, eq=False, kw_only=True)
class UpstreamAction(Action):
    """One upstream tool, guarded: an :class:`~openexec_mcp.registry.Action` of the gate contract.

    ``handler`` forwards to the upstream; ``upstream`` (for the receipt) is the upstream's name
    and its ``initialize`` / ``server/discover`` identity when the tools were listed.

    Attributes:
        tool_name: The upstream's own name of the tool (the advertised name is ``<upstream>.<tool>``).
        connection: The upstream it is forwarded to.
        tool: The upstream's tool definition, as listed.
        validator: The compiled JSON Schema validator of its ``inputSchema``.
        trusted_read_only: ``trust_annotations`` is on and the tool says ``readOnlyHint``: the
            policy may default it to ``auto`` (SPEC §11); never set otherwise.
    """

    tool_name: str
    connection: UpstreamConnection
    tool: types.Tool
    validator: Validator
    trusted_read_only: bool = False

    @property
    def source(self) -> str:
        """The catalog source of this action, ``upstream:<name>``."""
        return f"upstream:{self.connection.name}"

    def input_schema(self) -> dict[str, Any]:
        """Return the advertised JSON Schema of the arguments, without the reserved nonce."""
        return dict(self.tool.input_schema)

    def output_schema(self) -> dict[str, Any] | None:
        """Return the upstream's ``outputSchema`` (the structured content of its results), if any."""
        return dict(self.tool.output_schema) if self.tool.output_schema is not None else None

    def fingerprint(self) -> str:
        """Return what clients see of this tool (its definition and nonce rules) as one string."""
        return self.tool.model_dump_json(by_alias=True) + f"|{self.nonce_required}|{self.trusted_read_only}"

    @property
    def annotations(self) -> types.ToolAnnotations | None:
        """The upstream's annotations, passed through unchanged."""
        return self.tool.annotations

    def accepts_extra_fields(self) -> bool:
        """Return whether the schema lets undeclared properties through (JSON Schema decides)."""
        return self.tool.input_schema.get("additionalProperties", True) is not False

    def parse_payload(self, payload: Mapping[str, Any], payload_bytes: bytes = b"") -> dict[str, Any]:
        """Validate the arguments against the upstream ``inputSchema`` (step 1 of the gate).

        Args:
            payload: The untrusted arguments, without the reserved nonce (already within the
                SPEC §2 limits).
            payload_bytes: Their canonical bytes (unused: the schema is checked on the value).

        Returns:
            The payload, unchanged: it is what is forwarded.

        Raises:
            InvalidRequestError: The arguments do not match; the message names the JSON pointer and
                the failed keyword, never the value.
        """
        arguments = dict(payload)
        try:
            error: jsonschema_exceptions.ValidationError | None = _best_match(self.validator.iter_errors(arguments))
        except Unresolvable:
            raise InvalidRequestError(
                f"{self.name}: the upstream inputSchema has a $ref that does not resolve"
            ) from None
        if error is not None:
            parts: list[str | int] = list(error.absolute_path)  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
            pointer = "/" + "/".join(str(part) for part in parts)
            keyword = str(error.validator)  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
            raise InvalidRequestError(f"{self.name}: arguments do not match the inputSchema at {pointer} ({keyword})")
        return arguments


def actions_for(connection: UpstreamConnection) -> list[UpstreamAction]:
    """Build the guarded actions of an upstream's current tool list.

    Tools with a name outside the SPEC §1 regex (once prefixed), or with an ``inputSchema`` that is
    not a valid JSON Schema, are skipped with one warning each.
    """
    settings = connection.settings
    found: list[UpstreamAction] = []
    for tool in _unique(connection.tools):
        name = f"{connection.name}.{tool.name}"
        if not TOOL_NAME_PATTERN.match(name):
            _warn_once(
                connection.name, tool.name, f"tool name {name!r} does not match ^[A-Za-z][A-Za-z0-9_.-]{{0,63}}$"
            )
            continue
        schema = dict(tool.input_schema)
        cls = validators.validator_for(schema, default=validators.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema_exceptions.SchemaError:
            _warn_once(connection.name, tool.name, f"tool {name!r} has an invalid inputSchema")
            continue
        annotations = tool.annotations or types.ToolAnnotations()
        read_only = bool(annotations.read_only_hint)
        found.append(
            UpstreamAction(
                name=name,
                handler=functools.partial(_forward, connection, tool.name),
                input_model=None,
                output_model=None,
                tool_name=tool.name,
                connection=connection,
                tool=tool,
                validator=cls(schema),
                nonce_required=settings.nonce == "required",
                declares_nonce="nonce" in (schema.get("properties") or {}),
                upstream={"name": connection.name, "server": dict(connection.server_info)},
                title=tool.title or annotations.title,
                description=tool.description or "",
                read_only=read_only,
                destructive=annotations.destructive_hint is not False and not read_only,
                idempotent=bool(annotations.idempotent_hint),
                open_world=annotations.open_world_hint is not False,
                trusted_read_only=settings.trust_annotations and read_only,
            )
        )
    return found


async def _forward(connection: UpstreamConnection, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Forward one call (the handler of an upstream tool, step 5 of the gate)."""
    return await connection.call_tool(tool, arguments)


def _best_match(
    errors: Iterable[jsonschema_exceptions.ValidationError],
) -> jsonschema_exceptions.ValidationError | None:
    best_match: Callable[..., jsonschema_exceptions.ValidationError | None] = jsonschema_exceptions.best_match  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    return best_match(errors)


def _unique(tools: Iterable[types.Tool]) -> list[types.Tool]:
    seen: set[str] = set()
    unique: list[types.Tool] = []
    for tool in tools:
        if tool.name not in seen:
            seen.add(tool.name)
            unique.append(tool)
    return unique


def _warn_once(upstream: str, tool: str, message: str) -> None:
    if (upstream, tool) in _warned:
        return
    _warned.add((upstream, tool))
    logger.warning("upstream %r: skipping a tool: %s", upstream, message)
