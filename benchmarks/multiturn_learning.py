"""Does training on a multi-turn task raise held-out success? GRPO and PPO on `llmenv/arith-retry-demo-v0`, 3 seeds.

Run: python benchmarks/multiturn_learning.py [--learners grpo,ppo] [--seeds 0,1,2] [--out runs/multiturn]
[--extra "ppo: --entropy-coef 0.01"]: `benchmarks/learning.py`'s `multiturn` suite (its docstring says what
is run and measured).

The task: one-digit `+`/`-` problems with the demo's system prompt; a wrong answer gets feedback ("Your
answer 7 is not correct. Check your work and try again.", or, when the correct part read no answer, as for a
number left unboxed, a request to write it as `\\boxed{N}`) and one more attempt, so a failed first attempt
makes an episode of two policy turns with env tokens between them. Each attempt earns the demo's
shaped reward (correct boxed answer 1 + exactly one `\\boxed{}` holding a whole number 0.5 + correct final
number 0.25) times 0.5 per earlier attempt. Success = the episode's final attempt is correct.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

from learning import main  # noqa: E402 - needs the path above

if __name__ == "__main__":
    main("multiturn", default_out="runs/multiturn")
