"""The URL rules of ``http_request`` (SPEC §12): one spelling per target, globs that stay in their part."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openexec_mcp.builtins.urls import join_location, parse_target_url, parse_url_pattern
from openexec_mcp.errors import UrlNotAllowedError


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # decimal IPv4
        "http://0x7f000001/",  # hex IPv4
        "http://0x7f.0.0.1/",  # hex part
        "http://0177.0.0.1/",  # octal part
        "http://127.1/",  # short form
        "http://127.0.0.01/",  # leading zero
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
        "http://[::ffff:7f00:1]/",
        "http://[fe80::1%25eth0]/",  # zone identifier
        "http://[0:0:0:0:0:0:0:1]/",  # IPv6 not in canonical form
        "http://user:pw@127.0.0.1/",  # userinfo
        "http://allowed.example@evil.test/",
        "ftp://127.0.0.1/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "javascript:alert(1)",
        "//127.0.0.1/x",  # scheme-relative
        "http://127.0.0.1/a\\b",  # backslash
        "http://127.0.0.1/a b",  # space
        "http://127.0.0.1/\u00e9",  # raw non-ASCII
        "http://ex\u0430mple.com/",  # homoglyph host
        "http://example.com./",  # trailing dot
        "http://127.0.0.1:0/",
        "http://127.0.0.1:65536/",
        "http://127.0.0.1:/",
        "http://127.0.0.1/a/..%2F..%2Fadmin",  # encoded separator after a dot segment
        "http://127.0.0.1/%2e%2e%5cadmin",
        "http://127.0.0.1/x\r\nHost: evil",
    ],
)
def test_ambiguous_or_foreign_urls_are_refused(url: str):
    with pytest.raises(UrlNotAllowedError) as refused:
        parse_target_url(url)
    assert refused.value.code == "url_not_allowed"


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("HTTPS://API.Example.COM:443/v1/x", "https://api.example.com/v1/x"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("http://h.test/a/./b/../c", "http://h.test/a/c"),
        ("http://h.test/%2e%2e/%7Euser", "http://h.test/~user"),
        ("http://h.test/p?q=%2f#fragment", "http://h.test/p?q=%2F"),
        ("http://[::1]:9/x", "http://[::1]:9/x"),
    ],
)
def test_urls_are_normalised_to_what_is_sent(url: str, normalised: str):
    target = parse_target_url(url)
    assert str(target) == normalised
    sent = httpx.URL(str(target))
    assert sent.raw_path.decode() == target.path_and_query  # httpx sends exactly the matched target


def test_host_glob_cannot_reach_into_the_path():
    pattern = parse_url_pattern("https://*.example.com/*")
    assert pattern.matches(parse_target_url("https://api.example.com/anything?x=1"))
    assert not pattern.matches(parse_target_url("https://evil.test/.example.com/"))
    assert not pattern.matches(parse_target_url("https://evil.test/?.example.com/"))
    assert not pattern.matches(parse_target_url("https://api.example.com.evil.test/"))
    assert not pattern.matches(parse_target_url("https://api.example.com:8443/"))  # a port is part of the authority
    assert not pattern.matches(parse_target_url("http://api.example.com/"))  # the scheme is exact


def test_pattern_authority_is_normalised_like_urls():
    pattern = parse_url_pattern("https://API.example.com:443/v1/*")
    assert pattern.matches(parse_target_url("https://api.example.com/v1/items"))
    assert not pattern.matches(parse_target_url("https://api.example.com/v2/items"))
    assert not pattern.matches(parse_target_url("https://api.example.com/v1/../v2/items"))  # dots resolved first


@pytest.mark.parametrize("pattern", ["api.example.com/*", "https://api.example.com", "ftp://h/*", "https://u@h/*"])
def test_malformed_patterns_are_config_errors(pattern: str):
    with pytest.raises(ValueError):
        parse_url_pattern(pattern)


def test_relative_redirect_locations_resolve_against_the_current_url():
    base = parse_target_url("http://h.test/a/b")
    assert str(join_location(base, "../c?q")) == "http://h.test/c?q"
    assert str(join_location(base, "//other.test/x")) == "http://other.test/x"
    with pytest.raises(UrlNotAllowedError):
        join_location(base, "http://2130706433/")


_URL_CHARS = st.sampled_from([*"abcAZ09-._~!$&'()*+,;=:@/%?#[]\\ 2eEfF", "%2e", "%2E", "%2f", "..", "./", "%41"])


@given(
    scheme=st.sampled_from(["http", "HTTP", "https"]),
    host=st.sampled_from(["h.test", "H.Test", "127.0.0.1", "[::1]", "0x7f.1", "a..b"]),
    port=st.sampled_from(["", ":80", ":443", ":8080", ":0"]),
    rest=st.lists(_URL_CHARS, max_size=12).map("".join),
)
def test_normalisation_is_idempotent_and_what_is_matched_is_sent(scheme: str, host: str, port: str, rest: str):
    try:
        target = parse_target_url(f"{scheme}://{host}{port}/{rest}")
    except UrlNotAllowedError:
        return
    assert parse_target_url(str(target)) == target
    assert httpx.URL(str(target)).raw_path.decode() == target.path_and_query
