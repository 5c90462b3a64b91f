"""ChatCodec: spliced rendering equals the tokenizer's own apply_chat_template, token for token."""

from __future__ import annotations

import random

import numpy as np
import pytest

from llmenv.chat import DEFAULT_CHAT_TEMPLATE, ChatCodec
from llmenv.errors import TokenizerError

ALPHABET = "abc XYZ 0123456789 +-*/=(){}[]<>\\$^_.,;:!?\n\t éß漢字🙂"


def random_conversation(rng: random.Random) -> list[dict[str, str]]:
    roles = ["user"] if rng.random() < 0.5 else ["system", "user"]
    roles += rng.choice([[], ["assistant", "user"], ["assistant", "user", "assistant", "user"]])
    return [{"role": r, "content": "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))} for r in roles]


def reference_ids(tokenizer, messages, template=None):
    out = tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_spliced_prompts_equal_apply_chat_template(tok):
    codec = ChatCodec(tok)
    rng = random.Random(0)
    for _ in range(300):
        messages = random_conversation(rng)
        assert codec.encode(messages).tolist() == reference_ids(tok, messages)
        assert codec.render(messages) == codec.render_full(messages)
    assert all(v is not None for v in codec._layouts.values()), "ChatML layouts should take the fast path"
    assert all(v is not None for v in codec._cuts.values()), "the prompt prefix should be cached"


@pytest.mark.slow
def test_spliced_prompts_equal_apply_chat_template_for_smollm2():
    from llmenv.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    codec = ChatCodec(tokenizer)
    rng = random.Random(2)
    for _ in range(300):
        messages = random_conversation(rng)
        assert codec.encode(messages).tolist() == reference_ids(tokenizer, messages)
    assert codec._cuts and all(v is not None for v in codec._cuts.values())


def test_encode_returns_int64_vector(tok):
    ids = ChatCodec(tok).encode([{"role": "user", "content": "hi"}])
    assert ids.dtype == np.int64 and ids.ndim == 1


def test_tokenizer_without_template_uses_documented_chatml_default(tok_no_template):
    codec = ChatCodec(tok_no_template)
    assert codec.uses_default_template and codec.chat_template == DEFAULT_CHAT_TEMPLATE
    text = codec.render([{"role": "user", "content": "2+2?"}])
    assert text == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert codec.stop_token_ids == {tok_no_template.convert_tokens_to_ids("<|im_end|>")}


def test_template_that_rewrites_content_is_rendered_fully(tok):
    trimming = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    codec = ChatCodec(tok, chat_template=trimming)
    messages = [{"role": "user", "content": "  padded  "}]
    assert codec.render(messages) == "<|im_start|>user\npadded<|im_end|>\n<|im_start|>assistant\n"
    assert codec._layouts[(("user",), True)] is None
    assert codec.encode(messages).tolist() == reference_ids(tok, messages, trimming)


def test_continuation_is_the_text_after_the_assistant_content(tok):
    codec = ChatCodec(tok)
    history = [{"role": "user", "content": "guess"}, {"role": "assistant", "content": "50"}]
    text = codec.continuation(history, [{"role": "user", "content": "higher"}])
    assert text == "<|im_end|>\n<|im_start|>user\nhigher<|im_end|>\n<|im_start|>assistant\n"
    full = codec.render_full([*history, {"role": "user", "content": "higher"}])
    assert full.endswith("50" + text)


def test_continuation_needs_an_assistant_turn_last(tok):
    with pytest.raises(TokenizerError, match="ends with an assistant message"):
        ChatCodec(tok).continuation([{"role": "user", "content": "x"}], [])


def test_decode_drops_special_tokens_unless_asked(tok):
    codec = ChatCodec(tok)
    ids = codec.encode_text("The answer is 42") + [tok.eos_token_id]
    assert codec.decode(ids) == "The answer is 42"
    assert codec.decode(np.asarray(ids), skip_special_tokens=False).endswith("<|im_end|>")


def test_rejects_non_tokenizers():
    with pytest.raises(TokenizerError, match="expected a transformers tokenizer"):
        ChatCodec(object())


def test_broken_template_names_the_roles(tok):
    codec = ChatCodec(tok, chat_template="{{ raise_exception('no system role') }}")
    with pytest.raises(TokenizerError, match=r"roles \['system'\]"):
        codec.encode([{"role": "system", "content": "x"}])


def test_continuation_fast_path_matches_full_renders_on_random_dialogues(tok):
    codec = ChatCodec(tok)
    rng = random.Random(1)
    for _ in range(100):
        history = random_conversation(rng) + [{"role": "assistant", "content": "".join(rng.choices(ALPHABET, k=9))}]
        new = [{"role": rng.choice(["user", "tool"]), "content": "".join(rng.choices(ALPHABET, k=rng.randint(0, 20)))}]
        text = codec.continuation(history, new)
        full = codec.render_full([*history, *new])
        assert full.endswith(text)
        head = full[: len(full) - len(text)]
        assert head.endswith(history[-1]["content"]) and codec.render_full(
            history, add_generation_prompt=False
        ).startswith(head)


def test_continuation_detects_templates_that_rewrite_history(tok):
    # drops every assistant turn but the last: appending a message changes earlier text
    rewriting = (
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    codec = ChatCodec(tok, chat_template=rewriting)
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(TokenizerError, match="re-renders earlier turns"):
        codec.continuation(history, [{"role": "user", "content": "c"}])
