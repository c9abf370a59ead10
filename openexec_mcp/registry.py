"""The ``@action`` decorator and the loading of action modules (SPEC §1).

An action is a handler with a pydantic input model, an output (a pydantic model or any JSON value)
and metadata. ``@action(...)`` turns a function into an :class:`Action`; a module "registers"
actions simply by defining them at module level, and :func:`load_registry` collects every
:class:`Action` from the built-in ``actions`` package, the modules named in config
``actions.modules``, and the ``openexec_mcp.actions`` entry-point group.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from openexec_mcp.core.action import TOOL_NAME_PATTERN
from openexec_mcp.errors import ConfigError, InvalidRequestError

__all__ = ["ENTRY_POINT_GROUP", "Action", "Registry", "action", "load_registry"]

ENTRY_POINT_GROUP = "openexec_mcp.actions"
"""Entry points in this group name a module, an :class:`Action`, or an iterable of actions."""

RESERVED_ARGUMENTS = frozenset({"nonce"})


@dataclass(frozen=True, eq=False)
class Action:
    """A guarded action: one MCP tool of the same name, called only through the gate.

    ``@action`` functions are :class:`Action` objects; other sources of actions (upstream MCP
    servers, the opt-in real actions) subclass it and override :meth:`parse_payload` and
    :meth:`input_schema`. The gate calls, in this order (SPEC §4, §11, §12):
    :meth:`parse_payload` (step 1), :attr:`precheck` (step 3, before approval), then
    :attr:`handler` (step 5). Calling an :class:`Action` calls its handler directly, without the
    gate (for unit tests of the handler itself).

    Attributes:
        name: The tool name (``^[A-Za-z][A-Za-z0-9_.-]{0,63}$``).
        handler: The function; sync (run on a worker thread) or async; takes one argument, the
            value :meth:`parse_payload` returned. It returns a JSON value, or raises one of:
            :class:`~openexec_mcp.errors.UpstreamError` (``failed``, its ``result`` kept),
            :class:`~openexec_mcp.errors.NotSentError` (nothing was sent: the claim is
            released, ``denied``), :class:`~openexec_mcp.errors.OutcomeUnknownError` (sent and
            no answer: ``indeterminate``); anything else is ``failed`` / ``handler_error``.
        input_model: The pydantic model of the payload (``None`` for schema-validated actions).
            It may not define ``nonce``.
        output_model: The pydantic model of the result, or ``None`` for any JSON value.
        title: Human-readable title (tool annotation ``title``).
        description: Tool description (defaults to the handler's docstring).
        read_only: ``readOnlyHint``; also means the action may be re-run for ledger replay checks.
        destructive: ``destructiveHint``.
        idempotent: ``idempotentHint``.
        open_world: ``openWorldHint``.
        approval: Per-action approval policy, or ``None`` for the server's policy.
        precheck: Pure and fast; raises an
            :class:`~openexec_mcp.errors.ActionRefusedError` to refuse the parsed payload before
            approval (``denied`` with a receipt, nothing consumed, nothing sent).
        declares_nonce: The tool has its own ``nonce`` argument: it is passed to the handler,
            and the gate's nonce comes only from ``_meta["dev.openexec/nonce"]`` (SPEC §11).
        nonce_required: ``False`` lets a call without a nonce through with a server nonce
            (``nonce_source: "server"``, no replay protection; upstream ``nonce = "optional"``).
        upstream: ``{"name", "server": {"name", "version"}}`` for upstream tools: added to the
            receipt body (SPEC §11). ``None`` otherwise.
    """

    name: str
    handler: Callable[[Any], Any]
    input_model: type[BaseModel] | None
    output_model: type[BaseModel] | None
    title: str | None = None
    description: str = ""
    read_only: bool = False
    destructive: bool = True
    idempotent: bool = False
    open_world: bool = True
    approval: Literal["auto", "signed", "elicit", "deny"] | None = None
    precheck: Callable[[Any], None] | None = None
    declares_nonce: bool = False
    nonce_required: bool = True
    upstream: Mapping[str, Any] | None = None
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.handler))

    def __call__(self, payload: Any) -> Any:
        """Call the handler directly (no gate, no receipt)."""
        return self.handler(payload)

    def accepts_extra_fields(self) -> bool:
        """Return whether the input model allows properties it does not declare."""
        return self.input_model is not None and self.input_model.model_config.get("extra") == "allow"

    def input_schema(self) -> dict[str, Any]:
        """Return the JSON Schema of the payload, without the reserved ``nonce`` (SPEC §1).

        Unless the model allows extra properties, ``additionalProperties`` is false: the gate
        refuses arguments the action does not declare instead of silently dropping them.
        """
        if self.input_model is None:
            return {"type": "object"}
        schema = copy.deepcopy(self.input_model.model_json_schema())
        schema.setdefault("type", "object")
        if not self.accepts_extra_fields():
            schema["additionalProperties"] = False
        return schema

    def parse_payload(self, payload: Mapping[str, Any], payload_bytes: bytes) -> Any:
        """Validate the payload (the arguments without the reserved nonce); return the handler's argument.

        Args:
            payload: The untrusted arguments, already within the SPEC §2 limits.
            payload_bytes: Their RFC 8785 bytes: validated strictly (no type coercion), so the
                handler sees exactly what the action hash covers.

        Raises:
            InvalidRequestError: An undeclared argument, or the input model refuses the payload.
        """
        if self.input_model is None:
            raise InvalidRequestError(f"action {self.name!r} has no input model")
        if not self.accepts_extra_fields():
            declared = {f.alias or n for n, f in self.input_model.model_fields.items()}
            unknown = sorted(set(payload) - declared)
            if unknown:
                raise InvalidRequestError(f"unknown argument(s) for {self.name!r}: {', '.join(unknown)[:200]}")
        try:
            return self.input_model.model_validate_json(payload_bytes, strict=True)
        except ValidationError as exc:
            # Field locations and messages only: the rejected values are the caller's data.
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}" for err in exc.errors()[:5]
            )
            raise InvalidRequestError(f"invalid arguments for {self.name!r}: {problems}") from None


def action(
    *,
    name: str | None = None,
    title: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    destructive: bool = True,
    idempotent: bool = False,
    open_world: bool = True,
    approval: Literal["auto", "signed", "elicit", "deny"] | None = None,
) -> Callable[[Callable[[Any], Any]], Action]:
    """Declare a function as an action (SPEC §1).

    The handler takes exactly one parameter annotated with a pydantic model (the payload) and may
    be sync or async. Its return annotation, when it is a pydantic model, becomes the tool's
    result schema.

    Raises:
        ConfigError: Invalid name, a handler without exactly one model-annotated parameter, or an
            input model that defines the reserved ``nonce`` property.
    """

    def decorate(fn: Callable[[Any], Any]) -> Action:
        action_name = name or fn.__name__
        if not TOOL_NAME_PATTERN.match(action_name):
            raise ConfigError(f"action name {action_name!r} must match ^[A-Za-z][A-Za-z0-9_.-]{{0,63}}$")
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters)
        input_model = hints.get(params[0]) if len(params) == 1 else None
        if not (isinstance(input_model, type) and issubclass(input_model, BaseModel)):
            raise ConfigError(f"action {action_name!r}: the handler must take one pydantic-model parameter")
        properties = input_model.model_json_schema().get("properties", {})
        if RESERVED_ARGUMENTS & set(properties):
            raise ConfigError(f"action {action_name!r}: the input model may not define the reserved 'nonce'")
        output = hints.get("return")
        output_model = output if isinstance(output, type) and issubclass(output, BaseModel) else None
        return Action(
            name=action_name,
            handler=fn,
            input_model=input_model,
            output_model=output_model,
            title=title,
            description=description if description is not None else inspect.getdoc(fn) or "",
            read_only=read_only,
            destructive=destructive,
            idempotent=idempotent,
            open_world=open_world,
            approval=approval,
        )

    return decorate


class Registry(Mapping[str, Action]):
    """An immutable name → :class:`Action` mapping.

    Raises:
        ConfigError: Two different actions share a name (SPEC §1: a startup error).
    """

    def __init__(self, actions: Iterable[Action] = ()) -> None:
        self._actions: dict[str, Action] = {}
        for item in actions:
            existing = self._actions.get(item.name)
            if existing is not None and existing is not item:
                raise ConfigError(f"duplicate action name {item.name!r}")
            self._actions[item.name] = item

    def __getitem__(self, name: str) -> Action:
        return self._actions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._actions)

    def __len__(self) -> int:
        return len(self._actions)


def load_registry(
    modules: Iterable[str] = (), *, builtins: bool = True, plugins: bool = True, extra: Iterable[Action] = ()
) -> Registry:
    """Import action modules and collect their actions.

    Args:
        modules: Importable module names (config ``actions.modules``).
        builtins: Include every module of the top-level ``actions`` package.
        plugins: Include the ``openexec_mcp.actions`` entry points.
        extra: Actions built from config (the opt-in real actions of SPEC §12).

    Raises:
        ConfigError: A module cannot be imported, an entry point does not name actions, or two
            actions share a name.
    """
    found: list[Action] = list(extra)
    names = list(modules)
    if builtins:
        package = _import("actions")
        names = [f"actions.{info.name}" for info in pkgutil.iter_modules(package.__path__)] + names
    for module_name in names:
        found.extend(_actions_in(_import(module_name)))
    if plugins:
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = entry.load()
            except Exception as exc:
                raise ConfigError(f"entry point {entry.name!r} failed to load: {exc}") from None
            found.extend(_actions_from_object(loaded, entry.name))
    return Registry(found)


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import action module {module_name!r}: {exc}") from None


def _actions_in(module: ModuleType) -> list[Action]:
    return [value for value in vars(module).values() if isinstance(value, Action)]


def _actions_from_object(obj: Any, origin: str) -> list[Action]:
    if isinstance(obj, ModuleType):
        return _actions_in(obj)
    if isinstance(obj, Action):
        return [obj]
    if isinstance(obj, Iterable) and all(isinstance(item, Action) for item in obj):  # pyright: ignore[reportUnknownVariableType]
        return list(obj)  # pyright: ignore[reportUnknownArgumentType]
    raise ConfigError(f"entry point {origin!r} must name a module, an action, or a list of actions")
