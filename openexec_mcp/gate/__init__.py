"""The gate: the one async call path every tool call takes (SPEC §3-§7).

:mod:`.pipeline` runs the numbered steps; :mod:`.admission` decides whether a call may start;
:mod:`.validation` checks the request; :mod:`.approvals` (with :mod:`.elicitation`) decides
approvals; :mod:`.execution` runs the handler; :mod:`.recording` writes the receipts and builds
the :mod:`.answers`, with :mod:`.receipts` and :mod:`.envelope`. Nothing here imports ``mcp`` or
``starlette``: transports adapt to the gate, never the reverse.
"""
