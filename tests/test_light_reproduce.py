"""`xdlm reproduce-small --smoke`: the whole small-scale pipeline (tokenizer, AR evaluator, MDLM / XDLM / UDLM
through the real trainer, PPL bound, Gen-PPL, digits FID, markdown report and plot) at toy size."""

import json
import math
from pathlib import Path

import pytest

from llada_xdlm import reproduce

CORPUS = Path(__file__).resolve().parents[1] / "data" / "stdlib_docs"


@pytest.mark.slow
def test_reproduce_small_smoke_reports_its_measured_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    results = reproduce.main(["--smoke", "--digits", "--work_dir", str(tmp_path / "work"), "--corpus", str(CORPUS)])

    models = results["text"]["models"]
    assert [m["name"] for m in models.values()] == ["MDLM", "XDLM", "UDLM"]
    assert [m["k1"] for m in models.values()] == [0.0, 0.1, 1.0]
    for m in models.values():
        assert math.isfinite(m["bound"]["ppl_bound"])
        assert [g["steps"] for g in m["gen"]] == [2, 4]
        assert all(g["gen_ppl"] > 1 and g["entropy"] > 0 for g in m["gen"])
    assert all(math.isfinite(v) for row in results["digits"].values() for v in row["fid"].values())
    # --smoke writes the doc into the work dir; its tables must show the measured numbers, as rounded there
    doc = (tmp_path / "work" / "small_scale.md").read_text()
    text_part, digits_part = doc.split("## Images")
    assert "--smoke" in text_part.splitlines()[2]  # the command that measured them
    for m in models.values():
        cells = table_row(text_part, m["name"])  # k1, PPL bound (NELBO +- se), Gen-PPL / entropy per steps
        assert float(cells[1]) == m["k1"]
        assert float(cells[2].split()[0]) == pytest.approx(m["bound"]["ppl_bound"], abs=0.005)
        for g, gen_ppl, entropy in zip(m["gen"], cells[3::2], cells[4::2]):
            assert float(gen_ppl) == pytest.approx(g["gen_ppl"], abs=0.05)
            assert float(entropy) == pytest.approx(g["entropy"], abs=0.005)
    for r in results["digits"].values():
        cells = table_row(digits_part, r["name"])  # k1, validation NELBO, FID per steps
        assert float(cells[2]) == pytest.approx(r["val_nelbo"], abs=5e-4)
        assert [float(c) for c in cells[3:]] == pytest.approx(list(r["fid"].values()), abs=0.005)
    assert (tmp_path / "work" / "small_scale.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "work" / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))


def table_row(markdown: str, name: str) -> list[str]:
    """The cells of the first markdown table row whose first cell is `name`."""
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]
