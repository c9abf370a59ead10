"""The public surface is exactly ``openexec_mcp.__all__``."""

import openexec_mcp


def test_public_api_is_pinned() -> None:
    assert sorted(openexec_mcp.__all__) == [
        "Action", "ApprovalError", "ConfigError", "ExecutionError", "InvalidRequestError", "NonceError",
        "OpenExecError", "StoreUnavailableError", "VerificationError", "__version__", "action",
    ]  # fmt: skip
    for name in openexec_mcp.__all__:
        assert hasattr(openexec_mcp, name)


def test_every_error_code_is_stable_and_unique_per_leaf() -> None:
    from openexec_mcp import errors

    leaves = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.OpenExecError)]
    codes = {cls.code for cls in leaves}
    for expected in ("invalid_request", "unknown_action", "nonce_conflict", "in_progress", "outcome_unknown",
                     "approval_required", "approval_malformed", "approval_consumed", "handler_error",
                     "invalid_result", "store_unavailable"):  # fmt: skip
        assert expected in codes
