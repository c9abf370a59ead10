"""Transparency-log primitives: RFC 9162 Merkle trees and C2SP signed notes, checkpoints and proofs.

Pure and synchronous, like the rest of :mod:`openexec_mcp.core`: bytes in, bytes or verdicts out.
"""
