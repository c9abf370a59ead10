"""Operator work on a stored ledger: checkpoints, audit, recorded-call loading, replay, resolve, retention."""
