"""The package layout contract: sibling folders install as llmenv.* and never as top-level names."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_subpackages_import_under_llmenv():
    import llmenv.agents.policy
    import llmenv.sandboxes
    import llmenv.tasks.arith
    import llmenv.verifiers.base

    assert llmenv.verifiers.base.Rubric is not None
    assert llmenv.tasks.arith.generate_arith is not None
    assert llmenv.agents.policy.HFPolicy is not None


def test_bare_verifiers_and_agents_never_resolve_into_this_repo(tmp_path):
    for name in ("verifiers", "agents", "sandboxes", "tasks"):
        found = importlib.util.find_spec(name)
        if found is not None and found.origin:
            assert REPO not in Path(found.origin).resolve().parents, f"`import {name}` resolves into the repo"
    # also from a fresh interpreter started elsewhere, as a user would
    code = (
        "import importlib.util, sys\n"
        "for n in ('verifiers', 'agents'):\n"
        "    s = importlib.util.find_spec(n)\n"
        "    print(n, s.origin if s else None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    for line in out.stdout.splitlines():
        name, origin = line.split(" ", 1)
        assert origin == "None" or str(REPO) not in origin, f"`import {name}` resolves to {origin}"


def test_public_names_import_from_where_design_says_they_live():
    from llmenv.agents import Generation, HFPolicy, Policy, SamplingParams
    from llmenv.agents.policy import HFPolicy as PolicyModuleHFPolicy
    from llmenv.sandboxes import Limits, LocalSandbox
    from llmenv.verifiers import CodeVerifier, MathVerifier, Rubric
    from llmenv.verifiers.math import MathVerifier as MathModuleVerifier

    assert HFPolicy is PolicyModuleHFPolicy and MathVerifier is MathModuleVerifier
    assert all(callable(x) for x in (Generation, Policy, SamplingParams, Limits, LocalSandbox, CodeVerifier, Rubric))
