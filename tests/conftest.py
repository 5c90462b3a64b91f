"""Shared fixtures: a tiny real tokenizer (trained in-process) and a saved tiny model folder built on it."""

from __future__ import annotations

import pytest

from llmenv.models import tiny_llama
from llmenv.testing import tiny_tokenizer


@pytest.fixture(scope="session")
def tok():
    """A byte-level BPE tokenizer with ChatML special tokens and template."""
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tok_no_template():
    """The same tokenizer without a chat template (exercises the documented default)."""
    return tiny_tokenizer(chat_template=False)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tok):
    """A folder holding a tiny random Llama (seed 0) and the tiny tokenizer: a `--model` any learner loads."""
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_llama(tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
