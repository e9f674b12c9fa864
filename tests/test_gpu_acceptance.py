"""The GPU acceptance command (`xdlm check-gpu`): its --tiny run on CPU exercises every section and writes
both reports, a forced failure in one section leaves the others running, and the full run measures the shapes the
thresholds are set for."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llada_xdlm import LLaDAConfig
from llada_xdlm.gpu_acceptance import FULL, SAMPLER_MODES, SECTIONS, Section, main, max_relative_error

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_run_writes_both_reports_and_a_forced_failure_leaves_the_other_sections_running(tmp_path):
    """One run (~75 s on 2 busy cores; two training processes dominate): section 2 is forced to fail after its
    measurements, every other section must still run and pass."""
    out = tmp_path / "report"
    environ = {**os.environ, "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "llada_xdlm", "check-gpu", str(out), "--tiny", "--device", "cpu",
                           "--fail-section", "2"], cwd=REPO, env=environ, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-5000:]

    report = json.loads((out / "gpu_report.json").read_text())
    sections = {s["number"]: s for s in report["sections"]}
    assert report["status"] == "FAIL" and sorted(sections) == sorted(SECTIONS)
    assert {n: s["status"] for n, s in sections.items()} == {1: "PASS", 2: "FAIL", 3: "PASS", 4: "PASS", 5: "PASS"}
    assert "forced failure (--fail-section 2)" in sections[2]["error"]
    for number, section in sections.items():
        assert section["shape"], f"section {number} states no shape"
        assert section["checks"], f"section {number} recorded no check"
        assert all(c["status"] in ("PASS", "INFO") for c in section["checks"]), section["checks"]
        if number != 2:
            assert section["error"] is None, section["error"]

    judged = {c["name"] for s in sections.values() for c in s["checks"] if c["status"] == "PASS"}
    assert {"bf16 sdpa logits vs float32", "fused vs unfused: grad of LM-head weight",
            "ZeRO-3 vs plain loss, worst step (relative)", "ZeRO-3: validation NELBO falls",
            "ZeRO-3: DeepSpeed on", "plain: DeepSpeed off"} <= judged
    training = sections[3]["metrics"]
    assert len(training["zero3"]["losses"]) == len(training["plain"]["losses"]) == 8  # TINY.train_steps
    sampled = [c["name"] for c in sections[4]["checks"]]
    assert sampled == [f"{mode.name}: tokens/s, forwards" for mode in SAMPLER_MODES]
    assert all(sections[4]["metrics"][f"{mode.name}, batch {b}"]["forwards"] == 4  # one forward per step
               for mode in SAMPLER_MODES for b in (1, 8))

    markdown = (out / "gpu_report.md").read_text()
    for number, (title, _) in SECTIONS.items():
        assert f"## {number}. {title}: {'FAIL' if number == 2 else 'PASS'}" in markdown
    assert (out / "train_zero3.log").is_file() and (out / "train_plain.log").is_file()
    summary = done.stdout.splitlines()  # the summary alone: libraries' output goes to stderr
    assert summary[0].startswith("GPU acceptance (tiny shapes on cpu): FAIL")
    assert [line[:4] for line in summary if not line.startswith(" ")][1:] == ["PASS", "FAIL", "PASS", "PASS", "PASS"]
    assert len(summary) <= 50  # one screen


def test_selected_sections_run_alone_and_a_clean_run_exits_0(tmp_path):
    assert main([str(tmp_path / "out"), "--tiny", "--device", "cpu", "--sections", "4,1"]) == 0
    report = json.loads((tmp_path / "out" / "gpu_report.json").read_text())
    assert [s["number"] for s in report["sections"]] == [1, 4] and report["status"] == "PASS"


@pytest.mark.parametrize("argv, message", [
    (["--device", "cpu"], "need a CUDA GPU"),
    (["--tiny", "--device", "cpu", "--sections", "1,6"], "section 6 does not exist"),
    (["--tiny", "--device", "cpu", "--fail-section", "9"], "section 9 does not exist"),
    (["--tiny", "--device", "cpu", "--sections", "one"], "--sections 'one'"),
])
def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_existing_report_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "gpu_report.md").write_text("an earlier run\n")
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--tiny", "--device", "cpu", "--sections", "1"])
    assert "already holds a report" in capsys.readouterr().err
    assert (tmp_path / "gpu_report.md").read_text() == "an earlier run\n"


def test_max_relative_error_is_the_largest_difference_over_the_largest_reference_entry():
    got, want = torch.tensor([1.0, -2.0, 3.5, 0.01]), torch.tensor([1.0, -2.5, 4.0, 0.0])
    assert max_relative_error(got, want) == pytest.approx(0.5 / 4.0)  # |3.5 - 4| and |-2 + 2.5| over max |want| = 4
    assert max_relative_error(want.bfloat16(), want) == 0.0


def test_judge_passes_at_the_limit_fails_above_it_or_on_nan_and_only_reports_when_not_judged():
    section = Section(1, "t")
    section.judge("at", 0.02, 0.02)
    section.judge("above", 0.0201, 0.02)
    section.judge("nan", math.nan, 0.02)
    section.judge("not judged", 5.0, 0.02, judged=False)
    assert [c.status for c in section.checks] == ["PASS", "FAIL", "FAIL", "INFO"]
    assert section.status == "FAIL"
    assert Section(2, "t", checks=section.checks[-1:]).status == "PASS"
    assert Section(3, "t", error="Traceback ...").status == "FAIL"


def test_full_shapes_are_the_ones_the_thresholds_are_set_for():
    """LLaDA-8B's width and head, the 8192-token fused loss, a ~1 B-parameter training model and the paper's
    sampling setting. Parameters by hand: per layer 4 d^2 (attention) + 3 d m (SwiGLU MLP)."""
    llada_8b = LLaDAConfig(**FULL.model)
    assert (llada_8b.d_model, llada_8b.n_heads, llada_8b.mlp_hidden_size, llada_8b.n_layers) == (4096, 32, 12288, 32)
    assert llada_8b.embedding_size == 126464 and FULL.loss_tokens == 8192
    t = FULL.train_model
    params = t["n_layers"] * (4 * t["d_model"] ** 2 + 3 * t["d_model"] * t["mlp_hidden_size"])
    assert 0.9e9 < params + 2 * FULL.train_vocab * t["d_model"] < 1.1e9
    assert FULL.train_steps == 30
    assert (FULL.prompt_length, FULL.gen_length, FULL.block_length, FULL.sample_steps) == (512, 256, 256, 32)
    assert FULL.sample_batches == (1, 8)
