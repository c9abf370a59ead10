"""The package version (PEP 440), read by hatchling at build time."""

__version__ = "0.1.0"
