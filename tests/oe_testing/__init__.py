"""Test support importable by server subprocesses (tests/ is put on PYTHONPATH)."""
