"""The ``[actions.http_request]`` and ``[actions.send_email]`` tables (SPEC §12).

Pure pydantic models, imported by :mod:`openexec_mcp.config`. Secrets never appear in a config
file: ``value``, ``username`` and ``password`` are ``"env:NAME"`` references, read from the
environment once at start (:func:`resolve_env`), kept as :class:`~pydantic.SecretStr`.
"""

from __future__ import annotations

import os
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

from openexec_mcp.builtins.urls import parse_smtp_url, parse_url_pattern
from openexec_mcp.errors import ConfigError

__all__ = [
    "CredentialSettings",
    "HttpRequestSettings",
    "SendEmailSettings",
    "resolve_env",
]

ENV_REFERENCE = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]{0,127})$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
METHOD = re.compile(r"^[A-Z]{1,16}$")


def _env_reference(value: str) -> str:
    if not ENV_REFERENCE.match(value):
        raise ValueError('must be "env:NAME" (secrets are read from the environment, never from the file)')
    return value


def _url_pattern(value: str) -> str:
    parse_url_pattern(value)  # raises ValueError with the reason
    return value


EnvReference = Annotated[str, AfterValidator(_env_reference)]
UrlPatternText = Annotated[str, AfterValidator(_url_pattern)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CredentialSettings(_Table):
    """``[[actions.http_request.credentials]]``: a header the server adds for matching URLs."""

    url: UrlPatternText
    """A pattern of the ``allowed_urls`` form; the header is added to every request (and redirect
    hop) whose normalised URL it matches."""
    header: str = Field(pattern=HEADER_NAME.pattern)
    """The header name (e.g. ``Authorization``); a payload header of this name is refused."""
    value: EnvReference
    """``"env:NAME"``: the header value, read from the environment at start."""


class HttpRequestSettings(_Table):
    """``[actions.http_request]``."""

    allowed_urls: list[UrlPatternText] = Field(min_length=1)
    """Patterns ``scheme://host[:port]/path``; ``*``, ``?`` and ``[...]`` as in :mod:`fnmatch`,
    matched over the normalised URL, the authority and the path (with the query) separately."""
    methods: list[str] = Field(default_factory=lambda: ["GET"], min_length=1)
    """Allowed methods, upper case."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    """Deadline for the whole exchange (connect, send, every redirect hop, reading), in seconds."""
    max_response_bytes: int = Field(default=262144, ge=0, le=16 * 1024 * 1024)
    """Body bytes kept; a longer body is cut there and the result says ``truncated: true``."""
    follow_redirects: bool = False
    """Follow 301/302/303/307/308, at most 5 hops, each to an allowed URL with an allowed method."""
    credentials: list[CredentialSettings] = Field(default_factory=list[CredentialSettings])
    ca_file: str | None = None
    """PEM bundle of the CAs trusted for https (default: the certifi bundle)."""

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        for method in methods:
            if not METHOD.match(method):
                raise ValueError(f"method {method[:20]!r} must be an upper-case token such as GET")
        return methods


class SendEmailSettings(_Table):
    """``[actions.send_email]``."""

    smtp_url: str
    """``smtp://host:port`` (STARTTLS when the server offers it) or ``smtps://host:port`` (TLS
    from the first byte). Default ports 587 and 465."""
    from_address: str = Field(alias="from", min_length=3, max_length=254)
    """The envelope sender and ``From:`` header; the model cannot choose it."""
    allowed_recipients: list[str] = Field(min_length=1)
    """:mod:`fnmatch` patterns over lower-cased addresses (``*@example.com``), for ``to``, ``cc``
    and ``reply_to``."""
    username: EnvReference | None = None
    password: EnvReference | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    """Deadline for one delivery (connect, TLS, login, every command), in seconds."""
    require_tls: bool = False
    """``smtp://`` only: refuse to send (``upstream_unavailable``) when the server does not offer
    STARTTLS. Whatever this says, ``username``/``password`` are never sent over a plain connection."""
    ca_file: str | None = None
    """PEM bundle of the CAs trusted for TLS (default: the system's)."""

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str) -> str:
        parse_smtp_url(value)
        return value

    @field_validator("allowed_recipients")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        return [pattern.lower() for pattern in patterns]


def resolve_env(reference: str | None, key: str) -> SecretStr | None:
    """Read an ``"env:NAME"`` reference from the environment.

    Args:
        reference: ``"env:NAME"`` (already validated), or ``None``.
        key: The config key, for the error message (``actions.send_email.password``).

    Returns:
        The value, or ``None`` when ``reference`` is ``None``.

    Raises:
        ConfigError: The variable is unset or empty. The message names the key and the variable,
            never a value.
    """
    if reference is None:
        return None
    match = ENV_REFERENCE.match(reference)
    if match is None:  # pragma: no cover - the models validate it
        raise ConfigError(f'invalid config: {key}: must be "env:NAME"')
    value = os.environ.get(match.group(1))
    if not value:
        raise ConfigError(f"invalid config: {key}: environment variable {match.group(1)} is not set")
    return SecretStr(value)
