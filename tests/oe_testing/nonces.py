"""Fresh nonces for tests (SPEC §1, §4): one unused value per call, so no test replays another's."""

from __future__ import annotations

import uuid


def fresh_nonce() -> str:
    """Return a nonce no earlier call has used: ``"n-"`` and 32 hex digits of a random UUID4.

    34 characters of ``[A-Za-z0-9-]``, inside the SPEC §1 nonce alphabet and its 8 to 128 bounds,
    so every call is a *new nonce* in the SPEC §4 table.
    """
    return "n-" + uuid.uuid4().hex
