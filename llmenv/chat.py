"""Chat messages to token ids and back, exactly as the tokenizer's chat template defines them.

`ChatCodec` is the one place where text becomes tokens in llmenv. Prompts are rendered through
the tokenizer's chat template (or, for tokenizers without one, the documented ChatML default
below) and tokenized the way `tokenizer.apply_chat_template(..., tokenize=True)` does, so the
ids equal what the model would be given anywhere else. Rendering Jinja costs more than a whole
env step, so each message layout (the sequence of roles) is rendered once with sentinel
contents, split into fixed text fragments, and later prompts are spliced from those fragments;
a layout whose template rewrites content (trims it, say) is detected and always rendered fully.
Environment turns added mid-episode are encoded as the exact text the template inserts after
the policy's turn (`continuation`). Policy tokens are only ever decoded, never re-encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llmenv.errors import TokenizerError
from llmenv.types import Message

# Used when a tokenizer has no chat template: ChatML, the most widely recognised layout. Its
# markers are tokenized as plain text when the vocabulary lacks them as special tokens.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_REWRITES_HISTORY = (
    "the chat template re-renders earlier turns when a message is added (e.g. it strips reasoning from "
    "past assistant turns), so turns cannot be appended token-exactly"
)
_PROBES = ("\x1f@\x1f", " \x1e@\n\x1e }{% </think> ")  # "@" becomes the message index


class ChatCodec:
    """Renders chat messages to token ids and decodes policy tokens, for one tokenizer."""

    def __init__(
        self, tokenizer: Any, *, chat_template: str | None = None, tools: Sequence[dict[str, Any]] | None = None
    ) -> None:
        if not callable(getattr(tokenizer, "apply_chat_template", None)):
            raise TokenizerError(
                f"expected a transformers tokenizer (PreTrainedTokenizerBase), got {type(tokenizer).__name__}"
            )
        self.tokenizer = tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None) or DEFAULT_CHAT_TEMPLATE
        self.uses_default_template = self.chat_template == DEFAULT_CHAT_TEMPLATE
        self.tools = list(tools) if tools else None
        self.vocab_size = len(tokenizer)
        backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        self._backend = backend
        self._layouts: dict[tuple[tuple[str, ...], bool], list[str] | None] = {}
        self._heads: dict[tuple[tuple[str, ...], bool], tuple[str, list[int]] | None] = {}
        self._special_texts = sorted(
            {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}, key=len
        )
        self.stop_token_ids = self._find_stop_tokens()

    # -- text <-> ids -------------------------------------------------------------------------

    def encode_text(self, text: str) -> list[int]:
        """Token ids of `text` without added special tokens (as chat templates are tokenized)."""
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=False).ids
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int] | np.ndarray, *, skip_special_tokens: bool = True) -> str:
        """Text of token ids; special tokens (EOS, end of turn) are dropped by default."""
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    # -- messages -> text -> ids --------------------------------------------------------------

    def render_full(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """Render through Jinja every time (the reference the fast path is checked against)."""
        try:
            return self.tokenizer.apply_chat_template(
                list(messages),
                chat_template=self.chat_template,
                add_generation_prompt=add_generation_prompt,
                tools=self.tools,
                tokenize=False,
            )
        except Exception as exc:  # jinja raises many types; re-raise with what was being rendered
            roles = [m.get("role") for m in messages]
            raise TokenizerError(f"chat template failed to render messages with roles {roles}: {exc}") from exc

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The chat-template text of `messages`, spliced from cached fragments when safe."""
        fragments = self._fragments(tuple(m["role"] for m in messages), add_generation_prompt)
        if fragments is None:
            return self.render_full(messages, add_generation_prompt=add_generation_prompt)
        parts = [fragments[0]]
        for message, fragment in zip(messages, fragments[1:]):
            parts.append(message["content"])
            parts.append(fragment)
        return "".join(parts)

    def encode(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> np.ndarray:
        """Token ids of `messages` rendered by the chat template, as a 1-D int64 array."""
        return self.render_and_encode(messages, add_generation_prompt=add_generation_prompt)[1]

    def render_and_encode(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> tuple[str, np.ndarray]:
        """The rendered text and its token ids; a layout's constant head (system prompt, headers) is
        tokenized once and reused, which halves the cost of a typical prompt."""
        text = self.render(messages, add_generation_prompt=add_generation_prompt)
        key = (tuple(m["role"] for m in messages), add_generation_prompt)
        head = self._heads.get(key, ())
        if head == ():
            head = self._heads[key] = self._compile_head(key)
        if head is None:
            return text, np.asarray(self.encode_text(text), dtype=np.int64)
        head_text, head_ids = head
        return text, np.asarray(head_ids + self.encode_text(text[len(head_text) :]), dtype=np.int64)

    def continuation(
        self, history: Sequence[Message], new_messages: Sequence[Message], *, add_generation_prompt: bool = True
    ) -> str:
        """The text the template adds after `history` (ending in an assistant turn) for `new_messages`.

        The returned text starts right after the assistant's content, so it includes the
        template's end-of-turn marker; callers drop the part the policy already generated.
        Raises TokenizerError when the template re-renders earlier turns once a message is added.
        """
        if not history or history[-1]["role"] != "assistant":
            raise TokenizerError("continuation() needs a history that ends with an assistant message")
        old = self._fragments(tuple(m["role"] for m in history), False)
        new = self._fragments(tuple(m["role"] for m in [*history, *new_messages]), add_generation_prompt)
        n = len(history)
        if old is not None and new is not None:
            if new[:n] != old[:n]:
                raise TokenizerError(_REWRITES_HISTORY)
            parts = [new[n]]
            for message, fragment in zip(new_messages, new[n + 1 :]):
                parts.append(message["content"])
                parts.append(fragment)
            return "".join(parts)
        marker = "\x1fEND-OF-ASSISTANT\x1f"
        probe = [*history[:-1], {"role": "assistant", "content": history[-1]["content"] + marker}]
        before = self.render_full(probe, add_generation_prompt=False)
        after = self.render_full([*probe, *new_messages], add_generation_prompt=add_generation_prompt)
        cut = before.rfind(marker)
        if cut < 0 or not after.startswith(before[: cut + len(marker)]):
            raise TokenizerError(_REWRITES_HISTORY)
        return after[cut + len(marker) :]

    # -- internals ----------------------------------------------------------------------------

    def _fragments(self, roles: tuple[str, ...], add_generation_prompt: bool) -> list[str] | None:
        """The cached text fragments of a layout, or None when it must be rendered fully."""
        key = (roles, add_generation_prompt)
        fragments = self._layouts.get(key, ())
        if fragments == ():
            fragments = self._layouts[key] = self._compile(roles, add_generation_prompt)
        return fragments

    def _compile_head(self, key: tuple[tuple[str, ...], bool]) -> tuple[str, list[int]] | None:
        """The layout's text up to the last special token before the first content, with its ids.

        Tokenizers cut the input at special tokens before anything else, so ids(head + rest) equal
        ids(head) + ids(rest) when head ends with one; this is checked on the probe renders too, and
        the fast path is off for layouts (or tokenizers) where it does not hold.
        """
        fragments = self._fragments(*key)
        if fragments is None or not self._special_texts:
            return None
        first = fragments[0]
        cut = max((first.rfind(t) + len(t) for t in self._special_texts if t in first), default=-1)
        if cut <= 0:
            return None
        head_text = first[:cut]
        head_ids = self.encode_text(head_text)
        for probe in _PROBES:
            text = self.render_full(
                [Message(role=r, content=probe.replace("@", str(i))) for i, r in enumerate(key[0])],
                add_generation_prompt=key[1],
            )
            if self.encode_text(text) != head_ids + self.encode_text(text[cut:]):
                return None
        return head_text, head_ids

    def _compile(self, roles: tuple[str, ...], add_generation_prompt: bool) -> list[str] | None:
        """Split the template's output for `roles` into the text around each message's content."""
        splits = []
        for probe in _PROBES:
            sentinels = [probe.replace("@", str(i)) for i in range(len(roles))]
            messages = [Message(role=r, content=s) for r, s in zip(roles, sentinels)]
            text = self.render_full(messages, add_generation_prompt=add_generation_prompt)
            fragments, pos = [], 0
            for sentinel in sentinels:
                found = text.find(sentinel, pos)
                if found < 0 or text.count(sentinel) != 1:
                    return None  # the template transforms or repeats content: render fully
                fragments.append(text[pos:found])
                pos = found + len(sentinel)
            fragments.append(text[pos:])
            splits.append(fragments)
        return splits[0] if all(s == splits[0] for s in splits) else None

    def _find_stop_tokens(self) -> frozenset[int]:
        """EOS plus the special token the template writes right after an assistant turn."""
        stops = set()
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(eos, int):
            stops.add(eos)
        marker = "\x1fEND\x1f"
        try:
            text = self.render_full(
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}],
                add_generation_prompt=False,
            )
        except TokenizerError:
            return frozenset(stops)
        tail = text[text.find(marker) + len(marker) :]
        special = set(getattr(self.tokenizer, "all_special_ids", []))
        special |= {i for i, t in getattr(self.tokenizer, "added_tokens_decoder", {}).items() if t.special}
        tail_ids = self.encode_text(tail)
        if tail_ids and tail_ids[0] in special:
            stops.add(tail_ids[0])
        return frozenset(stops)
