"""Built-in actions, one per module. Every module here is loaded at server start (SPEC §1)."""
