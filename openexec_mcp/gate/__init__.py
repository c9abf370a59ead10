"""The gate: the one async call path every tool call takes (SPEC §3-§7).

:mod:`.pipeline` runs the numbered steps; :mod:`.admission` decides whether a call may start;
:mod:`.approvals` decides approvals; :mod:`.receipts` and :mod:`.envelope` build what is recorded
and answered. Nothing here imports ``mcp`` or ``starlette``: transports adapt to the gate, never
the reverse.
"""
