"""The per-tenant token bucket, with an injected clock (no sleeps)."""

from openexec_mcp.gate.admission import TokenBucket


def test_bucket_allows_burst_then_refills_at_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.allow("a") for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert bucket.allow("a") is True
    assert bucket.allow("a") is False
    assert bucket.allow("b") is True  # other tenants have their own bucket


def test_zero_rate_disables_limiting() -> None:
    bucket = TokenBucket(rate=0, burst=1)
    assert all(bucket.allow("a") for _ in range(1000))


def test_idle_buckets_are_forgotten_beyond_max_keys() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=1.0, burst=1, clock=lambda: now[0], max_keys=10)
    for i in range(50):
        bucket.allow(f"t{i}")
        now[0] += 2.0
    assert len(bucket._buckets) <= 11  # pyright: ignore[reportPrivateUsage]
