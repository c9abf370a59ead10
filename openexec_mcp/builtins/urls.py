"""Strict URL parsing and the ``allowed_urls`` match of ``http_request`` (SPEC §12). No I/O.

A URL from the model is untrusted. :func:`parse_target_url` accepts one spelling of each target
and refuses the rest, so that what an ``allowed_urls`` pattern is matched against is exactly what
is sent:

- scheme ``http`` or ``https``; no userinfo (``user:pass@``); no fragment is sent;
- a host that is a DNS name (``[a-z0-9-]`` labels, lower-cased, no trailing dot), a dotted-quad
  IPv4 address in canonical form, or a bracketed IPv6 address in canonical compressed form.
  Numeric spellings that resolvers read as IPv4 (``2130706433``, ``0x7f.1``, ``0177.0.0.1``,
  ``127.1``), IPv4-mapped IPv6 and zone identifiers are refused;
- the port is omitted when it is the scheme's default (as in the WHATWG serialisation);
- the path is RFC 3986 characters only (no backslash, no spaces, no raw non-ASCII), percent-encoded
  unreserved characters are decoded, hex digits upper-cased and dot segments removed
  (RFC 3986 §5.2.4, §6.2.2); a path whose percent-decoding still holds ``.``/``..`` segments
  (``..%2F``) is refused.

A pattern ``scheme://AUTHORITY/PATH`` matches when the scheme is equal, :func:`fnmatch.fnmatchcase`
matches the authority and, separately, the path with its query: a ``*`` in the host can never
reach into the path (``https://*.example.com/*`` does not match ``https://evil.test/.example.com/``).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

from openexec_mcp.errors import UrlNotAllowedError

__all__ = ["SmtpTarget", "TargetUrl", "UrlPattern", "parse_smtp_url", "parse_target_url", "parse_url_pattern"]

DEFAULT_PORTS = {"http": 80, "https": 443, "smtp": 587, "smtps": 465}
MAX_URL_CHARS = 2048

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?$", re.DOTALL)
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_PATH = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$")
_QUERY = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*$")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class TargetUrl:
    """A parsed, normalised http(s) URL.

    Attributes:
        scheme: ``http`` or ``https``.
        host: Lower-case DNS name, dotted-quad IPv4, or ``[ipv6]``.
        port: The TCP port (the default one when the URL had none).
        path: Normalised path, starting with ``/``.
        query: The query without ``?``, or ``None``.
    """

    scheme: str
    host: str
    port: int
    path: str
    query: str | None

    @property
    def authority(self) -> str:
        """``host``, or ``host:port`` when the port is not the scheme's default."""
        return self.host if self.port == DEFAULT_PORTS[self.scheme] else f"{self.host}:{self.port}"

    @property
    def path_and_query(self) -> str:
        """The request target: path, then ``?query`` when there is a query."""
        return self.path if not self.query else f"{self.path}?{self.query}"

    @property
    def origin(self) -> tuple[str, str, int]:
        """``(scheme, host, port)``: two URLs with equal origins share credentials in browsers."""
        return (self.scheme, self.host, self.port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path_and_query}"


@dataclass(frozen=True, slots=True)
class UrlPattern:
    """One ``allowed_urls`` (or credentials ``url``) entry, split at the authority."""

    text: str
    scheme: str
    authority: str
    path: str

    def matches(self, url: TargetUrl) -> bool:
        """Return whether ``url`` is inside this pattern (see the module docstring)."""
        return (
            url.scheme == self.scheme
            and fnmatch.fnmatchcase(url.authority, self.authority)
            and fnmatch.fnmatchcase(url.path_and_query, self.path)
        )


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """A parsed ``smtp_url``: ``implicit_tls`` for ``smtps://``."""

    implicit_tls: bool
    host: str
    port: int


def parse_target_url(raw: str) -> TargetUrl:
    """Parse and normalise an untrusted http(s) URL.

    Args:
        raw: The URL as the model sent it (untrusted).

    Returns:
        The normalised URL; ``str()`` of it is what is sent.

    Raises:
        UrlNotAllowedError: The URL is not one this module accepts (the reason is in the message;
            the URL itself is not echoed).
    """
    if len(raw) > MAX_URL_CHARS:
        raise UrlNotAllowedError(f"the URL is longer than {MAX_URL_CHARS} characters")
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in raw):
        raise UrlNotAllowedError("the URL holds spaces, control or non-ASCII characters (percent-encode them)")
    match = _URL.match(raw)
    if match is None:
        raise UrlNotAllowedError("the URL is not absolute (scheme://host/path)")
    scheme, authority, path, query = match.group(1).lower(), match.group(2), match.group(3), match.group(4)
    if scheme not in ("http", "https"):
        raise UrlNotAllowedError("only http and https URLs are allowed")
    host, port = _parse_authority(authority, scheme)
    if not _PATH.match(path):
        raise UrlNotAllowedError("the URL path holds characters outside RFC 3986 (a backslash?)")
    if query is not None and not _QUERY.match(query):
        raise UrlNotAllowedError("the URL query holds characters outside RFC 3986")
    return TargetUrl(scheme, host, port, _normalise_path(path), _upper_hex(query) if query else None)


def join_location(base: TargetUrl, location: str) -> TargetUrl:
    """Resolve a redirect's ``Location`` (absolute or relative) against ``base``, then parse it.

    Raises:
        UrlNotAllowedError: The result is not an acceptable URL.
    """
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in location):
        raise UrlNotAllowedError("the redirect location holds spaces, control or non-ASCII characters")
    return parse_target_url(urllib.parse.urljoin(str(base), location))


def parse_url_pattern(text: str) -> UrlPattern:
    """Parse a configured pattern ``http(s)://AUTHORITY/PATH`` (trusted, but checked).

    Raises:
        ValueError: Not of that form; the message says why.
    """
    match = re.match(r"^(https?)://([^/]+)(/.*)$", text, re.DOTALL)
    if match is None:
        raise ValueError("must look like https://host[:port]/path, globs allowed in host, port and path")
    scheme, authority, path = match.groups()
    authority = authority.lower()
    if "@" in authority:
        raise ValueError("must not hold userinfo (user@)")
    if not _GLOB_CHARS & set(authority):
        try:
            host, port = _parse_authority(authority, scheme)
        except UrlNotAllowedError as exc:
            raise ValueError(exc.message) from None
        authority = TargetUrl(scheme, host, port, "/", None).authority
    return UrlPattern(text, scheme, authority, path)


def parse_smtp_url(text: str) -> SmtpTarget:
    """Parse ``smtp://host[:port]`` or ``smtps://host[:port]`` (config, trusted but checked).

    Raises:
        ValueError: Another scheme, userinfo, a path, or an unacceptable host.
    """
    match = re.match(r"^(smtps?)://([^/?#]+)/?$", text)
    if match is None:
        raise ValueError("must be smtp://host[:port] or smtps://host[:port]")
    scheme, authority = match.groups()
    try:
        host, port = _parse_authority(authority, scheme)
    except UrlNotAllowedError as exc:
        raise ValueError(exc.message) from None
    return SmtpTarget(scheme == "smtps", host.strip("[]"), port)


def _parse_authority(authority: str, scheme: str) -> tuple[str, int]:
    if "@" in authority:
        raise UrlNotAllowedError("URLs with userinfo (user@host) are refused")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise UrlNotAllowedError("unterminated IPv6 literal")
        host, rest = _ipv6_host(authority[1:end]), authority[end + 1 :]
    else:
        host, _, port_text = authority.partition(":")
        rest = ":" + port_text if _ else ""
        host = _dns_or_ipv4_host(host.lower())
    if not rest:
        return host, DEFAULT_PORTS[scheme]
    if not re.fullmatch(r":[0-9]{1,5}", rest) or not 0 < int(rest[1:]) < 65536:
        raise UrlNotAllowedError("the port must be a number from 1 to 65535")
    return host, int(rest[1:])


def _ipv6_host(inner: str) -> str:
    if "%" in inner:
        raise UrlNotAllowedError("IPv6 zone identifiers are refused")
    try:
        address = ipaddress.IPv6Address(inner)
    except ValueError:
        raise UrlNotAllowedError("not an IPv6 address") from None
    if address.ipv4_mapped is not None or address.compressed != inner.lower():
        raise UrlNotAllowedError("IPv6 literals must be in canonical compressed form, not IPv4-mapped")
    return f"[{address.compressed}]"


def _dns_or_ipv4_host(host: str) -> str:
    if not host or len(host) > 253:
        raise UrlNotAllowedError("the URL has no host, or one longer than 253 characters")
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        # Resolvers read a host ending in a number as an IPv4 address, in decimal, octal or hex and
        # with 1 to 4 parts: only the canonical dotted quad names the address unambiguously.
        try:
            canonical = str(ipaddress.IPv4Address(host))
        except ValueError:
            canonical = None
        if canonical != host:
            raise UrlNotAllowedError("numeric hosts must be dotted-quad IPv4 in canonical form")
        return host
    if not all(_LABEL.match(label) for label in labels):
        raise UrlNotAllowedError("the host is not a DNS name of [a-z0-9-] labels (IDNs in punycode)")
    return host


def _upper_hex(text: str) -> str:
    return _PERCENT.sub(lambda m: "%" + m.group(1).upper(), text)


def _normalise_path(path: str) -> str:
    def decode_unreserved(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    decoded = _PERCENT.sub(decode_unreserved, path or "/")
    normalised = _remove_dot_segments(decoded)
    fully_decoded = urllib.parse.unquote(normalised)
    if any(segment in (".", "..") for segment in re.split(r"[/\\]", fully_decoded)):
        raise UrlNotAllowedError("the URL path holds encoded dot segments or separators")
    return normalised


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, on a path that starts with ``/``."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        elif segment == ".":
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)
