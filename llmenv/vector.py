"""`VectorLLMEnv`: many episodes of one task stepped as a batch, with GRPO groups sharing a task.

`reset` and `step` follow Gymnasium's vector API (tuples of variable-length token arrays in and
out, infos as dicts of per-env arrays with `_key` masks, next-step autoreset). With
`group_size=G`, consecutive blocks of G environments always play the same task, which is what
group-relative learners need. A step first validates and decodes every action, then verifies
the whole batch at once through `call_verifier_batch` (verifiers with a `verify_batch` method
spread it over worker processes, as the math verifier does; every verdict gets the same checks
as a single call), then advances each episode; nothing is re-tokenized. The N environments share
one task source and one chat codec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from llmenv.env import LLMEnv, PendingStep
from llmenv.errors import TaskConfigError
from llmenv.types import Task, Verdict
from llmenv.verifiers.base import call_verifier_batch, prestart_verifier


class VectorLLMEnv(VectorEnv):
    """`num_envs` copies of a registered task, stepped together.

    With groups, an environment whose episode ended waits (its action is ignored, reward 0,
    `info["waiting"]`) until every member of its group has ended; the step after that resets the
    whole group on one new task. Without groups each environment autoresets on its own, one step
    after it ended, as Gymnasium's next-step autoreset does. With `autoreset=False` ended
    environments wait until `reset()` (what a rollout collector wants).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        task_id: str,
        num_envs: int,
        tokenizer: Any,
        *,
        group_size: int = 1,
        autoreset: bool = True,
        **make_kwargs: Any,
    ) -> None:
        from llmenv.models import load_tokenizer  # noqa: PLC0415 - models imports transformers' model code
        from llmenv.registry import env_builder  # noqa: PLC0415 - the registry imports every env class

        if num_envs < 1 or group_size < 1 or num_envs % group_size:
            raise TaskConfigError(f"num_envs ({num_envs}) must be a positive multiple of group_size ({group_size})")
        tokenizer = load_tokenizer(tokenizer)
        build = env_builder(task_id, tokenizer=tokenizer, **make_kwargs)  # one source, one codec for all envs
        self.envs: list[LLMEnv] = [build() for _ in range(num_envs)]
        self.num_envs = num_envs
        self.group_size = group_size
        self.autoreset = autoreset
        self.task_id = self.envs[0].task_id
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._ended = np.zeros(num_envs, dtype=bool)
        self._obs: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * num_envs
        self._seed: int | None = None
        self._resets = 0

    @property
    def groups(self) -> np.ndarray:
        """The group id of every environment."""
        return np.arange(self.num_envs) // self.group_size

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[np.ndarray, ...], dict[str, Any]]:
        """Reset every environment; group members share the task their group's first env draws.

        `seed` is an int (env i gets seed + i) or one seed per env; `options` may hold `"tasks"`,
        one Task per group, to choose the tasks explicitly.
        """
        seeds = self._seeds(seed)
        tasks = (options or {}).get("tasks")
        if tasks is not None and len(tasks) != self.num_envs // self.group_size:
            raise TaskConfigError(f"options['tasks'] needs one Task per group ({self.num_envs // self.group_size})")
        infos: dict[str, Any] = {}
        for group in range(self.num_envs // self.group_size):
            group_task = tasks[group] if tasks is not None else None
            for i, info in self._reset_group(group, seeds, group_task):
                infos = self._add_info(infos, info, i)
        self._ended[:] = False
        return tuple(self._obs), infos

    def step(
        self, actions: Sequence[Any]
    ) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every live environment with its action; see the class docstring for ended ones."""
        if len(actions) != self.num_envs:
            raise TaskConfigError(f"expected {self.num_envs} actions (one per env), got {len(actions)}")
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        reset_now = self._due_for_reset()
        pending: dict[int, PendingStep] = {}
        for i, (env, action) in enumerate(zip(self.envs, actions)):
            if not self._ended[i]:
                pending[i] = env.prepare_step(action)
        verdicts = self._verify([i for i, p in pending.items() if p.needs_verdict], pending)
        for i, step in pending.items():
            obs, reward, term, trunc, info = self.envs[i].complete_step(step, verdicts.get(i))
            self._obs[i] = obs
            rewards[i], terminated[i], truncated[i] = float(reward), term, trunc
            self._ended[i] = term or trunc
            infos = self._add_info(infos, info, i)
        for group in sorted({i // self.group_size for i in reset_now}):
            for i, info in self._reset_group(group, None, None):
                infos = self._add_info(infos, {**info, "autoreset": True}, i)
                self._ended[i] = False
        for ended in np.flatnonzero(self._ended):
            if ended not in pending:
                infos = self._add_info(infos, {"waiting": True}, int(ended))
        return tuple(self._obs), rewards, terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Close every environment."""
        for env in self.envs:
            env.close()

    # -- internals ----------------------------------------------------------------------------

    def _seeds(self, seed: int | Sequence[int] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise TaskConfigError(f"expected one seed per env ({self.num_envs}), got {len(seed)}")
        return [int(s) for s in seed]

    def _reset_group(
        self, group: int, seeds: list[int | None] | None, task: Task | None
    ) -> list[tuple[int, dict[str, Any]]]:
        members = range(group * self.group_size, (group + 1) * self.group_size)
        out = []
        for i in members:
            seed = seeds[i] if seeds is not None else None
            options = {"task": task} if task is not None else None
            obs, info = self.envs[i].reset(seed=seed, options=options)
            task = info["task"]  # the first member draws; the others play the same task
            self._obs[i] = obs
            out.append((i, {**info, "group": group}))
        return out

    def _due_for_reset(self) -> list[int]:
        """Envs that ended on the previous step and whose whole group has ended (none without autoreset)."""
        due: list[int] = []
        if not self.autoreset:
            return due
        for group in range(self.num_envs // self.group_size):
            members = range(group * self.group_size, (group + 1) * self.group_size)
            if all(self._ended[i] for i in members):
                due.extend(members)
        return due

    def prestart(self) -> None:
        """Let the task's verifier start its worker processes in the background (see `prestart_verifier`)."""
        for verifier in {id(env.verifier): env.verifier for env in self.envs}.values():
            prestart_verifier(verifier)

    def _verify(self, indices: list[int], pending: dict[int, PendingStep]) -> dict[int, Verdict]:
        """Verdicts for the given envs' pending actions, a batch per verifier, with `call_verifier`'s checks."""
        out: dict[int, Verdict] = {}
        by_verifier: dict[int, list[int]] = {}
        for i in indices:
            by_verifier.setdefault(id(self.envs[i].verifier), []).append(i)
        for members in by_verifier.values():
            first = self.envs[members[0]]
            verdicts = call_verifier_batch(
                first.verifier,
                [pending[i].completion for i in members],
                [self.envs[i].task for i in members],  # type: ignore[misc]  # set by reset
                timeout_s=first.verifier_timeout_s,
            )
            out.update(zip(members, verdicts, strict=True))
        return out
