"""scripts/reproduce_small.py --smoke: the whole small-scale pipeline (tokenizer, AR evaluator, MDLM / XDLM / UDLM
through the real trainer, PPL bound, Gen-PPL, digits FID, markdown report and plot) at toy size."""

import importlib.util
import math
import os

import pytest

SCRIPTS = os.path.join(os.path.dirname(__file__), "..", "scripts")


@pytest.mark.slow
def test_reproduce_small_smoke_writes_the_report_and_plot(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(SCRIPTS)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = importlib.util.spec_from_file_location("reproduce_small", os.path.join(SCRIPTS, "reproduce_small.py"))
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)

    results = reproduce.main(["--smoke", "--digits", "--work_dir", str(tmp_path / "work")])

    models = results["text"]["models"]
    assert [m["name"] for m in models.values()] == ["MDLM", "XDLM", "UDLM"]
    assert [m["k1"] for m in models.values()] == [0.0, 0.1, 1.0]
    for m in models.values():
        assert math.isfinite(m["bound"]["ppl_bound"])
        assert [g["steps"] for g in m["gen"]] == [2, 4]
        assert all(g["gen_ppl"] > 1 and g["entropy"] > 0 for g in m["gen"])
    assert all(math.isfinite(v) for row in results["digits"].values() for v in row["fid"].values())
    doc = (tmp_path / "work" / "small_scale.md").read_text()  # --smoke writes the doc into the work dir
    assert "| XDLM | 0.1 |" in doc and "FID 54.1" in doc and "--smoke" in doc
    assert (tmp_path / "work" / "small_scale.png").stat().st_size > 10_000
    assert (tmp_path / "work" / "results.json").exists()
