"""Tests for agents/trainer.py helpers that every learner calls."""

from __future__ import annotations

import pytest
import torch

from llmenv.agents import trainer


def _params_with_grads(scale: float) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in [(4, 3), (7,), (2, 2, 2)]]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * scale
    return params


@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_clip_gradients_matches_clip_grad_norm_below_and_above_the_bound(scale):
    ours, reference = _params_with_grads(scale), _params_with_grads(scale)
    norm = trainer.clip_gradients(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(reference, 1.0)
    assert norm == pytest.approx(float(expected), rel=1e-6)
    assert (norm > 1.0) == (scale > 1)  # the two cases really are on either side of the bound
    for a, b in zip(ours, reference, strict=True):
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    clipped = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours if p.grad is not None]))
    assert float(clipped) == pytest.approx(min(norm, 1.0), rel=1e-5)


def test_clip_gradients_skips_parameters_without_a_gradient():
    params = _params_with_grads(10.0)
    params[1].grad = None
    before = float(torch.linalg.vector_norm(torch.cat([params[0].grad.flatten(), params[2].grad.flatten()])))
    assert trainer.clip_gradients(params, 1.0) == pytest.approx(before, rel=1e-6)
    assert params[1].grad is None


def test_clip_gradients_matches_clip_grad_norm_on_an_infinite_gradient():
    ours, reference = _params_with_grads(1.0), _params_with_grads(1.0)
    for params in (ours, reference):
        assert params[0].grad is not None
        params[0].grad[0, 0] = float("inf")
    norm = trainer.clip_gradients(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(reference, 1.0)
    assert norm == float(expected) == float("inf")
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)


def test_max_norm_zero_leaves_the_gradients_as_they_are():
    params = _params_with_grads(10.0)
    before = [p.grad.clone() for p in params if p.grad is not None]
    assert trainer.clip_gradients(params, 0.0) == 0.0
    for p, grad in zip(params, before, strict=True):
        assert p.grad is not None and torch.equal(p.grad, grad)  # norm ~30, not clipped to 0


def test_native_bf16_reads_the_cpu_flags(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    real_path = trainer.Path

    def fake_path(name):
        return cpuinfo if str(name) == "/proc/cpuinfo" else real_path(name)

    monkeypatch.setattr(trainer, "Path", fake_path)
    cpuinfo.write_text("processor : 0\nflags : fpu sse avx2 fma\n")
    assert trainer.native_bf16("cpu") is False  # AVX2 only: bf16 would be emulated
    cpuinfo.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n")
    assert trainer.native_bf16("cpu") is True


def test_bf16_on_a_device_without_it_warns_once_at_the_start(tiny_dir, tmp_path, monkeypatch, capsys):
    from llmenv.agents.dpo import DPOConfig, train
    from llmenv.testing import write_jsonl

    monkeypatch.setattr(trainer, "native_bf16", lambda device: False)
    rows = [{"prompt": f"what is {i} + 1?", "chosen": f"{i + 1}", "rejected": "no"} for i in range(4)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    train(DPOConfig(model=tiny_dir, data=data, steps=1, batch_size=2, bf16=True, out=str(tmp_path / "run")))
    assert capsys.readouterr().out.count("no native bf16") == 1
