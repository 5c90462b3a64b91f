"""Shared fixtures: a tiny real tokenizer (trained in-process) and a throwaway registered task."""

from __future__ import annotations

import pytest

from llmenv.testing import tiny_tokenizer


@pytest.fixture(scope="session")
def tok():
    """A byte-level BPE tokenizer with ChatML special tokens and template."""
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tok_no_template():
    """The same tokenizer without a chat template (exercises the documented default)."""
    return tiny_tokenizer(chat_template=False)
