"""Built-in tasks; `register_builtin_tasks()` is called by `import llmenv`."""

from __future__ import annotations


def register_builtin_tasks() -> None:
    """Register the tasks that ship with llmenv under the `llmenv/` namespace."""
    from llmenv.registry import register_task
    from llmenv.tasks.arith import generate_arith
    from llmenv.tasks.countdown import CountdownVerifier, generate_countdown
    from llmenv.tasks.math_datasets import GSM8K, MATH
    from llmenv.verifiers.math import MathVerifier

    math_verifier = MathVerifier()
    register_task("arith-v0", source=generate_arith, verifier=math_verifier, replace=True,
                  description="integer arithmetic; knobs: digits, ops, terms")
    register_task("countdown-v0", source=generate_countdown, verifier=CountdownVerifier(), replace=True,
                  description="reach a target with given numbers, each used once; knobs: count, max_number")
    register_task("gsm8k-v0", source=GSM8K, verifier=math_verifier, replace=True,
                  description="GSM8K word problems (Hub openai/gsm8k or data_files=)")
    register_task("math-v0", source=MATH, verifier=math_verifier, replace=True,
                  description="MATH competition problems (Hub HuggingFaceH4/MATH-500 or data_files=)")
