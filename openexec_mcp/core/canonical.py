"""Canonical JSON (RFC 8785, JCS) and the ingress limits of SPEC §2.

This module is the only path from JSON to hashed or signed bytes. Every hash and signature in
openexec-mcp is computed over the bytes returned by :func:`canonicalize`, which delegates to the
``rfc8785`` package; ``json.dumps`` is never used for those bytes.

Untrusted JSON enters through :func:`parse_json` (raw bytes, e.g. an HTTP body) or
:func:`check_json_value` (a value another parser already built, e.g. MCP tool arguments). Both
refuse, with :class:`~openexec_mcp.errors.MalformedInputError` (code ``invalid_request``):

- a duplicate object key (raw bytes only: a parsed mapping cannot hold one),
- NaN or ±Infinity (including a float literal that overflows to infinity, such as ``1e400``),
- an integer outside ±(2^53 − 1) (I-JSON, RFC 7493 §2.2), or an integral float whose canonical
  form would be such an integer literal (e.g. ``9007199254740992.0``),
- a lone surrogate in a string or key,
- nesting deeper than ``max_depth`` containers (default 32),
- a canonical size over ``max_bytes`` (default 65536 bytes).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Final, cast

import rfc8785

from openexec_mcp.errors import MalformedInputError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "MAX_SAFE_INTEGER",
    "canonicalize",
    "check_json_value",
    "exceeds_size",
    "json_object",
    "loads_canonical",
    "parse_json",
    "parse_json_strict",
    "sha256_hex",
]

MAX_SAFE_INTEGER: Final = 2**53 - 1
"""The largest integer magnitude accepted (RFC 7493 §2.2); send larger numbers as strings."""

DEFAULT_MAX_DEPTH: Final = 32
"""Default maximum container nesting depth (SPEC §2)."""

DEFAULT_MAX_BYTES: Final = 65536
"""Default maximum canonical size in bytes (SPEC §2, ``limits.max_payload_bytes``)."""


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 digest of ``data`` as 64 lowercase hex characters."""
    return hashlib.sha256(data).hexdigest()


def canonicalize(value: Any) -> bytes:
    """Return the RFC 8785 (JCS) bytes of a JSON-compatible value.

    Args:
        value: ``dict`` (string keys), ``list``, ``str``, ``int``, ``float``, ``bool`` or ``None``,
            nested. Trusted in shape only: domain errors are reported, not assumed away.

    Returns:
        The canonical UTF-8 bytes (RFC 8785 §3).

    Raises:
        MalformedInputError: ``value`` holds NaN, ±Infinity, an integer outside ±(2^53 − 1), a lone
            surrogate, a non-string key or a non-JSON type.
    """
    try:
        return rfc8785.dumps(value)
    except rfc8785.IntegerDomainError as exc:
        raise MalformedInputError(f"integer outside ±(2^53 - 1) (send large numbers as strings): {exc}") from None
    except rfc8785.FloatDomainError:
        raise MalformedInputError("NaN and Infinity are not JSON numbers") from None
    except rfc8785.CanonicalizationError as exc:
        raise MalformedInputError(f"value cannot be canonicalized: {exc}") from None
    except UnicodeError:
        # rfc8785 sorts keys by their UTF-16 encoding, which fails on a lone surrogate in a key.
        raise MalformedInputError("string contains a lone surrogate") from None


def parse_json(data: bytes | str, *, max_depth: int = DEFAULT_MAX_DEPTH, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Parse untrusted JSON text strictly (RFC 8259 plus the limits of SPEC §2).

    Args:
        data: UTF-8 bytes (no BOM) or text, untrusted.
        max_depth: Maximum container nesting depth.
        max_bytes: Maximum size in bytes, applied to the raw input (a cheap bound before parsing)
            and to the canonical form of the result.

    Returns:
        The parsed value (dicts, lists, str, int, float, bool, None).

    Raises:
        MalformedInputError: Invalid UTF-8 or JSON, a duplicate key, NaN/Infinity, an integer out of
            range, a lone surrogate, excessive depth, or excessive size.
    """
    # Whitespace can make the raw text larger than the canonical form; allow for it, but never
    # parse something unboundedly larger than the limit.
    value = parse_json_strict(data, max_raw_bytes=4 * max_bytes + 1024)
    check_json_value(value, max_depth=max_depth, max_bytes=max_bytes)
    return value


def parse_json_strict(data: bytes | str, *, max_raw_bytes: int) -> Any:
    """Parse untrusted JSON text, refusing what a lenient parser would silently change (SPEC §2).

    The raw-bytes half of :func:`parse_json`, without the canonical-size and integer-range checks,
    for whole protocol messages (a JSON-RPC frame) whose parts are checked later where they are
    hashed. Refuses a duplicate object key (a lenient parser keeps the last one), NaN or
    ±Infinity (including a literal that overflows to infinity), a lone surrogate in a string or
    key, nesting too deep for the parser, and raw input over ``max_raw_bytes`` (checked before
    any parsing, so the cost is bounded by the caller's limit).

    Args:
        data: UTF-8 bytes (no BOM) or text, untrusted.
        max_raw_bytes: Maximum raw size, in bytes (text: in UTF-8 bytes, counted as characters
            first, a lower bound).

    Returns:
        The parsed value.

    Raises:
        MalformedInputError: Any of the above, or invalid UTF-8 or JSON.
    """
    if len(data) > max_raw_bytes:
        raise MalformedInputError(f"JSON text is {len(data)} bytes; the limit is {max_raw_bytes}")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedInputError("JSON text is not valid UTF-8") from None
    else:
        text = data
    try:
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_reject_constant,
            parse_float=_parse_finite_float,
        )
    except MalformedInputError:
        raise
    except RecursionError:
        raise MalformedInputError("JSON nesting too deep") from None
    except ValueError as exc:
        raise MalformedInputError(f"invalid JSON: {exc}") from None
    # In bytes, a lone surrogate can only come from a \uD800-style escape (UTF-8 has none).
    if not isinstance(data, bytes) or "\\u" in text:
        _reject_lone_surrogates(value)
    return value


def _reject_lone_surrogates(value: Any) -> None:
    # Iterative, like _check_depth: a hostile value never exhausts the interpreter stack.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, dict):
            for key, child in item.items():  # pyright: ignore[reportUnknownVariableType]
                _check_string(key)  # pyright: ignore[reportUnknownArgumentType]
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)  # pyright: ignore[reportUnknownArgumentType]


def _check_string(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedInputError("string contains a lone surrogate") from None


class _NotFast(Exception):
    """The fast path of :func:`loads_canonical` cannot decide; take the exact one."""


def _fast_int(literal: str) -> int:
    number = int(literal)
    if abs(number) > MAX_SAFE_INTEGER:
        raise _NotFast
    return number


def _not_fast(_: str) -> Any:
    raise _NotFast


_FAST_DECODER: Final = json.JSONDecoder(parse_float=_not_fast, parse_constant=_not_fast, parse_int=_fast_int)
_FAST_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def loads_canonical(data: bytes) -> tuple[Any, bool]:
    """Parse JSON bytes and say whether they are exactly the RFC 8785 form of the value.

    For stored or signed bytes that are expected to be canonical already (ledger rows, receipt
    payloads): checking them costs one ``json.loads`` and one ``json.dumps`` instead of a full
    RFC 8785 serialisation. The fast path is exact: for ASCII text whose numbers are all integers
    within ±(2^53 − 1), sorted compact ``json.dumps`` output equals the RFC 8785 bytes whenever it
    equals the (ASCII) input, because both escape strings alike and sort ASCII keys alike. Any
    other input takes the exact path (:func:`canonicalize` of the parsed value).

    Args:
        data: Untrusted UTF-8 bytes.

    Returns:
        ``(value, canonical)``.

    Raises:
        MalformedInputError: ``data`` is not UTF-8 JSON.
    """
    if data.isascii():
        try:
            value = _FAST_DECODER.decode(data.decode("ascii"))
            fast = _FAST_ENCODER.encode(value).encode("utf-8")
        except _NotFast:
            pass
        except (ValueError, RecursionError, UnicodeEncodeError):
            pass  # not JSON, too deep, or a lone surrogate: the exact path says which
        else:
            if fast == data:
                return value, True
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise MalformedInputError("not valid UTF-8 JSON") from None
    try:
        return value, canonicalize(value) == data
    except MalformedInputError:
        return value, False


def check_json_value(value: Any, *, max_depth: int = DEFAULT_MAX_DEPTH, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Check an already-parsed value against SPEC §2 and return its canonical bytes.

    Args:
        value: A value built by some JSON parser from untrusted input.
        max_depth: Maximum container nesting depth (a bare scalar has depth 0).
        max_bytes: Maximum size of the canonical form, in bytes.

    Returns:
        The RFC 8785 bytes of ``value``, so that callers never canonicalize twice.

    Raises:
        MalformedInputError: Any limit of SPEC §2 is exceeded, or ``value`` is not JSON.
    """
    _check_depth(value, max_depth)
    canonical = canonicalize(value)
    if len(canonical) > max_bytes:
        raise MalformedInputError(f"canonical size is {len(canonical)} bytes; the limit is {max_bytes}")
    return canonical


def exceeds_size(value: Any, *, max_bytes: int) -> bool:
    """Return whether the canonical form of ``value`` is certainly longer than ``max_bytes``.

    A cheap lower bound (SPEC §2 ingress limits), checked before any canonicalization so that a
    huge payload is refused without stalling the event loop: a string costs at least its length
    plus its two quotes (UTF-8 takes one byte per character at least, and escaping only adds), a
    container its brackets and separators, any other scalar one byte. It stops as soon as the
    bound passes ``max_bytes``, so it reads at most about ``max_bytes`` elements.

    Args:
        value: A value built by a JSON parser from untrusted input.
        max_bytes: The limit on the canonical size, in bytes.

    Returns:
        ``True`` when the canonical form must exceed ``max_bytes``; ``False`` says nothing more
        than "maybe not": :func:`check_json_value` decides.
    """
    budget = max_bytes
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            budget -= len(item) + 2
        elif isinstance(item, dict):
            entries: dict[Any, Any] = item  # pyright: ignore[reportUnknownVariableType]
            budget -= 2 * max(len(entries), 1)
            if budget < 0:
                return True
            for key, child in entries.items():
                budget -= len(key) + 2 if isinstance(key, str) else 1
                stack.append(child)
        elif isinstance(item, list):
            elements: list[Any] = item  # pyright: ignore[reportUnknownVariableType]
            budget -= len(elements) + 1
            if budget < 0:
                return True
            stack.extend(elements)
        else:
            budget -= 1
        if budget < 0:
            return True
    return False


def json_object(value: Any) -> dict[str, Any] | None:
    """Return ``value`` typed as a JSON object (``dict[str, Any]``), or ``None`` if it is not a dict."""
    return cast("dict[str, Any]", value) if isinstance(value, dict) else None


def _check_depth(value: Any, max_depth: int) -> None:
    # Iterative so that a hostile value can never exhaust the interpreter stack.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and item.is_integer() and MAX_SAFE_INTEGER < abs(item) < 1e21:
            # RFC 8785 writes such a float as an integer literal (no exponent below 1e21), which
            # would then be an out-of-range integer: refuse it so canonical bytes always re-parse.
            raise MalformedInputError("number outside ±(2^53 - 1) (send large numbers as strings)")
        if isinstance(item, dict):
            children: list[Any] = list(item.values())  # pyright: ignore[reportUnknownArgumentType]
        elif isinstance(item, list):
            children = item  # pyright: ignore[reportUnknownVariableType]
        else:
            continue
        if depth + 1 > max_depth:
            raise MalformedInputError(f"JSON nesting deeper than {max_depth}")
        stack.extend((child, depth + 1) for child in children)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, val in pairs:
        if key in result:
            raise MalformedInputError(f"duplicate object key {key[:64]!r}")
        result[key] = val
    return result


def _reject_constant(name: str) -> Any:
    raise MalformedInputError(f"{name} is not a JSON number")


def _parse_finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise MalformedInputError("number literal overflows to Infinity")
    return number
