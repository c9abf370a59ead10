"""The security core: pure, synchronous code with no I/O.

Nothing in this package imports ``mcp``, ``anyio``, a database driver or the network. Every trust
decision of openexec-mcp (action hashing, approval verification, receipt signing and verification,
Merkle proofs, checkpoints) lives here and can be tested without a server.
"""
