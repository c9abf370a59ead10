"""The public surface is exactly ``openexec_mcp.__all__``."""

import openexec_mcp


def test_public_api_is_pinned() -> None:
    assert sorted(openexec_mcp.__all__) == [
        "Action",
        "ApprovalError",
        "ConfigError",
        "ExecutionError",
        "InvalidRequestError",
        "NonceError",
        "OpenExecError",
        "StoreUnavailableError",
        "VerificationError",
        "__version__",
        "action",
    ]
    for name in openexec_mcp.__all__:
        assert hasattr(openexec_mcp, name)


def _error_classes() -> list[type]:
    from openexec_mcp import errors

    return [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.OpenExecError)]


def test_every_leaf_error_has_a_code_and_codes_are_unique() -> None:
    classes = _error_classes()
    leaves = [cls for cls in classes if not any(other is not cls and issubclass(other, cls) for other in classes)]
    codes = [cls.code for cls in leaves]
    assert all(codes), [cls.__name__ for cls in leaves if not cls.code]
    duplicates = {code for code in codes if codes.count(code) > 1}
    # A parse failure is an invalid request: the one code shared on purpose (openexec_mcp.errors says so).
    assert duplicates <= {"invalid_request"}, duplicates
    assert [cls.__name__ for cls in leaves if cls.code == "invalid_request"] == ["MalformedInputError"]
    for expected in (
        "invalid_request",
        "unknown_action",
        "nonce_conflict",
        "in_progress",
        "outcome_unknown",
        "approval_required",
        "approval_malformed",
        "approval_consumed",
        "handler_error",
        "invalid_result",
        "store_unavailable",
        "internal_error",
        "outcome_not_recorded",
        "upstream_unavailable",
        "upstream_error",
        "url_not_allowed",
        "recipient_not_allowed",
        "policy_error",
        "action_saturated",
        "unauthorized",
        "forbidden",
        "not_found",
    ):
        assert expected in codes, expected


def test_abstract_error_classes_carry_no_code_of_their_own() -> None:
    from openexec_mcp import errors

    for abstract in (
        errors.OpenExecError,
        errors.NonceError,
        errors.ApprovalError,
        errors.ExecutionError,
        errors.ActionRefusedError,
        errors.NotSentError,
    ):
        assert abstract.code == "", abstract.__name__


def test_http_status_is_a_class_attribute_of_every_error() -> None:
    from openexec_mcp import errors

    assert errors.ApprovalConsumedError.http_status == 403
    assert errors.NonceConflictError.http_status == 409
    assert errors.UnknownActionError.http_status == 404
    assert errors.MalformedInputError.http_status == 422
    assert errors.InternalError.http_status == 500
    assert errors.RateLimitedError.http_status == 429
    assert errors.UpstreamUnavailableError.http_status == 503
    assert all(100 <= cls.http_status < 600 for cls in _error_classes())
