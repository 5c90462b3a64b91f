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

import functools
import hashlib
import json
import weakref
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

_PREFIX_CACHE_SIZE = 256

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
        self._cuts: dict[tuple[tuple[str, ...], bool], int | None] = {}
        self._prefix_ids: dict[str, list[int]] = {}  # insertion-ordered: the oldest entry is evicted first
        self._special_texts = sorted(
            {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}, key=len
        )
        self.stop_token_ids = self._find_stop_tokens()

    @functools.cached_property
    def codec_key(self) -> str:
        """A digest of what turns messages into ids here (vocabulary, special tokens, template, tools).

        Two codecs with the same key render and encode identically, so a model behind one can read
        token ids made by the other as they are (a reward model scoring a policy's exact tokens).
        """
        vocab: dict[str, int] = self.tokenizer.get_vocab()
        parts = {
            "vocab": sorted(vocab.items(), key=lambda item: item[1]),
            "special": {name: str(value) for name, value in self.tokenizer.special_tokens_map.items()},
            "template": self.chat_template,
            "tools": self.tools,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

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
        """The rendered text and its token ids.

        Everything before the last message's header (system prompt, tool list, earlier turns) is
        usually the same from episode to episode: its ids are cached by text, cut right after a
        special token, and only the rest is tokenized, which more than halves a typical prompt.
        """
        text = self.render(messages, add_generation_prompt=add_generation_prompt)
        key = (tuple(m["role"] for m in messages), add_generation_prompt)
        cut_in_fragment = self._cuts.get(key, ())
        if isinstance(cut_in_fragment, tuple):  # not computed yet
            cut_in_fragment = self._cuts[key] = self._compile_cut(key)
        if cut_in_fragment is None:
            return text, np.asarray(self.encode_text(text), dtype=np.int64)
        fragments = self._layouts[key]
        assert fragments is not None
        cut = len(text) - len(fragments[-1]) - len(messages[-1]["content"]) - len(fragments[-2]) + cut_in_fragment
        prefix = text[:cut]
        prefix_ids = self._prefix_ids.get(prefix)
        if prefix_ids is None:
            prefix_ids = self._prefix_ids[prefix] = self.encode_text(prefix)
            if len(self._prefix_ids) > _PREFIX_CACHE_SIZE:
                self._prefix_ids.pop(next(iter(self._prefix_ids)))
        return text, np.asarray(prefix_ids + self.encode_text(text[cut:]), dtype=np.int64)

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
        probe = [*history[:-1], Message(role="assistant", content=history[-1]["content"] + marker)]
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
        if isinstance(fragments, tuple):  # not compiled yet
            fragments = self._layouts[key] = self._compile(roles, add_generation_prompt)
        return fragments

    def _compile_cut(self, key: tuple[tuple[str, ...], bool]) -> int | None:
        """Where, inside the fragment before the last message's content, the cacheable prefix ends.

        Tokenizers cut the input at special tokens before anything else, so ids(prefix + rest) equal
        ids(prefix) + ids(rest) when the prefix ends with one; this is checked on the probe renders
        too, and the cache is off for layouts (or tokenizers) where it does not hold.
        """
        fragments = self._fragments(*key)
        if fragments is None or not self._special_texts:
            return None
        before_last = fragments[-2]
        cut = max((before_last.rfind(t) + len(t) for t in self._special_texts if t in before_last), default=-1)
        if cut <= 0:
            return None
        for probe in _PROBES:
            contents = [probe.replace("@", str(i)) for i in range(len(key[0]))]
            text = self.render_full(
                [Message(role=r, content=c) for r, c in zip(key[0], contents)], add_generation_prompt=key[1]
            )
            split = len(text) - len(fragments[-1]) - len(contents[-1]) - len(before_last) + cut
            if self.encode_text(text) != self.encode_text(text[:split]) + self.encode_text(text[split:]):
                return None
        return cut

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


_SHARED: weakref.WeakKeyDictionary[Any, dict[tuple[str | None, str | None], ChatCodec]] = weakref.WeakKeyDictionary()


def shared_codec(
    tokenizer: Any, *, chat_template: str | None = None, tools: Sequence[dict[str, Any]] | None = None
) -> ChatCodec:
    """The one `ChatCodec` for this tokenizer, template and tools, built on first use.

    Environments over the same tokenizer (the N copies of a vector env, say) share it and its
    rendering caches instead of compiling the template N times; a codec holds no episode state.
    """
    key = (chat_template, json.dumps(list(tools), sort_keys=True, default=str) if tools else None)
    try:
        per_tokenizer = _SHARED.setdefault(tokenizer, {})
    except TypeError:  # an object that cannot be weakly referenced: no sharing
        return ChatCodec(tokenizer, chat_template=chat_template, tools=tools)
    codec = per_tokenizer.get(key)
    if codec is None:
        codec = per_tokenizer[key] = ChatCodec(tokenizer, chat_template=chat_template, tools=tools)
    return codec
