"""Constitution files: the built-in one loads, a bad file is one clear error naming what is wrong."""

from __future__ import annotations

import json
import random

import pytest

from llmenv.constitution import DEFAULT_CONSTITUTION, constitution_from_json, load_constitution
from llmenv.errors import ConfigError


def test_the_built_in_constitution_loads_by_name_and_by_path():
    by_name, by_path = load_constitution("default"), load_constitution(DEFAULT_CONSTITUTION)
    assert by_name == by_path and len(by_name.principles) >= 3
    for principle in by_name.principles:
        assert principle.critique and principle.revision and principle.criterion.endswith("?")


def test_a_principle_without_a_criterion_gets_one_made_from_its_critique_request():
    constitution = constitution_from_json(
        {"principles": [{"name": "kind", "critique": "Is it rude?", "revision": "Fix it."}]}
    )
    assert constitution.name == "constitution"
    assert "Is it rude?" in constitution.principles[0].criterion


def test_draws_are_reproducible_from_the_seed_and_cover_every_principle():
    constitution = load_constitution("default")
    first = [constitution.draw(random.Random(f"0:{i}")).name for i in range(50)]
    assert first == [constitution.draw(random.Random(f"0:{i}")).name for i in range(50)]
    assert set(first) == {p.name for p in constitution.principles}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "non-empty 'principles' list"),
        ('{"principles": []}', "non-empty 'principles' list"),
        ('{"principles": ["be nice"]}', "principle 0 is a str"),
        ('{"principles": [{"name": "a", "critique": "c"}]}', "principle 0: 'revision' must be a non-empty string"),
        ('{"principles": [{"name": "a", "critique": "c", "revision": "r", "criterion": 3}]}', "'criterion'"),
        (json.dumps({"principles": [{"name": "a", "critique": "c", "revision": "r"}] * 2}), "distinct"),
    ],
)
def test_a_bad_constitution_file_is_a_config_error_naming_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as raised:
        load_constitution(path)
    assert str(path) in str(raised.value)


def test_a_missing_constitution_file_says_so():
    with pytest.raises(ConfigError, match="no such file"):
        load_constitution("/nonexistent/constitution.json")
