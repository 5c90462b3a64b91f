"""`ToolEnv`: a dialogue in which the policy calls Python tools and gets their results back as turns.

Tools are plain functions with type hints and a Google-style docstring; transformers turns them
into JSON schemas. The schemas reach the model through the chat template's `tools=` argument
when the template renders them, else through the system-prompt block `TOOLS_PROMPT` below.
Calls are parsed from the Hermes format `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
(several per turn allowed), or, when the tokenizer defines its own format through a transformers
`response_template` (read by `tokenizer.parse_response`), from that format; `call_format` picks
one. Each result comes back as a `tool`-role message. A malformed call,
an unknown tool, bad arguments, a tool exception, a timeout or an exhausted call budget comes
back to the model as an error message and is counted in `info["tool_errors"]`, never a crash.
A turn without a tool call is the final answer and is scored by the verifier. Tools run on the
caller's thread under a deadline; tools that may block in C or I/O (the sandboxed `python`
tool) bound themselves.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from llmenv.chat import shared_codec
from llmenv.deadline import DeadlineExceeded, call_with_deadline, describe_exception
from llmenv.dialogue import DialogueEnv, EnvReply, TurnContext
from llmenv.env import PendingStep
from llmenv.errors import TaskConfigError
from llmenv.types import Message, Task

TOOLS_PROMPT = (
    "You can call these tools:\n<tools>\n{schemas}\n</tools>\n"
    'To call a tool, write <tool_call>{{"name": <tool name>, "arguments": <arguments as a JSON object>}}'
    "</tool_call>. Each result comes back in a message from the tool. When you have the answer, reply "
    "without a tool call."
)
"""The system-prompt block that lists the tools for chat templates that ignore `tools=` (Hermes calls)."""

TOOLS_LIST_PROMPT = (
    "You can call these tools:\n<tools>\n{schemas}\n</tools>\n"
    "Each result comes back in a message from the tool. When you have the answer, reply without a tool call."
)
"""The block used instead of `TOOLS_PROMPT` when calls are parsed in the tokenizer's own format."""

CALL_FORMATS = ("auto", "hermes", "template")
"""`call_format` values: "template" parses with the tokenizer's `response_template`, "hermes" with
`parse_tool_calls`, "auto" picks "template" when the tokenizer has a response template, else "hermes"."""

_CALL_RE = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.S)
_MAX_RESULT_CHARS = 4000


@dataclass(frozen=True)
class ToolCall:
    """One call as written: the tool's name and arguments, or why it could not be parsed."""

    name: str
    arguments: Mapping[str, Any]
    error: str | None = None


def tool_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The JSON schema of a typed, documented function (raises TaskConfigError naming what is missing)."""
    from transformers.utils import get_json_schema  # transformers is slow to import; only tool envs need it

    try:
        return get_json_schema(fn)
    except Exception as exc:  # transformers raises its own error types for undocumented arguments
        raise TaskConfigError(
            f"tool {getattr(fn, '__name__', fn)!r} needs type hints and a docstring with an Args section: {exc}"
        ) from exc


def parse_tool_calls(text: str) -> list[ToolCall]:
    """The Hermes-format calls in `text`, in order; a call that could not be parsed carries `error`."""
    calls = []
    for match in _CALL_RE.finditer(text):
        body, closed = match.group(1).strip(), bool(match.group(2))
        calls.append(_parse_call(body) if closed else _malformed("a <tool_call> was not closed with </tool_call>"))
    return calls


def parse_template_tool_calls(
    tokenizer: Any, text: str, prefix: str, tools: Sequence[Mapping[str, Any]] | None = None
) -> list[ToolCall]:
    """The calls in `text` as the tokenizer's `response_template` defines them (`prefix`: the prompt before it).

    A response the template cannot parse counts as one malformed call, so the model hears why.
    """
    try:
        message = tokenizer.parse_response(text, prefix=prefix, tools=list(tools) if tools else None)
    except Exception as exc:  # noqa: BLE001 - transformers raises ValueError/KeyError for off-format output
        return [_malformed(f"the tool call does not follow the chat format ({describe_exception(exc)})")]
    raw_calls = (message.get("tool_calls") or []) if isinstance(message, dict) else []
    if not isinstance(raw_calls, list):
        raw_calls = [raw_calls]
    return [_from_template_call(raw) for raw in raw_calls]


def _from_template_call(raw: Any) -> ToolCall:
    """A ToolCall from one parsed call: `{"name", "arguments"}`, optionally wrapped as `{"function": {...}}`."""
    if isinstance(raw, dict) and isinstance(raw.get("function"), dict):
        raw = raw["function"]
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        return _malformed('a tool call must name the tool with a string "name"')
    return _checked_call(raw["name"], raw.get("arguments", {}))


def _malformed(error: str) -> ToolCall:
    return ToolCall("", {}, error)


def _parse_call(body: str) -> ToolCall:
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        return _malformed(f"the tool call is not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return _malformed('a tool call must be a JSON object with a string "name"')
    return _checked_call(payload["name"], payload.get("arguments", {}))


def _checked_call(name: str, arguments: Any) -> ToolCall:
    """The call of `name`, or a malformed one when `arguments` is not a JSON object (or a string holding one)."""
    if isinstance(arguments, str):  # some models emit the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    if not isinstance(arguments, dict):
        return _malformed(f'the "arguments" of {name!r} must be a JSON object')
    return ToolCall(name, arguments)


def _argument_error(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> str | None:
    """Why `arguments` do not fit the tool's parameter schema (names and JSON types), or None."""
    parameters = schema["function"].get("parameters", {})
    properties = parameters.get("properties", {})
    missing = [name for name in parameters.get("required", []) if name not in arguments]
    unknown = [name for name in arguments if name not in properties]
    if missing or unknown:
        parts = [f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else ""]
        return f"bad arguments ({', '.join(p for p in parts if p)}); expected {sorted(properties)}"
    json_types: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "array": list,
        "object": dict,
    }
    for name, value in arguments.items():
        expected = json_types.get(properties[name].get("type", ""))
        if expected and (not isinstance(value, expected) or (expected is not bool and isinstance(value, bool))):
            return f"argument {name!r} must be a {properties[name]['type']}, got {type(value).__name__}"
    return None


class ToolEnv(DialogueEnv):
    """Tool calls and results between a prompt and a final, verified answer.

    Args (beyond LLMEnv's):
        tools: typed, documented Python functions the policy may call.
        max_tool_calls: calls allowed per episode; later calls get an error result.
        tool_timeout_s: wall-clock bound of each call.
        call_format: how calls are parsed, one of CALL_FORMATS ("auto": the tokenizer's own format when
            it defines a `response_template`, else Hermes).
        max_turns: policy turns (tool-calling turns included) before truncation.
    """

    ENV_KWARGS: ClassVar[frozenset[str]] = DialogueEnv.ENV_KWARGS - {"responder", "verify_every_turn"} | {
        "tools",
        "max_tool_calls",
        "tool_timeout_s",
        "call_format",
    }

    def __init__(
        self,
        source: Any,
        verifier: Callable[[str, Task], Any],
        tokenizer: Any,
        *,
        tools: Sequence[Callable[..., Any]],
        max_tool_calls: int = 8,
        tool_timeout_s: float = 10.0,
        call_format: str = "auto",
        max_turns: int = 6,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            source,
            verifier,
            tokenizer,
            responder=self._respond,
            max_turns=max_turns,
            verify_every_turn=False,
            **kwargs,
        )
        if not tools:
            raise TaskConfigError("ToolEnv needs at least one tool")
        self.tools = {fn.__name__: fn for fn in tools}
        self.schemas = {name: tool_schema(fn) for name, fn in self.tools.items()}
        self.max_tool_calls = max_tool_calls
        if call_format not in CALL_FORMATS:
            raise TaskConfigError(f"call_format must be one of {CALL_FORMATS}, got {call_format!r}")
        has_template = getattr(self.tokenizer, "response_template", None) is not None
        if call_format == "template" and not has_template:
            raise TaskConfigError(
                'call_format="template" needs a tokenizer with a `response_template` (transformers 5 '
                'response parsing); this one has none: use call_format="hermes"'
            )
        self._parsed: tuple[tuple[str, int], list[ToolCall]] | None = None
        use_template = call_format == "template" or (call_format == "auto" and has_template)
        self.call_format = "template" if use_template else "hermes"
        self.tool_timeout_s = tool_timeout_s
        with_tools = shared_codec(
            self.tokenizer, chat_template=kwargs.get("chat_template"), tools=list(self.schemas.values())
        )
        probe = [Message(role="user", content="probe")]
        self.template_shows_tools = with_tools.render_full(probe) != self.codec.render_full(probe)
        if self.template_shows_tools:
            self.codec = with_tools

    def prompt_messages(self, task: Task) -> list[Message]:
        """The task's messages, with the tools block added to the system message when the template ignores tools."""
        messages = super().prompt_messages(task)
        if self.template_shows_tools:
            return messages
        prompt = TOOLS_PROMPT if self.call_format == "hermes" else TOOLS_LIST_PROMPT
        block = prompt.format(schemas="\n".join(json.dumps(s) for s in self.schemas.values()))
        if messages and messages[0]["role"] == "system":
            return [{"role": "system", "content": f"{messages[0]['content']}\n\n{block}"}, *messages[1:]]
        return [{"role": "system", "content": block}, *messages]

    def needs_verdict(self, pending: PendingStep) -> bool:
        """Only a turn without tool calls is a final answer to verify."""
        if self.call_format == "hermes":
            return "<tool_call>" not in pending.completion
        return not self.parse_calls(pending.completion, self._messages)

    def parse_calls(self, completion: str, history: Sequence[Message]) -> list[ToolCall]:
        """The calls written in `completion`, the assistant turn that answers `history`, in this env's format."""
        if self.call_format == "hermes":
            return parse_tool_calls(completion)
        key = (completion, len(history))
        if self._parsed is None or self._parsed[0] != key:  # needs_verdict and the reply parse the same turn
            prefix = self.codec.render(history)
            calls = parse_template_tool_calls(self.tokenizer, completion, prefix, list(self.schemas.values()))
            self._parsed = (key, calls)
        return self._parsed[1]

    def _respond(self, ctx: TurnContext) -> EnvReply:
        calls = self.parse_calls(ctx.completion, ctx.messages[:-1])
        if not calls:
            return EnvReply(done=True, reason="answered")
        errors: Counter[str] = Counter(ctx.state.get("tool_errors", {}))
        used = ctx.state.get("tool_calls", 0)
        results: list[Message] = []
        for call in calls:
            if call.error is not None:
                kind, text = "malformed", f"Error: {call.error}."
            elif used >= self.max_tool_calls:
                kind, text = "budget", f"Error: the budget of {self.max_tool_calls} tool calls is used up; answer now."
            else:
                used += 1
                kind, text = self._run(call)
            if kind:
                errors[kind] += 1
            results.append({"role": "tool", "content": text})
        ctx.state["tool_calls"], ctx.state["tool_errors"] = used, dict(errors)
        return EnvReply(messages=results, reward=0.0, info={"tool_calls": used, "tool_errors": dict(errors)})

    def _run(self, call: ToolCall) -> tuple[str, str]:
        """(error kind or "", result text) of one call."""
        fn = self.tools.get(call.name)
        if fn is None:
            return "unknown_tool", f"Error: unknown tool {call.name!r}; available: {sorted(self.tools)}."
        problem = _argument_error(self.schemas[call.name], call.arguments)
        if problem:
            return "bad_arguments", f"Error: {call.name}: {problem}."
        try:
            result = call_with_deadline(lambda: fn(**call.arguments), self.tool_timeout_s)
        except DeadlineExceeded:
            return "timeout", f"Error: {call.name} timed out after {self.tool_timeout_s:g}s."
        except Exception as exc:  # noqa: BLE001 - a tool failure is reported to the model, never a crash
            return "exception", f"Error: {call.name} raised {describe_exception(exc)}."
        text = result if isinstance(result, str) else json.dumps(result, default=str)
        if len(text) > _MAX_RESULT_CHARS:
            text = text[:_MAX_RESULT_CHARS] + f"... [{len(text) - _MAX_RESULT_CHARS} more characters cut]"
        return "", text
