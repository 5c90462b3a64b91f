"""ToolEnv: schemas shown to the model, calls parsed and run, every error path reported as a turn."""

from __future__ import annotations

import time

import pytest
from gymnasium.utils.env_checker import check_env

from llmenv.errors import TaskConfigError
from llmenv.tool_env import TOOLS_PROMPT, ToolEnv, parse_tool_calls, tool_schema
from llmenv.types import Task

TASK = Task("What is 2+3?", answer="5")


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first integer.
        b: The second integer.
    """
    return a + b


def explode(reason: str) -> str:
    """Always fail.

    Args:
        reason: What to complain about.
    """
    raise ValueError(reason)


def spin(seconds: float) -> str:
    """Busy-loop for a while.

    Args:
        seconds: How long.
    """
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "done"


def make_env(tok, **kwargs):
    return ToolEnv([TASK], lambda c, t: float(t.answer in c), tok, tools=[add, explode, spin], **kwargs)


def call(name, **arguments):
    import json

    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def test_tools_are_listed_in_a_system_block_when_the_template_ignores_them(tok):
    env = make_env(tok)
    _, info = env.reset(seed=0)
    assert not env.template_shows_tools
    system = info["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You can call these tools:")
    assert '"name": "add"' in system["content"] and "<tool_call>" in info["text"]


def test_templates_that_render_tools_get_them_through_tools_argument(tok):
    template = (
        "{% if tools %}<|im_start|>system\nTOOLS:{% for t in tools %} {{ t.function.name }}{% endfor %}<|im_end|>\n"
        "{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    env = make_env(tok, chat_template=template)
    _, info = env.reset(seed=0)
    assert env.template_shows_tools and "TOOLS: add explode spin" in info["text"]
    assert "You can call these tools" not in info["text"]


def test_a_call_returns_its_result_as_a_tool_turn_then_the_answer_is_verified(tok):
    env = make_env(tok)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(call("add", a=2, b=3))
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["env_messages"] == [{"role": "tool", "content": "5"}] and info["tool_calls"] == 1
    _, reward, terminated, _, info = env.step("The answer is 5.")
    assert (reward, terminated, info["stop_reason"]) == (1.0, True, "answered")
    assert env.trajectory.rewards == (0.0, 1.0)
    text = env.codec.decode(env.trajectory.tokens, skip_special_tokens=False)
    assert "<|im_start|>tool\n5<|im_end|>\n<|im_start|>assistant\nThe answer is 5." in text


@pytest.mark.parametrize(
    "completion, kind, message",
    [
        ("<tool_call>{not json}</tool_call>", "malformed", "not valid JSON"),
        ("<tool_call>[1, 2]</tool_call>", "malformed", 'string "name"'),
        ('<tool_call>{"name": "add", "arguments": [1]}</tool_call>', "malformed", "must be a JSON object"),
        ('<tool_call>{"name": "add"', "malformed", "not closed"),
        (call("mul", a=1), "unknown_tool", "unknown tool 'mul'"),
        (call("add", a=1), "bad_arguments", "missing ['b']"),
        (call("add", a=1, b=2, c=3), "bad_arguments", "unknown ['c']"),
        (call("add", a="1", b=2), "bad_arguments", "'a' must be a integer, got str"),
        (call("explode", reason="boom"), "exception", "ValueError: boom"),
        (call("spin", seconds=60.0), "timeout", "timed out after 0.3s"),
    ],
)
def test_every_tool_error_comes_back_as_a_turn_and_is_counted(tok, completion, kind, message):
    env = make_env(tok, tool_timeout_s=0.3)
    env.reset(seed=0)
    started = time.perf_counter()
    _, reward, terminated, truncated, info = env.step(completion)
    assert time.perf_counter() - started < 20  # a bound on a hang: the 60 s spin is cut at 0.3 s
    assert not terminated and not truncated and reward == 0.0
    assert info["tool_errors"] == {kind: 1}
    assert message in info["env_messages"][0]["content"] and info["env_messages"][0]["role"] == "tool"


def test_results_keep_the_order_of_the_calls(tok):
    env = make_env(tok)
    env.reset(seed=0)
    _, _, _, _, info = env.step(call("add", a=1, b=1) + "<tool_call>oops</tool_call>" + call("add", a=2, b=2))
    assert [m["content"][:6] for m in info["env_messages"]] == ["2", "Error:", "4"]


def test_tool_call_budget_is_enforced(tok):
    env = make_env(tok, max_tool_calls=2, max_turns=5)
    env.reset(seed=0)
    _, _, _, _, info = env.step(call("add", a=1, b=1) * 3)
    assert info["tool_calls"] == 2 and info["tool_errors"] == {"budget": 1}
    _, _, _, _, info = env.step(call("add", a=1, b=1))
    assert "budget of 2 tool calls is used up" in info["env_messages"][0]["content"]
    assert info["tool_errors"] == {"budget": 2}


def test_endless_tool_calling_is_truncated_by_max_turns(tok):
    env = make_env(tok, max_turns=3)
    env.reset(seed=0)
    for _ in range(3):
        _, _, terminated, truncated, info = env.step(call("add", a=1, b=1))
    assert truncated and not terminated and info["stop_reason"] == "max_turns"


def test_parse_tool_calls_accepts_json_string_arguments():
    (parsed,) = parse_tool_calls('<tool_call>{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}</tool_call>')
    assert parsed.name == "add" and dict(parsed.arguments) == {"a": 1, "b": 2} and parsed.error is None


def test_undocumented_tools_are_rejected_with_a_clear_error(tok):
    def bare(x):
        return x

    with pytest.raises(TaskConfigError, match="needs type hints and a docstring"):
        tool_schema(bare)
    with pytest.raises(TaskConfigError, match="at least one tool"):
        ToolEnv([TASK], lambda c, t: 0.0, tok, tools=[])


def test_check_env_passes(tok):
    check_env(make_env(tok), skip_render_check=True)


def test_tools_prompt_is_documented():
    assert "{schemas}" in TOOLS_PROMPT


# A tokenizer-defined call format (transformers' `response_template`), unlike Hermes: `[CALLS]` then a JSON list.
CALLS_TEMPLATE = {
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "content": {"content": "text"},
        "tool_calls": {
            "open": "[CALLS]",
            "content": "json",
            "transform_each": True,
            "transform": {"type": "function", "function": {"name": "{name}", "arguments": "{arguments}"}},
        },
    },
}


@pytest.fixture
def tok_own_format(tok):
    import copy

    own = copy.deepcopy(tok)
    own.response_template = CALLS_TEMPLATE
    return own


def test_calls_in_the_tokenizers_own_format_are_parsed_with_its_response_template(tok_own_format):
    env = make_env(tok_own_format)
    _, info = env.reset(seed=0)
    assert env.call_format == "template"
    assert "<tool_call>" not in info["text"] and '"name": "add"' in info["text"]  # tools listed, no Hermes syntax
    _, reward, terminated, _, info = env.step('Let me add. [CALLS][{"name": "add", "arguments": {"a": 2, "b": 3}}]')
    assert not terminated and reward == 0.0
    assert info["env_messages"] == [{"role": "tool", "content": "5"}] and info["tool_calls"] == 1
    # A Hermes call is plain text to this tokenizer's format: it is the final answer, and it is verified.
    _, reward, terminated, _, info = env.step(call("add", a=2, b=3) + " so 5")
    assert terminated and reward == 1.0 and info["stop_reason"] == "answered"


def test_string_arguments_are_cast_by_the_tool_schema_in_the_own_format(tok_own_format):
    env = make_env(tok_own_format)
    env.reset(seed=0)
    _, _, _, _, info = env.step('[CALLS][{"name": "add", "arguments": {"a": "2", "b": 3}}]')
    assert info["env_messages"] == [{"role": "tool", "content": "5"}] and info["tool_errors"] == {}


@pytest.mark.parametrize(
    ("completion", "kind", "message"),
    [
        ('[CALLS][{"name": "add", "argu', "malformed", "does not follow the chat format"),
        ('[CALLS][{"nme": "add"}]', "malformed", "does not follow the chat format"),
        ('[CALLS][{"name": "add", "arguments": [1]}]', "malformed", "must be a JSON object"),
        ('[CALLS][{"name": "mul", "arguments": {}}]', "unknown_tool", "unknown tool 'mul'"),
        ('[CALLS][{"name": "add", "arguments": {"a": 1}}]', "bad_arguments", "missing ['b']"),
    ],
)
def test_own_format_errors_come_back_as_turns(tok_own_format, completion, kind, message):
    env = make_env(tok_own_format)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(completion)
    assert not terminated and not truncated and reward == 0.0
    assert info["tool_errors"] == {kind: 1} and message in info["env_messages"][0]["content"]


def test_call_format_is_checked(tok, tok_own_format):
    assert make_env(tok).call_format == "hermes"
    assert make_env(tok_own_format, call_format="hermes").call_format == "hermes"
    with pytest.raises(TaskConfigError, match="needs a tokenizer with a `response_template`"):
        make_env(tok, call_format="template")
    with pytest.raises(TaskConfigError, match="call_format must be one of"):
        make_env(tok, call_format="json")
