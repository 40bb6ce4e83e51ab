"""core.foundation.precision: native bf16 from /proc/cpuinfo, the `auto` rule, and bf16 autocast
through training, inference, the run report, the model card, the cost ledger and a reloaded run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.classify.config import TrainConfig, build_recipe
from core.classify.recipes import run_recipe
from core.classify.train import fit
from core.data.splits import Split
from core.engine.loop import Engine
from core.foundation.cost import Cost
from core.foundation.errors import UserError
from core.foundation.precision import (
    CPUINFO,
    CpuBf16,
    autocast,
    cpu_bf16,
    cpuinfo_bf16_flags,
    detect_cpu_bf16,
    precision_section,
    resolve_precision,
    torch_bf16_flags,
)
from core.models.backbones import load_backbone
from core.models.classifier import build_classifier, load_classifier, save_classifier
from core.runs.card import precision_section as card_precision_section
from tests.conftest import CARD, TRANSFER

# two processors of a Sapphire Rapids machine, trimmed: AVX-512 BF16 and AMX tiles
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8

processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
# an AVX2-only AMD EPYC (this project's test machine): no bf16 instructions at all
EPYC_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"
# AVX-512 without its BF16 extension (Skylake-SP): oneDNN emulates bf16 here, so it is not native
SKYLAKE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512vl avx512dq\n"
TRAIN = Split((CARD + TRANSFER) * 2, (["card"] * len(CARD) + ["transfer"] * len(TRANSFER)) * 2)
VAL = Split(CARD + TRANSFER, ["card"] * len(CARD) + ["transfer"] * len(TRANSFER))


def test_cpuinfo_flags_name_the_native_bf16_instructions():
    assert cpuinfo_bf16_flags(SAPPHIRE_RAPIDS) == ("avx512_bf16", "amx_bf16")
    assert cpuinfo_bf16_flags(EPYC_AVX2) == ()
    assert cpuinfo_bf16_flags(SKYLAKE) == ()
    assert cpuinfo_bf16_flags("model name\t: avx512_bf16 in a name is not a flag\n") == ()


def test_detector_reads_the_cpuinfo_file_it_is_given(tmp_path):
    (tmp_path / "sapphire").write_text(SAPPHIRE_RAPIDS)
    (tmp_path / "epyc").write_text(EPYC_AVX2)
    native = detect_cpu_bf16(tmp_path / "sapphire", use_torch_probe=False)
    assert native.native and native.flags == ("avx512_bf16", "amx_bf16")
    assert not detect_cpu_bf16(tmp_path / "epyc", use_torch_probe=False).native
    missing = detect_cpu_bf16(tmp_path / "no-such-file", use_torch_probe=False)  # not Linux: no /proc/cpuinfo
    assert not missing.native and missing.flags == ()
    assert set(native.to_dict()) == {"native", "flags", "capability", "mkldnn_bf16"}


@pytest.mark.skipif(not CPUINFO.is_file(), reason="no /proc/cpuinfo (not Linux)")
def test_cpuinfo_and_torchs_own_probe_agree_on_this_machine():
    assert detect_cpu_bf16(use_torch_probe=False).flags == torch_bf16_flags()
    assert cpu_bf16().native == bool(torch_bf16_flags())


def test_auto_uses_bf16_on_a_cpu_only_with_native_bf16():
    assert resolve_precision("auto", "cpu", native_bf16=True) == "bf16"
    assert resolve_precision("auto", "cpu", native_bf16=False) == "fp32"
    assert resolve_precision("bf16", "cpu", native_bf16=False) == "bf16"  # forced: emulated
    assert resolve_precision("no", "cpu", native_bf16=True) == "fp32"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_bf16().native else "fp32")
    with pytest.raises(UserError, match="mixed_precision"):
        resolve_precision("fp16", "cpu")


def test_report_section_records_the_setting_what_it_resolved_to_and_the_cpu():
    section = precision_section("bf16", "cpu")
    assert section["mixed_precision"] == "bf16" and section["resolved"] == "bf16"
    assert section["cpu_bf16"]["native"] == cpu_bf16().native


def test_autocast_runs_a_linear_layer_in_bf16_and_fp32_runs_it_as_is():
    layer = torch.nn.Linear(4, 2)
    with autocast("bf16", "cpu"):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert layer(torch.ones(1, 4)).dtype == torch.float32


def _model():
    torch.manual_seed(0)
    return build_classifier(load_backbone("tiny"), ["card", "transfer"])


def test_an_engine_switches_precision_within_one_process():
    # accelerate keeps one precision per process; the engine must still give each run its own
    assert Engine("cpu", "no").precision == "fp32"
    bf16 = Engine("cpu", "bf16")
    assert bf16.precision == "bf16" and bf16.accelerator.mixed_precision == "bf16"
    assert Engine("cpu", "no").accelerator.mixed_precision == "no"


def test_forced_bf16_trains_on_this_cpu_and_predicts_finite_probabilities(tmp_path):
    model = _model()
    cfg = TrainConfig(max_steps=2, lr=1e-3, head_lr=1e-2, batch_size=4, patience=0, mixed_precision="bf16")
    result = fit(model, TRAIN, VAL, cfg, run_dir=tmp_path, progress=False)
    assert result.steps == 2 and model.precision_on("cpu") == "bf16"
    probs = model.predict_proba(["my card was declined", "transfer to another bank"])
    assert probs.dtype == np.float32 and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    logits, embeddings = model.predict_all(["card declined"])
    assert logits.dtype == embeddings.dtype == np.float32


def test_bf16_inference_stays_close_to_fp32():
    model, texts = _model(), CARD + TRANSFER
    fp32 = model.predict_proba(texts)
    model.mixed_precision = "bf16"
    np.testing.assert_allclose(model.predict_proba(texts), fp32, atol=0.05)  # bf16 keeps ~3 significant digits


def test_a_run_saved_with_bf16_loads_and_predicts_in_bf16_here(tmp_path):
    model = _model()
    model.mixed_precision = "bf16"
    loaded = load_classifier(save_classifier(model, tmp_path / "model"))
    assert loaded.mixed_precision == "bf16" and loaded.precision_on("cpu") == "bf16"
    np.testing.assert_allclose(loaded.predict_proba(CARD), model.predict_proba(CARD), atol=1e-6)


def test_auto_is_resolved_again_on_the_machine_that_loads_the_run(tmp_path, monkeypatch):
    from core.foundation import precision

    model = _model()  # built with auto
    native = CpuBf16(native=True, flags=("amx_bf16",), capability="AVX512", mkldnn_bf16=True)
    avx2 = CpuBf16(native=False, flags=(), capability="AVX2", mkldnn_bf16=False)
    monkeypatch.setattr(precision, "cpu_bf16", lambda: native)  # trained on a bf16 machine
    assert model.precision_on("cpu") == "bf16"
    save_classifier(model, tmp_path / "model")
    monkeypatch.setattr(precision, "cpu_bf16", lambda: avx2)  # loaded on an AVX2 one
    assert load_classifier(tmp_path / "model").precision_on("cpu") == "fp32"


def test_a_run_saved_before_the_setting_predicts_in_fp32(tmp_path):
    import json

    directory = save_classifier(_model(), tmp_path / "model")
    meta = json.loads((directory / "classifier.json").read_text())
    del meta["mixed_precision"]
    (directory / "classifier.json").write_text(json.dumps(meta))
    assert load_classifier(directory).mixed_precision == "no"


def test_the_run_records_its_precision_in_report_card_and_ledger(toy_dir, tmp_path):
    overrides = {"backbone": "tiny", "data": str(toy_dir), "max_steps": "2", "eval_every": "2",
                 "mixed_precision": "bf16"}
    cfg = build_recipe({"mode": "finetune", "model": {"calibrate": False}}, overrides, name="bf16-smoke")
    report = run_recipe(cfg, tmp_path / "run", progress=False)
    assert report["precision"]["resolved"] == "bf16" and report["precision"]["mixed_precision"] == "bf16"
    assert report["cost"]["precision"] == "bf16"
    card = (tmp_path / "run" / "README.md").read_text()
    assert "## Precision" in card and "bf16 autocast (mixed_precision=bf16" in card
    assert "- **precision**: bf16 autocast" in (tmp_path / "run" / "report.md").read_text()
    loaded = load_classifier(tmp_path / "run" / "model")
    assert loaded.precision_on("cpu") == "bf16" and np.isfinite(loaded.predict_proba(["card declined"])).all()


def test_an_export_card_says_plain_transformers_computes_in_float32():
    report = {"precision": {"mixed_precision": "auto", "resolved": "fp32",
                            "cpu_bf16": {"native": False, "flags": [], "capability": "AVX2"}}}
    lines = "\n".join(card_precision_section(report, exported=True))
    assert "float32 (mixed_precision=auto, on a CPU without native bf16 (AVX2))" in lines and "float32 weights" in lines
    assert "resolved again" in "\n".join(card_precision_section(report))
    assert card_precision_section({}) == []


def test_the_ledger_leaves_out_a_precision_it_was_not_told():
    assert "precision" not in Cost().to_dict()
    assert Cost(precision="bf16").to_dict()["precision"] == "bf16"
