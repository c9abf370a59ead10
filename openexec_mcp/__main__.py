"""``python -m openexec_mcp``: the same CLI as ``openexec-mcp``."""

from openexec_mcp.cli import main

raise SystemExit(main())
