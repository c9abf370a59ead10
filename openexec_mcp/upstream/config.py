"""``[[upstreams]]``: the MCP servers openexec-mcp guards (SPEC §11).

One :class:`UpstreamSettings` per table. A stdio upstream has ``command`` (and ``args``, ``env``,
``cwd``); an HTTP upstream has ``url`` (and ``transport``, ``headers``). Exactly one of the two.
Header values of the form ``env:NAME`` are read from the server's environment when the upstream
connects, so tokens never sit in the config file; a missing variable is a start-up error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from openexec_mcp.errors import ConfigError

__all__ = ["UPSTREAM_NAME_PATTERN", "UpstreamSettings", "resolve_env_value"]

UPSTREAM_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
"""An upstream's name; its tools are advertised as ``<name>.<tool>``."""


class UpstreamSettings(BaseModel):
    """One ``[[upstreams]]`` table.

    Attributes:
        name: ``^[a-z][a-z0-9_-]{0,31}$``; the prefix of the advertised tool names.
        command: The executable of a stdio upstream (looked up on ``PATH``).
        args: Its arguments.
        env: Variables merged over the minimal environment the MCP SDK passes to a subprocess
            (``HOME``, ``LOGNAME``, ``PATH``, ``SHELL``, ``TERM``, ``USER``); nothing else of the
            server's environment (keys, tokens) reaches the upstream.
        cwd: Working directory of the stdio upstream.
        url: The endpoint of an HTTP upstream (``.../mcp`` or, for ``sse``, ``.../sse``).
        transport: ``streamable-http`` (default for ``url``) or ``sse`` (legacy).
        headers: HTTP headers sent to the upstream; a value ``env:NAME`` is read from the
            environment.
        nonce: ``required``: every call carries a client nonce. ``optional``: a call without one
            gets a server nonce (no replay protection for it; receipts say ``nonce_source``).
        call_timeout_seconds: How long a forwarded ``tools/call`` may take (seconds); past it the
            call is ``indeterminate`` / ``outcome_unknown``.
        connect_timeout_seconds: How long connecting and listing tools may take (seconds).
        trust_annotations: ``true``: tools with ``readOnlyHint`` default to ``auto`` in
            ``clawshield`` mode. Annotations never weaken the policy otherwise.
        expose_resources: Pass ``resources/list|read|templates/list`` through (not gated).
        expose_prompts: Pass ``prompts/list|get`` through as ``<name>.<prompt>`` (not gated).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=UPSTREAM_NAME_PATTERN)
    command: str | None = None
    args: list[str] = Field(default_factory=list[str])
    env: dict[str, str] = Field(default_factory=dict[str, str])
    cwd: Path | None = None
    url: str | None = None
    transport: Literal["streamable-http", "sse"] | None = None
    headers: dict[str, str] = Field(default_factory=dict[str, str])
    nonce: Literal["required", "optional"] = "required"
    call_timeout_seconds: float = Field(default=60.0, gt=0, le=86400)
    connect_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    trust_annotations: bool = False
    expose_resources: bool = False
    expose_prompts: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> UpstreamSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError(f"upstream {self.name!r}: give exactly one of 'command' (stdio) or 'url' (HTTP)")
        if self.command is not None and (self.transport is not None or self.headers):
            raise ValueError(f"upstream {self.name!r}: 'transport' and 'headers' are for 'url' upstreams")
        if self.url is not None and (self.args or self.env or self.cwd is not None):
            raise ValueError(f"upstream {self.name!r}: 'args', 'env' and 'cwd' are for 'command' upstreams")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"upstream {self.name!r}: 'url' must be http:// or https://")
        return self

    @property
    def kind(self) -> Literal["stdio", "streamable-http", "sse"]:
        """The transport towards the upstream."""
        if self.command is not None:
            return "stdio"
        return self.transport or "streamable-http"

    def resolved_headers(self) -> dict[str, str]:
        """Return the headers with every ``env:NAME`` value read from the environment.

        Raises:
            ConfigError: A named variable is not set (the message names the variable, never a value).
        """
        return {
            key: resolve_env_value(value, f"upstream {self.name!r} header {key!r}")
            for key, value in self.headers.items()
        }


def resolve_env_value(value: str, where: str) -> str:
    """Return ``value``, or the environment variable it names when it reads ``env:NAME``.

    Raises:
        ConfigError: ``env:NAME`` names a variable that is not set.
    """
    if not value.startswith("env:"):
        return value
    name = value[4:]
    found = os.environ.get(name)
    if found is None:
        raise ConfigError(f"{where}: environment variable {name!r} is not set")
    return found
