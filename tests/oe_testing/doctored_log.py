"""A doctored execution server: it holds the real log key and tries to get a forked checkpoint cosigned.

    python -m oe_testing.doctored_log STATE_DIR ORIGIN WITNESS_URL

It reads the witness's size with ``old 0`` (the 409 answer), then signs, with the server's own
key from ``STATE_DIR``, checkpoints of a history that rewrites the past, and submits them as C2SP
``add-checkpoint`` requests:

1. ``same_size``: a checkpoint of the witness's size with another root (a split view);
2. ``forked_growth``: a larger checkpoint of the forked history, with that history's own (valid)
   consistency proof, which cannot lead from the root the witness cosigned;
3. ``rollback``: a checkpoint smaller than the witness's size.

Prints one JSON line ``{"witness_size", "answers": {attempt: status}}`` on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from openexec_mcp.core.tlog.checkpoint import sign_checkpoint
from openexec_mcp.core.tlog.cosignature import format_add_checkpoint
from openexec_mcp.core.tlog.merkle import consistency_proof, leaf_hash, root_from_leaves, subtree_hasher_from_leaves
from openexec_mcp.keystore import SERVER_KEY_FILENAME, load_server_key


def main(argv: list[str]) -> int:
    state_dir, origin, url = Path(argv[0]), argv[1], argv[2].rstrip("/")
    key = load_server_key(state_dir / SERVER_KEY_FILENAME).private_key
    with httpx.Client(timeout=30) as client:

        def submit(old: int, proof: list[bytes], note: str) -> int:
            return client.post(url + "/add-checkpoint", content=format_add_checkpoint(old, proof, note)).status_code

        probe = client.post(
            url + "/add-checkpoint",
            content=format_add_checkpoint(
                0, [], sign_checkpoint(origin, 1, root_from_leaves([leaf_hash(b"probe")]), key)
            ),
        )
        size = int(probe.text) if probe.status_code == 409 else 0
        forged = [leaf_hash(f"forged receipt {i}".encode()) for i in range(size + 5)]
        answers = {
            "same_size": submit(size, [], sign_checkpoint(origin, size, root_from_leaves(forged[:size]), key)),
            "forked_growth": submit(
                size,
                consistency_proof(size, size + 5, subtree_hasher_from_leaves(forged)),
                sign_checkpoint(origin, size + 5, root_from_leaves(forged), key),
            ),
            "rollback": submit(size, [], sign_checkpoint(origin, size - 1, root_from_leaves(forged[: size - 1]), key)),
        }
    print(json.dumps({"witness_size": size, "answers": answers}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
