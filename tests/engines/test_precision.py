"""`precision: auto`: bf16 on CPUs with native bfloat16 instructions, fp32 on the others, and the choice with its
reason logged once and recorded in plan.json."""

from __future__ import annotations

import json
import logging

import pytest

from medvol.engines import GenerativeAdversarialTrainer, amp
from medvol.engines.amp import Precision, resolve_precision
from tests.engines.toys import ToyWassersteinGP, make_gan, make_loader

# (oneDNN bf16 kernels, machine, x86 bf16 instructions) -> native bfloat16
TEST_CASE_AVX512_ONLY = [(True, "x86_64", []), False]  # oneDNN emulates bfloat16 with AVX512 alone
TEST_CASE_AMX = [(True, "x86_64", ["AVX512-BF16", "AMX"]), True]
TEST_CASE_AVX2 = [(False, "x86_64", []), False]
TEST_CASE_ARM_BF16 = [(True, "aarch64", []), True]  # off x86, oneDNN's own check decides


@pytest.mark.parametrize("cpu, native", [TEST_CASE_AVX512_ONLY, TEST_CASE_AMX, TEST_CASE_AVX2, TEST_CASE_ARM_BF16])
def test_auto_is_bf16_exactly_on_cpus_with_native_bfloat16(cpu, native, monkeypatch):
    onednn, machine, instructions = cpu
    monkeypatch.setattr(amp, "_onednn_bf16", lambda: onednn)
    monkeypatch.setattr(amp.platform, "machine", lambda: machine)
    monkeypatch.setattr(amp, "_x86_bf16_instructions", lambda: instructions)
    precision, reason = resolve_precision("auto", "cpu")
    assert precision == (Precision.BF16 if native else Precision.FP32)
    assert reason.startswith("auto: ")
    assert ("native bfloat16" in reason and "emulated" not in reason) if native else ("emulated" in reason)
    for instruction in instructions:
        assert instruction in reason
    # an explicit choice is kept, with a warning in the reason where bf16 would be emulated
    assert resolve_precision("fp32", "cpu") == (Precision.FP32, "requested")
    bf16, why = resolve_precision("bf16", "cpu")
    assert bf16 == Precision.BF16 and why.startswith("requested") and (("emulated" in why) != native)


def test_the_choice_is_logged_once_and_recorded_in_plan_json(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(amp, "cpu_bf16_support", lambda: (False, "this CPU has no native bfloat16 kernels (test)"))
    generator, critic, g_opt, d_opt = make_gan(2, 8)
    trainer = GenerativeAdversarialTrainer(
        "cpu", make_loader(), generator, critic, g_opt, d_opt, ToyWassersteinGP(), max_iterations=3, run_dir=tmp_path
    )
    with caplog.at_level(logging.INFO, logger="medvol"):
        trainer.run()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision:")]
    assert lines == ["precision: fp32 (auto: this CPU has no native bfloat16 kernels (test))"]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["precision"] == "fp32"
    assert plan["precision_reason"] == "auto: this CPU has no native bfloat16 kernels (test)"
