"""Learners and what they share: the Policy protocol and HFPolicy, rollout, evaluation, losses, trainer, GRPO, PPO.

`from llmenv.agents import Policy, HFPolicy, SamplingParams, Generation` gives the generation API;
learners are imported from their own modules (`llmenv.agents.grpo`, `llmenv.agents.ppo`).
"""

from __future__ import annotations

from llmenv.agents.policy import Generation, HFPolicy, Policy, SamplingParams

__all__ = ["Generation", "HFPolicy", "Policy", "SamplingParams"]
