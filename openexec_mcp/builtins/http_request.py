"""The ``http_request`` real action (SPEC §12): one HTTP exchange, inside an allow list.

The gate calls :meth:`HttpRequest.precheck` before approval and the nonce claim (a URL, method
or header outside the config is ``denied`` / ``url_not_allowed`` with a receipt, nothing sent),
then the handler, which checks again and sends. What the handler decides:

- every answer from the server (any status) is ``executed`` with the result of SPEC §12;
- nothing left the process (connection refused, DNS, TLS handshake): ``UpstreamUnavailableError``,
  so the gate releases the nonce and a retry with the same nonce is safe;
- the request headers had started to go out and no complete answer came (timeout, reset,
  dropped connection): ``OutcomeUnknownError``, recorded ``indeterminate``, never retried here;
- the answer's status and headers came but the body was cut off, or a redirect target could not be
  reached: ``UpstreamError`` (``failed``) with what was received as the result.

Credentials (``[[actions.http_request.credentials]]``) are added to the outgoing request by the
server only; they are not in the payload, and their values are redacted from the response
headers and body before anything is returned, hashed, recorded or logged.
"""

from __future__ import annotations

import base64
import codecs
import logging
import re
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from openexec_mcp._version import __version__
from openexec_mcp.builtins.config import HttpRequestSettings, resolve_env
from openexec_mcp.builtins.urls import TargetUrl, UrlPattern, join_location, parse_target_url, parse_url_pattern
from openexec_mcp.errors import OutcomeUnknownError, UpstreamError, UpstreamUnavailableError, UrlNotAllowedError

__all__ = ["HttpPolicy", "HttpRequestIn", "HttpResponseOut", "build_http_policy", "send_http_request"]

logger = logging.getLogger("openexec_mcp.builtins.http_request")

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
REDACTED = "[redacted]"
MIN_CREDENTIAL_CHARS = 8
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$"
# Message framing and routing belong to the client: a payload may not set them (invalid_request).
FORBIDDEN_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"}
)
# Dropped from the payload's headers when a redirect leaves the origin (as browsers and httpx do).
ORIGIN_BOUND_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class HttpRequestIn(BaseModel):
    """``{"method", "url", "headers"?, "json"?, "body"?}``: one HTTP request (SPEC §12)."""

    model_config = ConfigDict(extra="forbid", title="HttpRequestIn")

    method: str = Field(pattern=r"^[A-Za-z]{1,16}$", description="GET, POST, ... (among the allowed methods)")
    url: str = Field(min_length=1, max_length=2048, description="An absolute http(s) URL inside allowed_urls")
    headers: dict[str, str] = Field(default_factory=dict[str, str], max_length=64)
    json_body: Any = Field(default=None, alias="json", description="A JSON request body (not with body)")
    body: str | None = Field(default=None, description="A text request body, sent as UTF-8 (not with json)")

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for name, value in headers.items():
            lower = name.lower()
            if not re.match(_HEADER_NAME, name):
                raise ValueError("a header name is not an RFC 9110 token")
            if lower in seen:
                raise ValueError(f"header {name!r} is given twice")
            if lower in FORBIDDEN_HEADERS or lower.startswith("proxy-"):
                raise ValueError(f"header {name!r} is set by the server, not the payload")
            if not re.fullmatch(r"[\t\x20-\x7e]{0,8192}", value):
                raise ValueError(f"header {name!r} has CR, LF, control or non-ASCII characters, or is too long")
            seen.add(lower)
        return headers

    @model_validator(mode="after")
    def _one_body(self) -> HttpRequestIn:
        if "json_body" in self.model_fields_set and self.body is not None:
            raise ValueError("give json or body, not both")
        return self


class HttpResponseOut(BaseModel):
    """``{"status", "headers", "body", "body_encoding", "truncated"}`` (SPEC §12).

    Header names are lower case; repeated headers are joined with ``", "``. ``body`` holds the
    bytes as sent (``Accept-Encoding: identity`` is asked for; a compressed body stays compressed,
    in base64), UTF-8 text when they decode as such, else base64.
    """

    model_config = ConfigDict(title="HttpResponseOut")

    status: int
    headers: dict[str, str]
    body: str
    body_encoding: Literal["utf-8", "base64"]
    truncated: bool


@dataclass(frozen=True, slots=True)
class Credential:
    """One server-held header: added to requests whose normalised URL matches ``pattern``."""

    pattern: UrlPattern
    header: str
    value: SecretStr


@dataclass(frozen=True, slots=True)
class HttpPolicy:
    """``[actions.http_request]`` in force, with the credential values read from the environment."""

    allowed_urls: tuple[UrlPattern, ...]
    methods: frozenset[str]
    timeout_seconds: float
    max_response_bytes: int
    follow_redirects: bool
    credentials: tuple[Credential, ...]
    verify: ssl.SSLContext | bool

    @property
    def credential_headers(self) -> frozenset[str]:
        """Lower-case names of every credential header (a payload may not set them)."""
        return frozenset(credential.header.lower() for credential in self.credentials)

    def allowed(self, method: str, url: TargetUrl) -> bool:
        """Return whether ``method`` on ``url`` is inside the allow list."""
        return method in self.methods and any(pattern.matches(url) for pattern in self.allowed_urls)

    def check(self, payload: HttpRequestIn) -> TargetUrl:
        """Check the payload against the allow list (the precheck: pure, no I/O); return the URL to send.

        Raises:
            UrlNotAllowedError: URL unacceptable or outside ``allowed_urls``, method not allowed,
                or a payload header that a credential owns.
        """
        url = parse_target_url(payload.url)
        if not self.allowed(payload.method.upper(), url):
            raise UrlNotAllowedError("this method and URL are not in the server's allow list")
        owned = sorted(name for name in payload.headers if name.lower() in self.credential_headers)
        if owned:
            raise UrlNotAllowedError(f"header {owned[0]!r} is set by the server; the payload may not set it")
        return url

    def secrets(self) -> list[bytes]:
        """Credential values (and their token after an auth scheme) to redact from answers."""
        found: set[bytes] = set()
        for credential in self.credentials:
            value = credential.value.get_secret_value()
            found.add(value.encode())
            scheme, _, token = value.partition(" ")
            if token and len(token) >= 8 and scheme.isalpha():
                found.add(token.encode())
        return sorted(found, key=len, reverse=True)


def build_http_policy(settings: HttpRequestSettings) -> HttpPolicy:
    """Freeze ``[actions.http_request]``, reading credential values from the environment.

    Raises:
        ConfigError: A credential's ``env:NAME`` is unset, or ``ca_file`` cannot be loaded.
    """
    from openexec_mcp.errors import ConfigError

    credentials: list[Credential] = []
    for index, entry in enumerate(settings.credentials):
        key = f"actions.http_request.credentials[{index}].value"
        value = resolve_env(entry.value, key) or SecretStr("")
        if len(value.get_secret_value()) < MIN_CREDENTIAL_CHARS:
            # A value this short cannot be told apart from ordinary text when redacting answers.
            raise ConfigError(f"invalid config: {key}: the value needs at least {MIN_CREDENTIAL_CHARS} characters")
        if not re.fullmatch(r"[\x20-\x7e]+", value.get_secret_value()):
            raise ConfigError(f"invalid config: {key}: the value must be printable ASCII (no CR/LF)")
        credentials.append(Credential(parse_url_pattern(entry.url), entry.header, value))
    verify: ssl.SSLContext | bool = True
    if settings.ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=settings.ca_file)
        except (OSError, ssl.SSLError):
            raise ConfigError("invalid config: actions.http_request.ca_file: cannot load that CA bundle") from None
    return HttpPolicy(
        allowed_urls=tuple(parse_url_pattern(text) for text in settings.allowed_urls),
        methods=frozenset(settings.methods),
        timeout_seconds=settings.timeout_seconds,
        max_response_bytes=settings.max_response_bytes,
        follow_redirects=settings.follow_redirects,
        credentials=tuple(credentials),
        verify=verify,
    )


@dataclass(slots=True)
class _Hop:
    """One request of the exchange and what is known about it."""

    method: str
    url: TargetUrl
    headers: dict[str, str]
    content: bytes | None
    sent: bool = False
    """Set when the request headers start to go out: from then on the server may have it."""
    response: httpx.Response | None = None
    chunks: list[bytes] = field(default_factory=list[bytes])


async def send_http_request(policy: HttpPolicy, payload: HttpRequestIn) -> HttpResponseOut:
    """Send the request (and allowed redirects) once; never retry.

    Args:
        policy: The frozen config.
        payload: The validated payload (untrusted values).

    Returns:
        The last answer, redacted.

    Raises:
        UrlNotAllowedError: As :meth:`HttpPolicy.check` (checked again here; nothing sent).
        UpstreamUnavailableError: Nothing was sent (connection, DNS or TLS failure).
        OutcomeUnknownError: The request went out and no complete answer came in time.
        UpstreamError: A partial answer (cut-off body, unreachable redirect target), as the result.
    """
    url = policy.check(payload)
    headers = dict(payload.headers)
    lower = {name.lower() for name in headers}
    if "user-agent" not in lower:
        headers["User-Agent"] = f"openexec-mcp/{__version__}"
    if "accept-encoding" not in lower:
        headers["Accept-Encoding"] = "identity"  # bytes as sent: no decompression bomb to bound
    content: bytes | None = None
    if "json_body" in payload.model_fields_set:
        content = httpx.Request("POST", "http://json.invalid/", json=payload.json_body).content
        if "content-type" not in lower:
            headers["Content-Type"] = "application/json"
    elif payload.body is not None:
        content = payload.body.encode("utf-8")
    hop = _Hop(payload.method.upper(), url, headers, content)
    previous: HttpResponseOut | None = None
    try:
        # One deadline for the whole exchange, every hop included (a server dripping one byte at a
        # time cannot hold the call open); a cancellation from the gate propagates untouched.
        with anyio.fail_after(policy.timeout_seconds):
            async with httpx.AsyncHTTPTransport(verify=policy.verify, trust_env=False, retries=0) as transport:
                for number in range(MAX_REDIRECTS + 1):
                    try:
                        answer, location = await _exchange(transport, policy, hop)
                    except httpx.TransportError as exc:
                        _fail(exc, hop, previous, policy)
                    next_hop = _redirect(policy, hop, answer, location) if number < MAX_REDIRECTS else None
                    if next_hop is None:
                        return answer
                    previous, hop = answer, next_hop
    except TimeoutError as exc:
        _fail(exc, hop, previous, policy)
    raise AssertionError("unreachable")  # pragma: no cover


async def _exchange(
    transport: httpx.AsyncHTTPTransport, policy: HttpPolicy, hop: _Hop
) -> tuple[HttpResponseOut, str | None]:
    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_headers.started"):
            hop.sent = True

    headers = dict(hop.headers)
    for credential in policy.credentials:
        if credential.pattern.matches(hop.url) and credential.header.lower() not in {n.lower() for n in headers}:
            headers[credential.header] = credential.value.get_secret_value()
    timeout = policy.timeout_seconds
    request = httpx.Request(
        hop.method, str(hop.url), headers=headers, content=hop.content,
        extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout},
                    "trace": trace},
    )  # fmt: skip
    truncated = False
    hop.response = response = await transport.handle_async_request(request)
    try:
        size = 0
        async for chunk in response.aiter_raw():
            room = policy.max_response_bytes - size
            if len(chunk) > room:
                hop.chunks.append(chunk[:room])
                truncated = True
                break
            hop.chunks.append(chunk)
            size += len(chunk)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await response.aclose()
    return _answer(policy, response, b"".join(hop.chunks), truncated), response.headers.get("location")


def _fail(exc: Exception, hop: _Hop, previous: HttpResponseOut | None, policy: HttpPolicy) -> NoReturn:
    """Turn a transport failure or the deadline into the outcome the gate records."""
    kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
    if hop.response is not None:
        partial = _answer(policy, hop.response, b"".join(hop.chunks), True).model_dump()
        raise UpstreamError(f"the answer from {hop.url.host} was cut off ({kind})", result=partial) from None
    if hop.sent:
        logger.warning("http_request to %s: sent, no answer (%s); recorded as indeterminate", hop.url.host, kind)
        raise OutcomeUnknownError(f"the request was sent to {hop.url.host} and no answer came ({kind})") from None
    if previous is not None:
        unreachable = f"the redirect target {hop.url.host} could not be reached ({kind})"
        raise UpstreamError(unreachable, result=previous.model_dump()) from None
    raise UpstreamUnavailableError(f"{hop.url.host} could not be reached; nothing was sent ({kind})") from None


def _redirect(policy: HttpPolicy, hop: _Hop, answer: HttpResponseOut, location: str | None) -> _Hop | None:
    """Return the next hop, or ``None`` when the answer is final (a redirect is then returned as is)."""
    if not policy.follow_redirects or answer.status not in REDIRECT_STATUSES or location is None:
        return None
    try:
        url = join_location(hop.url, location)
    except UrlNotAllowedError:
        return None
    method = hop.method
    content = hop.content
    headers = dict(hop.headers)
    if (answer.status == 303 and method != "HEAD") or (answer.status in (301, 302) and method == "POST"):
        method, content = "GET", None
        headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type",)}
    if hop.url.scheme == "https" and url.scheme == "http":
        return None  # never downgrade
    if not policy.allowed(method, url):
        logger.info("http_request: redirect to a URL outside the allow list not followed")
        return None
    if url.origin != hop.url.origin:
        headers = {k: v for k, v in headers.items() if k.lower() not in ORIGIN_BOUND_HEADERS}
    return _Hop(method, url, headers, content)


def _answer(policy: HttpPolicy, response: httpx.Response, body: bytes, truncated: bool) -> HttpResponseOut:
    secrets = policy.secrets()
    headers: dict[str, str] = {}
    for raw_name, raw_value in response.headers.raw:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if any(secret.decode() in value for secret in secrets):
            value = REDACTED
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    for secret in secrets:
        body = body.replace(secret, REDACTED.encode())
    if truncated:
        body = _strip_secret_prefix(body, secrets)
    text = _utf8(body, truncated)
    if text is not None:
        return HttpResponseOut(
            status=response.status_code, headers=headers, body=text, body_encoding="utf-8", truncated=truncated
        )
    encoded = base64.b64encode(body).decode()
    return HttpResponseOut(
        status=response.status_code, headers=headers, body=encoded, body_encoding="base64", truncated=truncated
    )


def _strip_secret_prefix(body: bytes, secrets: list[bytes]) -> bytes:
    """Cut a tail that could be the start of a secret split by the size limit."""
    for secret in secrets:
        for length in range(min(len(secret) - 1, len(body)), 0, -1):
            if body.endswith(secret[:length]):
                return body[:-length]
    return body


def _utf8(body: bytes, truncated: bool) -> str | None:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        # A truncated body may end inside a character: keep the complete ones.
        return decoder.decode(body, final=not truncated)
    except UnicodeDecodeError:
        return None
