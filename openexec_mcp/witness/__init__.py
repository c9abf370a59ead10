"""An independent C2SP ``tlog-witness`` (SPEC §14): ``openexec-mcp witness serve``.

- :mod:`~openexec_mcp.witness.state`: the latest cosigned checkpoint per origin (SQLite), updated
  only by a compare-and-swap that moves forward along a verified consistency proof.
- :mod:`~openexec_mcp.witness.app`: ``POST /add-checkpoint`` and the monitoring
  ``GET /<origin hash>/checkpoint``.
- :mod:`~openexec_mcp.witness.cli`: the ``witness serve`` and ``witness key`` commands.
"""
