"""CPU-scale reproduction of the XDLM paper's small-scale trade-off: MDLM (k1 = 0), XDLM (k1 = 0.1) and UDLM
(k1 = 1) trained from scratch on the same shipped corpus, compared on the validation PPL bound (understanding) and on
few-step generative perplexity (generation), optionally also on 8x8 digit images (FID).

    xdlm reproduce-small                    # full, writes docs/small_scale.md
    xdlm reproduce-small --digits --jobs 2  # + digits FID at 8 and 32 steps: 27 minutes on 2 cores
    xdlm reproduce-small --reduced          # smaller models, for a machine shared with other jobs
    xdlm reproduce-small --smoke            # a couple of minutes: the same pipeline at toy size

Run it from the repository root (the corpus is data/stdlib_docs; --corpus names another copy).

Every model goes through the real entry point (llada_xdlm.training.train.main) with the same tokenizer (built once
from the corpus), data, optimiser, seed and number of steps; only the objective differs. The Gen-PPL evaluator is a
causal model of the same size trained by this script on the same corpus (objective `ar`, fewer steps: it overfits).
Results, settings and the paper's claims go to <doc_dir>/small_scale.md and <doc_dir>/small_scale.png (doc_dir:
docs/, or the work dir with --smoke).
"""

import argparse
import json
import math
import os
import platform
import sys
import time

import torch
import yaml

from .checkpoint import load_checkpoint
from .evaluation import gen_ppl, perplexity

CORPUS = os.path.join("data", "stdlib_docs")
PAPER = {
    "zero-shot PPL": "XDLM beats UDLM by 5.4 points on zero-shot text perplexity benchmarks (small models, LM1B/OWT).",
    "sweet spot": "k1 = 0.1 is the sweet spot between zero-shot PPL (MDLM-like) and generative PPL (UDLM-like).",
    "images": "few-step image generation: FID 54.1 (XDLM) vs 80.8 (MDLM).",
}
MODES = {
    # model size, training and evaluation budget; `full --digits --jobs 2` took 27 minutes on 2 cores.
    "full": dict(d_model=128, n_layers=4, n_heads=4, mlp_hidden_size=384, vocab=2048, block=128, steps=600,
                 evaluator_steps=240, batch=32, lr=3e-3, warmup=50, mc_num=16, eval_blocks=48, gen_samples=64, gen_steps=[8, 32],
                 digits_steps=1000, fid_samples=500),
    # for a machine shared with other jobs: a quarter of the compute per step, half the steps.
    "reduced": dict(d_model=96, n_layers=3, n_heads=4, mlp_hidden_size=256, vocab=1024, block=64, steps=300,
                    evaluator_steps=300, batch=16, lr=3e-3, warmup=30, mc_num=16, eval_blocks=64, gen_samples=64, gen_steps=[8, 32],
                    digits_steps=400, fid_samples=500),
    "smoke": dict(d_model=32, n_layers=1, n_heads=2, mlp_hidden_size=64, vocab=300, block=32, steps=4,
                  evaluator_steps=4, batch=8, lr=3e-3, warmup=0, mc_num=2, eval_blocks=4, gen_samples=4, gen_steps=[2, 4],
                  digits_steps=4, fid_samples=20),
}


def recipe(cfg: dict, name: str, objective: str, k1: float | None, work: str, data: dict, seed: int) -> str:
    """Write one run's YAML recipe (flat keys of llada_xdlm.training.args) and return its path."""
    keys = dict(
        model_config=dict(d_model=cfg["d_model"], n_layers=cfg["n_layers"], n_heads=cfg["n_heads"],
                          n_kv_heads=cfg["n_heads"], mlp_hidden_size=cfg["mlp_hidden_size"],
                          max_sequence_length=data["block_size"], rope_theta=10000.0),
        tokenizer_name_or_path=data["tokenizer"],
        data_files=[data["train"]], eval_data_files=[data["validation"]], block_size=data["block_size"],
        random_length_prob=0.0,
        objective=objective, schedule="loglinear", loss_implementation="fused",
        output_dir=os.path.join(work, name), use_cpu=True, seed=seed, max_steps=data["steps"],
        per_device_train_batch_size=cfg["batch"], per_device_eval_batch_size=64, learning_rate=cfg["lr"],
        lr_scheduler_type="cosine", warmup_steps=cfg["warmup"], weight_decay=0.01, max_grad_norm=1.0,
        logging_steps=max(data["steps"] // 5, 1), eval_strategy="no", save_strategy="no", report_to="none",
        dataloader_num_workers=0, disable_tqdm=True,
    )
    if k1 is not None:
        keys["k1"] = k1
    path = os.path.join(work, "recipes", f"{name}.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(keys, f, sort_keys=False)
    return path


def train_all(runs: dict[str, str], jobs: int, log) -> dict[str, dict]:
    """Train every run {name: recipe path} through the real entry point; {name: final metrics}. A run whose output
    directory already holds metrics for the identical recipe is reused (a crashed reproduction resumes). jobs > 1
    trains that many runs at once in subprocesses (`python -m llada_xdlm.train`), one thread each."""
    metrics, todo = {}, []
    for name, path in runs.items():
        with open(path) as f:
            text = f.read()
        done = os.path.join(yaml.safe_load(text)["output_dir"], "reproduce_metrics.json")
        if os.path.exists(done):
            with open(done) as f:
                saved = json.load(f)
            if saved["recipe"] == text:
                metrics[name] = dict(saved["metrics"], reused=True)
                log(f"{name}: reusing the finished run")
                continue
        todo.append((name, path, text, done))
    if jobs == 1:
        from .training.train import main as train_main

        for name, path, text, done in todo:
            start = time.time()
            metrics[name] = dict(train_main([path]), train_seconds=time.time() - start)
            _save(done, text, metrics[name])
            log(f"{name}: trained in {metrics[name]['train_seconds']:.0f} s")
        return metrics
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    running = []
    while todo or running:
        while todo and len(running) < jobs:
            name, path, text, done = todo.pop(0)
            out = open(path[: -len(".yaml")] + ".log", "w")
            proc = subprocess.Popen([sys.executable, "-m", "llada_xdlm.train", path], stdout=out,
                                    stderr=subprocess.STDOUT, env=env)
            running.append((name, path, text, done, proc, out, time.time()))
        time.sleep(2)
        for item in [r for r in running if r[4].poll() is not None]:
            name, path, text, done, proc, out, start = item
            running.remove(item)
            out.close()
            if proc.returncode != 0:
                raise RuntimeError(f"training {name} failed (exit {proc.returncode}); see {out.name}")
            with open(out.name) as f:  # train.main prints `key: value` lines for its final metrics
                lines = [line.split(":", 1) for line in f if line.startswith(("train_loss:", "nelbo_"))]
            metrics[name] = {k: float(v.split()[0]) for k, v in lines}
            metrics[name]["train_seconds"] = time.time() - start
            _save(done, text, metrics[name])
            log(f"{name}: trained in {metrics[name]['train_seconds']:.0f} s")
    return metrics


def _save(path: str, recipe_text: str, metrics: dict) -> None:
    with open(path, "w") as f:
        json.dump(dict(recipe=recipe_text, metrics=metrics), f, indent=2)


def objective_for(k1: float) -> tuple[str, float | None]:
    return {0.0: ("mdlm", None), 1.0: ("udlm", None)}.get(k1, ("xdlm", k1))


def label(k1: float) -> str:
    return {0.0: "MDLM", 1.0: "UDLM"}.get(k1, "XDLM")


def run_name(k1: float, prefix: str = "") -> str:
    return f"{prefix}{label(k1).lower()}_k1_{k1:g}"


def prepare_text(cfg: dict, k1s: list[float], work: str, seed: int, corpus: str) -> tuple[dict, dict]:
    """One tokenizer for every text model (built from the corpus) and the recipes: ({name: recipe}, data)."""
    from .tokenization import build_tokenizer

    tok_dir = os.path.join(work, "tokenizer")
    if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):  # kept: reused runs need the same tokenizer
        texts = perplexity.load_texts(os.path.join(corpus, "train.jsonl"))
        build_tokenizer(texts, cfg["vocab"]).save_pretrained(tok_dir)
    data = dict(tokenizer=tok_dir, train=os.path.join(corpus, "train.jsonl"),
                validation=os.path.join(corpus, "validation.jsonl"), block_size=cfg["block"], steps=cfg["steps"])
    # the AR evaluator sees ~9 epochs of the 0.1 M-token corpus at most: trained as long as the diffusion models it
    # memorises the training split (full mode, 600 steps: validation PPL 614, against 94 after 240 steps)
    runs = {"evaluator_ar": recipe(cfg, "evaluator_ar", "ar", None, work, dict(data, steps=cfg["evaluator_steps"]),
                                   seed)}
    runs.update({run_name(k1): recipe(cfg, run_name(k1), *objective_for(k1), work, data, seed) for k1 in k1s})
    return runs, data


def prepare_digits(cfg: dict, k1s: list[float], work: str, seed: int) -> dict:
    """The digits corpus (16 grey levels, 197 images held out) and one recipe per k1: {name: recipe}."""
    import numpy as np

    from .training.images import digits_levels, write_image_corpus

    images, _ = digits_levels(16)
    order = np.random.default_rng(0).permutation(len(images))
    data_dir = os.path.join(work, "digits16")
    write_image_corpus(images[order[197:]], images[order[:197]], 16, data_dir)
    data = dict(tokenizer=os.path.join(data_dir, "tokenizer"), train=os.path.join(data_dir, "train.jsonl"),
                validation=os.path.join(data_dir, "validation.jsonl"), block_size=65, steps=cfg["digits_steps"])
    return {run_name(k1, "digits_"): recipe(cfg, run_name(k1, "digits_"), *objective_for(k1), work, data, seed)
            for k1 in k1s}


def eval_text(cfg: dict, k1s: list[float], work: str, seed: int, data: dict, metrics: dict, log) -> dict:
    """PPL bound and Gen-PPL (ancestral sampler, AR evaluator) of every text model."""
    evaluator, tokenizer = load_checkpoint(os.path.join(work, "evaluator_ar"))
    val_texts = perplexity.load_texts(data["validation"])
    blocks = perplexity.text_blocks(val_texts, tokenizer, cfg["block"], cfg["eval_blocks"])
    out = dict(evaluator=dict(val_ppl=math.exp(metrics["evaluator_ar"]["nelbo_after"]),
                              train_seconds=metrics["evaluator_ar"]["train_seconds"],
                              real_text_gen_ppl=gen_ppl.gen_ppl(evaluator, tokenizer, val_texts[:200]),
                              real_text_entropy=gen_ppl.unigram_entropy(blocks)),
               unigram_ppl=unigram_ppl(perplexity.load_texts(data["train"]), tokenizer, blocks),
               models={}, tokens=blocks.numel(), vocab=len(tokenizer),
               params=sum(p.numel() for p in evaluator.parameters()))
    log(f"evaluator: validation PPL {out['evaluator']['val_ppl']:.2f}")
    for k1 in k1s:
        name = run_name(k1)
        model, _ = load_checkpoint(os.path.join(work, name))
        start = time.time()
        row = dict(k1=k1, name=label(k1), train_seconds=metrics[name]["train_seconds"],
                   train_loss=metrics[name]["train_loss"],
                   bound=perplexity.ppl_bound(model, blocks, mc_num=cfg["mc_num"], seed=seed),
                   gen=gen_ppl.measure(model, tokenizer, evaluator, tokenizer, steps_list=cfg["gen_steps"],
                                       num_samples=cfg["gen_samples"], length=cfg["block"], sampler="ancestral",
                                       seed=seed))
        row["eval_seconds"] = time.time() - start
        out["models"][str(k1)] = row
        gens = ", ".join(f"{g['steps']} steps {g['gen_ppl']:.1f} (H {g['entropy']:.2f})" for g in row["gen"])
        log(f"{name}: PPL bound {row['bound']['ppl_bound']:.2f}; Gen-PPL {gens}")
    return out


def unigram_ppl(train_texts: list[str], tokenizer, blocks: torch.Tensor) -> float:
    """Perplexity of the context-free baseline on the validation blocks: token frequencies of the training split
    (add-one smoothed). A diffusion model whose PPL bound is near it has learnt little beyond token frequencies."""
    counts = torch.zeros(len(tokenizer), dtype=torch.float64)
    for text in train_texts:
        counts += torch.bincount(torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long), minlength=len(counts))
    log_p = (counts + 1).log() - (counts.sum() + len(counts)).log()
    return math.exp(-log_p[blocks.flatten()].mean().item())


def eval_digits(cfg: dict, k1s: list[float], work: str, seed: int, metrics: dict, log) -> dict:
    """FID (digits classifier features) of every digits model at cfg['gen_steps'] ancestral steps."""
    import numpy as np

    from .evaluation.fid import DigitsFeatures, fid, generate_images, load_digits_images

    extractor = DigitsFeatures(seed=seed)
    ref = extractor(load_digits_images(16)[0])
    out = {}
    for k1 in k1s:
        name = run_name(k1, "digits_")
        row = dict(k1=k1, name=label(k1), train_seconds=metrics[name]["train_seconds"],
                   val_nelbo=metrics[name]["nelbo_after"], fid={})
        for steps in cfg["gen_steps"]:
            imgs, _ = generate_images(os.path.join(work, name), cfg["fid_samples"], steps, (8, 8),
                                      sampler="ancestral", batch_size=100, seed=seed, device="cpu")
            row["fid"][str(steps)] = fid(ref, extractor(imgs))
            np.save(os.path.join(work, f"{name}_{steps}steps.npy"), imgs)
        out[str(k1)] = row
        log(f"{name}: FID " + ", ".join(f"{s} steps {v:.2f}" for s, v in row["fid"].items()))
    return out


def plot(results: dict, path: str) -> None:
    """The trade-off: PPL bound (x) against Gen-PPL (y) per model, one marker set per number of steps; FID bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if results.get("digits") else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
    ax = axes[0, 0]
    rows = list(results["text"]["models"].values())
    for i, steps in enumerate(results["settings"]["gen_steps"]):
        xs = [r["bound"]["ppl_bound"] for r in rows]
        ys = [next(g["gen_ppl"] for g in r["gen"] if g["steps"] == steps) for r in rows]
        ax.plot(xs, ys, marker="os^"[i % 3], label=f"{steps} steps")
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"{r['name']} k1={r['k1']:g}", (x, y), fontsize=8, textcoords="offset points",
                        xytext=(4, 4))
    ax.axhline(results["text"]["evaluator"]["real_text_gen_ppl"], color="grey", ls=":", label="real text")
    ax.set_xlabel("validation PPL bound (lower = better understanding)")
    ax.set_ylabel("Gen-PPL under the AR evaluator (lower = better)")
    ax.set_title("MDLM / XDLM / UDLM trade-off (CPU scale)")
    ax.legend()
    if panels == 2:
        ax = axes[0, 1]
        drows = list(results["digits"].values())
        width = 0.8 / len(results["settings"]["gen_steps"])
        for i, steps in enumerate(results["settings"]["gen_steps"]):
            ax.bar([j + i * width for j in range(len(drows))], [r["fid"][str(steps)] for r in drows], width,
                   label=f"{steps} steps")
        ax.set_xticks([j + width * (len(results["settings"]["gen_steps"]) - 1) / 2 for j in range(len(drows))])
        ax.set_xticklabels([f"{r['name']}\nk1={r['k1']:g}" for r in drows])
        ax.set_ylabel("FID (digits classifier features; lower = better)")
        ax.set_title("8x8 digits, 16 grey levels")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(results: dict, png_name: str) -> str:
    s, text = results["settings"], results["text"]
    steps = s["gen_steps"]
    lines = [
        "# Small-scale reproduction: MDLM vs XDLM vs UDLM on CPU",
        "",
        f"Measured by `{s['command']}` on {s['machine']} ({s['date']}, {s['minutes']:.0f} minutes in all"
        f"; load average {s['load_start']:.1f} at the start, {s['load_end']:.1f} at the end). Mode `{s['mode']}`, "
        f"seed {s['seed']}."
        + (f" This invocation reused the models trained by an earlier one with identical recipes "
           f"({', '.join(s['reused'])}); their training times are listed under Settings." if s.get("reused") else ""),
        "",
        "## Text: understanding (PPL bound) vs generation (Gen-PPL)",
        "",
        "| model | k1 | validation PPL bound | " + " | ".join(f"Gen-PPL {n} steps | entropy {n} steps" for n in steps)
        + " |",
        "|---|---|---|" + "---|---|" * len(steps),
    ]
    for r in text["models"].values():
        cells = []
        for n in steps:
            g = next(g for g in r["gen"] if g["steps"] == n)
            cells += [f"{g['gen_ppl']:.1f}", f"{g['entropy']:.2f}"]
        lines.append(f"| {r['name']} | {r['k1']:g} | {r['bound']['ppl_bound']:.2f} "
                     f"(NELBO {r['bound']['nelbo']:.3f} +- {r['bound']['nelbo_stderr']:.3f}) | " + " | ".join(cells)
                     + " |")
    ev = text["evaluator"]
    lines += [
        f"| real validation text | - | AR evaluator PPL {ev['val_ppl']:.2f} | "
        + " | ".join([f"{ev['real_text_gen_ppl']:.1f}", f"{ev['real_text_entropy']:.2f}"] * len(steps)) + " |",
        f"| unigram frequencies (no context) | - | {text['unigram_ppl']:.2f} |" + " - | - |" * len(steps),
        "",
        f"PPL bound: exp(NELBO per token) on {text['tokens']} validation tokens (blocks of {s['block']}), "
        f"{s['mc_num']} diffusion times per block, noise seed {s['seed']} (`xdlm ppl`). Gen-PPL: "
        f"{s['gen_samples']} unconditional samples of {s['block']} tokens from the ancestral sampler at the model's "
        f"own k1, scored by a causal model of the same size trained by this script on the same corpus "
        f"(`xdlm gen-ppl`); entropy: mean per-sample unigram entropy (nats). The 'real text' row scores "
        "held-out text with the same evaluator, for scale.",
        "",
        f"![trade-off]({png_name})",
        "",
    ]
    if results.get("digits"):
        lines += [
            "## Images: 8x8 digits, 16 grey levels, FID",
            "",
            "| model | k1 | validation NELBO (nats/token) | " + " | ".join(f"FID {n} steps" for n in steps) + " |",
            "|---|---|---|" + "---|" * len(steps),
        ]
        for r in results["digits"].values():
            lines.append(f"| {r['name']} | {r['k1']:g} | {r['val_nelbo']:.3f} | "
                         + " | ".join(f"{r['fid'][str(n)]:.2f}" for n in steps) + " |")
        lines += [
            "",
            f"FID of {s['fid_samples']} ancestral samples against all 1797 scikit-learn digits, features from a small "
            "classifier (`llada_xdlm.evaluation.fid.DigitsFeatures`): comparable between these rows only.",
            "",
        ]
    lines += [
        "## Settings",
        "",
        f"- Corpus: `data/stdlib_docs` (English prose from Python standard-library docstrings), byte-level BPE "
        f"tokenizer with {text['vocab']} ids built once from the training split and shared by every model.",
        f"- Model: LLaDA architecture, d_model {s['d_model']}, {s['n_layers']} layers, {s['n_heads']} heads, "
        f"SwiGLU {s['mlp_hidden_size']}, {text['params'] / 1e6:.2f} M parameters; no time conditioning.",
        f"- Training (each model, through `llada_xdlm.training.train.main`): {s['steps']} steps, batch {s['batch']} x "
        f"{s['block']} tokens, AdamW lr {s['lr']} cosine, {s['warmup']} warm-up, log-linear schedule, fused loss. "
        "Only the objective differs (mdlm / xdlm k1 = 0.1 / udlm). The AR evaluator (objective ar, same size): "
        f"{s['evaluator_steps']} steps, because longer it memorises this small corpus.",
        f"- Trained {s['jobs']} model(s) at a time ({'subprocesses, one thread each' if s['jobs'] > 1 else 'in-process'}); "
        "training seconds per model: " + ", ".join(
            f"{r['name']} k1={r['k1']:g} {r['train_seconds']:.0f}" for r in text["models"].values())
        + f", evaluator {text['evaluator']['train_seconds']:.0f}" + (", digits " + ", ".join(
            f"k1={r['k1']:g} {r['train_seconds']:.0f}" for r in results["digits"].values())
            if results.get("digits") else "") + ".",
        "- Recipes written by the script: `<work_dir>/recipes/*.yaml`; raw numbers: `<work_dir>/results.json`.",
        "",
        "## The paper's claims, beside ours",
        "",
    ]
    lines += [f"- Paper ({key}): {claim}" for key, claim in PAPER.items()]
    lines += ["", "## Reading", "", *results.get("reading", ["(fill in)"]), ""]
    return "\n".join(lines)


def reading(results: dict) -> list[str]:
    """Plain statements of what the measured numbers show, for the doc (no interpretation beyond the numbers)."""
    rows = {float(k): r for k, r in results["text"]["models"].items()}
    out = []
    steps = results["settings"]["gen_steps"]
    if 0.1 in rows and 1.0 in rows:
        x, u = rows[0.1]["bound"]["ppl_bound"], rows[1.0]["bound"]["ppl_bound"]
        out.append(f"- PPL bound: XDLM {x:.2f} vs UDLM {u:.2f} -> XDLM is {'better' if x < u else 'worse'} "
                   f"by {abs(u - x):.2f} (paper: XDLM better than UDLM).")
    if 0.0 in rows and 0.1 in rows:
        m, x = rows[0.0]["bound"]["ppl_bound"], rows[0.1]["bound"]["ppl_bound"]
        out.append(f"- PPL bound: MDLM {m:.2f} vs XDLM {x:.2f} (in the paper MDLM is the PPL end of the trade-off).")
    bounds = ", ".join(f"{label(k)} k1={k:g} {r['bound']['ppl_bound']:.2f}" for k, r in sorted(rows.items()))
    unigram = results["text"]["unigram_ppl"]
    out.append(f"- Context-free baseline (token frequencies): PPL {unigram:.2f}; PPL bounds {bounds}; AR evaluator PPL "
               f"{results['text']['evaluator']['val_ppl']:.2f}.")
    if all(r["bound"]["ppl_bound"] > 0.8 * unigram for r in rows.values()):
        out.append("- Every diffusion model's bound is within 20% of the context-free baseline: at this budget they "
                   "have learnt little beyond token frequencies, so their text samples are near word salad and the "
                   "text comparison between objectives says little; the digits comparison is the informative one.")
    for n in steps:
        g = {k: next(gg for gg in r["gen"] if gg["steps"] == n)["gen_ppl"] for k, r in rows.items()}
        order = " < ".join(f"{label(k)} k1={k:g} {v:.1f}" for k, v in sorted(g.items(), key=lambda kv: kv[1]))
        out.append(f"- Gen-PPL at {n} steps (lower first): {order}.")
    if results.get("digits"):
        for n in steps:
            f = {float(k): r["fid"][str(n)] for k, r in results["digits"].items()}
            order = " < ".join(f"{label(k)} k1={k:g} {v:.1f}" for k, v in sorted(f.items(), key=lambda kv: kv[1]))
            out.append(f"- Digits FID at {n} steps (lower first): {order}.")
    out.append(f"- Scale caveat: {results['text']['params'] / 1e6:.2f} M-parameter models trained for minutes on a "
               "0.4 MB corpus, one seed: differences of a few percent may be run-to-run noise.")
    return out


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """`xdlm reproduce-small`: train, evaluate and write the report; returns the results (as results.json)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes: a couple of minutes (CI)")
    parser.add_argument("--reduced", action="store_true", help="smaller models and budget, for a busy machine")
    parser.add_argument("--digits", action="store_true", help="also train digits models and report FID")
    parser.add_argument("--k1", type=float, nargs="+", default=[0.0, 0.1, 1.0], help="mixing ratios to compare")
    parser.add_argument("--steps", type=int, default=None, help="training steps per text model (mode default)")
    parser.add_argument("--digits_steps", type=int, default=None, help="training steps per digits model")
    parser.add_argument("--batch", type=int, default=None, help="training batch size (mode default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="train this many models at once (subprocesses)")
    parser.add_argument("--work_dir", default=None, help="default outputs/reproduce_small_<mode>; finished runs "
                        "with identical recipes there are reused")
    parser.add_argument("--doc_dir", default=None, help="where small_scale.md/.png go (default docs/; smoke: work)")
    parser.add_argument("--corpus", default=CORPUS, help="folder with train.jsonl and validation.jsonl")
    args = parser.parse_args(argv)
    if any(not 0.0 <= k <= 1.0 for k in args.k1):
        parser.error(f"--k1 values must lie in [0, 1]; got {args.k1}.")
    if not all(os.path.isfile(os.path.join(args.corpus, f"{split}.jsonl")) for split in ("train", "validation")):
        parser.error(f"{args.corpus} lacks train.jsonl / validation.jsonl: run from the repository root or pass "
                     "--corpus.")
    mode = "smoke" if args.smoke else "reduced" if args.reduced else "full"
    cfg = dict(MODES[mode])
    for key in ("steps", "digits_steps", "batch"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    work = os.path.abspath(args.work_dir or os.path.join("outputs", f"reproduce_small_{mode}"))
    doc_dir = args.doc_dir or (work if args.smoke else "docs")
    os.makedirs(work, exist_ok=True)
    os.makedirs(doc_dir, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(args.seed)
    start = time.time()

    def log(msg: str) -> None:
        print(f"[{(time.time() - start) / 60:5.1f} min] {msg}", flush=True)

    command = " ".join([prog or "xdlm reproduce-small", *(sys.argv[1:] if argv is None else argv)])
    results = dict(settings=dict(cfg, mode=mode, seed=args.seed, k1s=args.k1, command=command, jobs=args.jobs,
                                 machine=f"{platform.machine()} CPU, {os.cpu_count()} cores, torch "
                                         f"{torch.__version__}",
                                 date=time.strftime("%Y-%m-%d", time.gmtime()), load_start=os.getloadavg()[0]))
    runs, text_data = prepare_text(cfg, args.k1, work, args.seed, os.path.abspath(args.corpus))
    if args.digits:
        runs.update(prepare_digits(cfg, args.k1, work, args.seed))
    metrics = train_all(runs, args.jobs, log)
    results["text"] = eval_text(cfg, args.k1, work, args.seed, text_data, metrics, log)
    if args.digits:
        results["digits"] = eval_digits(cfg, args.k1, work, args.seed, metrics, log)
    results["settings"]["minutes"] = (time.time() - start) / 60
    results["settings"]["reused"] = [name for name, m in metrics.items() if m.get("reused")]
    results["settings"]["load_end"] = os.getloadavg()[0]  # 1-minute load, this run included
    results["reading"] = reading(results)
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    png = os.path.join(doc_dir, "small_scale.png")
    plot(results, png)
    with open(os.path.join(doc_dir, "small_scale.md"), "w") as f:
        f.write(markdown(results, os.path.basename(png)))
    log(f"wrote {os.path.join(doc_dir, 'small_scale.md')} and {png}")
    return results

