"""Benchmarks of issue 6: ``python bench/run.py`` (see its docstring)."""
