"""Log-probabilities (and entropies) of completion tokens under a causal LM, computed economically.

Learners need log p(token) only where the loss mask is 1. Running the LM head on every position
materialises a (tokens x vocabulary) matrix, 49k columns for SmolLM2, which dominated the
CPU cost of a training step. Here the decoder runs once, its hidden states are sliced to the
positions that predict policy tokens, and the LM head runs on those rows only, in chunks, so
no full-vocabulary log-softmax over the batch ever exists; with several chunks, each chunk's
logits are recomputed in backward rather than kept, so memory stays at one chunk of logits.
Rows that start with the same tokens (a GRPO group shares its prompt, a preference pair its
prompt, and every row the chat template's system block) run those tokens through the decoder once.
While the batch is short enough, it is scored as one packed sequence of a prefix tree (every
distinct attended prefix once: a node per token, each attending to its ancestors, at its row's
positions): every weight matrix then runs once, over no padding and no repeated prefix, and
gradients from all rows flow back into the shared nodes. Otherwise the prefix all rows share has
its keys and values computed once and expanded to every row. This module scores; it never samples or updates
weights.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.utils.checkpoint


def _parts(model: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder stack and LM head of a transformers causal LM (also through a peft wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    if decoder is None or head is None:
        raise TypeError(f"{type(base).__name__} exposes no decoder / output embeddings to score with")
    return decoder, head


@contextlib.contextmanager
def maybe_autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on `device` when enabled (matmuls in bf16; log-softmax stays in fp32)."""
    if enabled:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def completion_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    chunk_rows: int = 512,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    bf16: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs of policy tokens as a (B, L) tensor (0 elsewhere), and optionally entropies.

    Position t's hidden state predicts token t + 1, so the rows kept are those where
    `loss_mask[:, 1:]` is set; the results are placed back at the predicted token's position.
    Entropies are detached unless `entropy_grad` (an entropy bonus needs their gradient).
    """
    scores = completion_scores(
        model,
        input_ids,
        attention_mask,
        loss_mask,
        chunk_rows=chunk_rows,
        with_entropy=with_entropy,
        entropy_grad=entropy_grad,
        bf16=bf16,
    )
    return scores.logp, scores.entropy


class Scores(NamedTuple):
    """What one decoder pass gives a learner, each (B, L) and 0 off the policy tokens."""

    logp: torch.Tensor
    entropy: torch.Tensor | None
    values: torch.Tensor | None
    hits: torch.Tensor | None = None
    """Whether each policy token is the head's top-scoring one (token accuracy), bool; None unless asked."""


def completion_scores(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    value_head: torch.nn.Module | None = None,
    value_trunk_grad: bool = True,
    chunk_rows: int = 512,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    with_hits: bool = False,
    bf16: bool = False,
) -> Scores:
    """`completion_logprobs`, plus the values a `value_head` reads off the same hidden states (one decoder pass).

    The value of policy token t is read at the hidden state before it (the one that predicts it), so
    it is V(state before the action). `value_trunk_grad=False` keeps the value loss out of the trunk
    (a critic warm-up that must not move the policy). `with_hits` also says, per policy token, whether
    it is the argmax of its logits (what supervised fine-tuning reports as token accuracy).
    """
    decoder, head = _parts(model)
    with maybe_autocast(input_ids.device, bf16):
        hidden = _hidden_states(decoder, input_ids, attention_mask)  # (B, L, H)
    targets = loss_mask[:, 1:].bool()  # (B, L-1) positions whose next token is a policy token
    rows = hidden[:, :-1][targets]  # (N, H)
    ids = input_ids[:, 1:][targets]  # (N,)
    logps, entropies, hits = [], [], []
    # With more than one chunk, each chunk's logits are recomputed in backward instead of kept:
    # what backward holds is then (N, H) plus one chunk's (n, V), not all N x V logits.
    recompute = torch.is_grad_enabled() and rows.requires_grad and rows.shape[0] > chunk_rows
    for start in range(0, rows.shape[0], chunk_rows):
        chunk = (head, rows[start : start + chunk_rows], ids[start : start + chunk_rows], with_entropy, with_hits, bf16)
        if recompute:
            logp_chunk, entropy, hit = torch.utils.checkpoint.checkpoint(_score_rows, *chunk, use_reentrant=False)
        else:
            logp_chunk, entropy, hit = _score_rows(*chunk)
        logps.append(logp_chunk)
        hits.append(hit)
        if with_entropy:
            entropies.append(entropy if entropy_grad else entropy.detach())
    flat = torch.cat(logps) if logps else hidden.new_zeros(0, dtype=torch.float32)  # (N,)
    logp = _place(flat, targets, loss_mask.shape)  # (B, L)
    entropy = None
    if with_entropy:
        entropy = _place(torch.cat(entropies) if entropies else flat.new_zeros(0), targets, loss_mask.shape)
    values = None
    if value_head is not None:
        value_rows = rows if value_trunk_grad else rows.detach()  # (N, H)
        values = _place(value_head(value_rows.float()).squeeze(-1), targets, loss_mask.shape)  # (B, L)
    hit_mask = None
    if with_hits:
        hit_mask = _place(torch.cat(hits) if hits else flat.new_zeros(0), targets, loss_mask.shape).bool()  # (B, L)
    return Scores(logp, entropy, values, hit_mask)


def token_values(
    decoder: torch.nn.Module,
    value_head: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    bf16: bool = False,
) -> torch.Tensor:
    """Values of a separate critic (a decoder stack and a value head) at policy tokens, (B, L), 0 elsewhere."""
    with maybe_autocast(input_ids.device, bf16):
        hidden = _hidden_states(decoder, input_ids, attention_mask)  # (B, L, H)
    targets = loss_mask[:, 1:].bool()  # (B, L-1)
    rows = hidden[:, :-1][targets]  # (N, H)
    return _place(value_head(rows.float()).squeeze(-1), targets, loss_mask.shape)  # (B, L)


def _place(flat: torch.Tensor, targets: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Per-row values (N,) of the positions that predict policy tokens, put back at the predicted tokens (B, L)."""
    out = torch.zeros(shape, dtype=torch.float32, device=flat.device)  # (B, L)
    out[:, 1:][targets] = flat.float()
    return out


def _score_rows(
    head: torch.nn.Module, rows: torch.Tensor, ids: torch.Tensor, with_entropy: bool, with_hits: bool, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs of `ids` (n,) under the LM head on hidden `rows` (n, H), entropies and argmax hits (each if asked)."""
    with maybe_autocast(rows.device, bf16):
        logits = head(rows)  # (n, V)
    logits = logits.float()
    norm = logits.logsumexp(-1)  # (n,)
    logp = logits.gather(-1, ids[:, None])[:, 0] - norm  # (n,)
    hit = (logits.detach().argmax(-1) == ids).float() if with_hits else logp.new_zeros(0)  # (n,)
    if not with_entropy:
        return logp, logp.new_zeros(0), hit
    probs = (logits - norm[:, None]).exp()  # (n, V)
    return logp, norm - (probs * logits).sum(-1), hit  # (n,), (n,), (n,)


MIN_SHARED_PREFIX = 8
"""Shorter common prefixes are not worth a second decoder call."""


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many leading positions every row shares (same ids, all attended), leaving each row one of its own."""
    if input_ids.shape[0] < 2 or input_ids.shape[1] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0)  # (L,)
    return min(int(same.long().cumprod(0).sum()), input_ids.shape[1] - 1)


def cache_argument(module: Any) -> str:
    """The keyword a transformers module takes its KV cache by ("cache" from 5.23 on, else "past_key_values")."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def output_cache(output: Any) -> Any:
    """The KV cache a transformers forward returned (`cache` from 5.23 on, else `past_key_values`), or None."""
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


def shared_prefix_cache(module: Any, prefix_ids: torch.Tensor, rows: int, **kwargs: Any) -> tuple[Any, Any] | None:
    """Run a (1, P) prefix through `module` once; return (its output, its KV cache expanded to `rows` rows).

    None when the model's cache does not keep per-layer key/value tensors this can expand.
    """
    out = module(input_ids=prefix_ids, use_cache=True, **kwargs)
    cache = output_cache(out)
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        return None
    for layer in layers:  # (1, heads, P, d) -> (rows, heads, P, d) views; backward sums the rows' gradients
        layer.keys = layer.keys.expand(rows, -1, -1, -1)
        layer.values = layer.values.expand(rows, -1, -1, -1)
    return out, cache


def _hidden_states(decoder: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden states (B, L, H), running the tokens rows share (a prefix) only once."""
    if input_ids.shape[0] < 2:
        return decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    tree = prefix_tree(input_ids, attention_mask)
    saved = int(attention_mask.sum()) - len(tree.ids)
    if saved >= MIN_SHARED_PREFIX and _packing_pays(decoder, len(tree.ids)):
        return _packed_hidden_states(decoder, tree)
    prefix = shared_prefix_length(input_ids, attention_mask)
    if prefix < MIN_SHARED_PREFIX:
        return decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    shared = None
    if not getattr(decoder, "gradient_checkpointing", False):
        shared = shared_prefix_cache(decoder, input_ids[:1, :prefix], input_ids.shape[0])
    if shared is None:
        return decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    head, cache = shared
    rest = {"input_ids": input_ids[:, prefix:], "attention_mask": attention_mask, cache_argument(decoder): cache}
    tail = decoder(**rest, use_cache=True).last_hidden_state  # (B, L - P, H)
    return torch.cat([head.last_hidden_state.expand(input_ids.shape[0], -1, -1), tail], dim=1)  # (B, L, H)


class PrefixTree(NamedTuple):
    """A batch's attended tokens with every prefix rows share kept once: a token tree in creation order.

    Node i is a token (`ids[i]`) at a column (`positions[i]`) after its parent node (`parents[i]`, -1 at
    a row's first token); two rows share a node while their attended tokens so far are the same.
    `where[b, c]` is the node of row b's column c (0 at unattended columns).
    """

    ids: torch.Tensor
    positions: torch.Tensor
    parents: list[int]
    where: torch.Tensor


def prefix_tree(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PrefixTree:
    """The rows' attended tokens as a `PrefixTree`: a GRPO group's prompt, a preference pair's prompt, once each."""
    rows, width = input_ids.shape
    ids, attended = input_ids.tolist(), attention_mask.bool().tolist()
    index: dict[tuple[int, int, int], int] = {}
    tokens: list[int] = []
    positions: list[int] = []
    parents: list[int] = []
    where = [[0] * width for _ in range(rows)]
    for row in range(rows):
        node = -1
        for column in range(width):
            if not attended[row][column]:
                continue
            key = (node, column, ids[row][column])
            found = index.get(key)
            if found is None:
                found = index[key] = len(tokens)
                tokens.append(ids[row][column])
                positions.append(column)
                parents.append(node)
            node = where[row][column] = found
    device = input_ids.device
    return PrefixTree(torch.tensor(tokens, device=device), torch.tensor(positions, device=device), parents,
                      torch.tensor(where, device=device))  # fmt: skip


def _packing_pays(decoder: Any, packed: int) -> bool:
    """Whether to score the batch as one packed sequence of `packed` tokens (a `PrefixTree`'s nodes).

    Packing takes an explicit 4-D mask (SDPA or eager attention only). It runs each weight matrix
    once over exactly the tokens that exist, but its attention covers all N x N pairs of the packed
    length N, masked or not; it is used while that stays under a quarter of the matmul work.
    """
    config = getattr(decoder, "config", None)
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and window < packed:  # the block mask would not apply the window
        return False
    matmul_flops = 2 * sum(p.numel() for p in decoder.parameters()) * packed
    attention_flops = 4 * getattr(config, "hidden_size", 0) * getattr(config, "num_hidden_layers", 0) * packed**2
    return 0 < attention_flops <= matmul_flops / 4


def _packed_hidden_states(decoder: Any, tree: PrefixTree) -> torch.Tensor:
    """Hidden states (B, L, H) from one pass over a `PrefixTree`'s nodes with a tree mask.

    Each node attends to itself and its ancestors (the row's earlier attended tokens), at the column
    it has in its row, so every row sees exactly what an unpacked pass shows it. Unattended (padding)
    columns read node 0's hidden state (never scored).
    """
    count = len(tree.parents)
    visible = np.zeros((count, count), dtype=bool)  # (N, N) query i may attend key j: j is i or an ancestor
    for node, parent in enumerate(tree.parents):  # a parent is always created before its children
        if parent >= 0:
            visible[node] = visible[parent]
        visible[node, node] = True
    mask = torch.from_numpy(visible).to(tree.ids.device)
    if decoder.config._attn_implementation == "eager":  # eager adds the mask to the scores
        mask = torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, torch.finfo(torch.float32).min)
    packed = decoder(
        input_ids=tree.ids[None], attention_mask=mask[None, None], position_ids=tree.positions[None], use_cache=False
    ).last_hidden_state[0]  # (N, H)
    return packed[tree.where]  # (B, L, H); backward sums the rows' gradients into each shared node
