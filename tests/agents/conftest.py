"""Fixtures the learner tests share: a saved tiny model folder to train from."""

from __future__ import annotations

import pytest

from llmenv.models import tiny_llama


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tok):
    """A folder holding a tiny random Llama (seed 0) and the tiny tokenizer: a `--model` any learner loads."""
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_llama(tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
