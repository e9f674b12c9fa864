"""CPU-scale reproduction of the XDLM paper's small-scale trade-off: MDLM (k1 = 0), XDLM (k1 = 0.03 / 0.1 / 0.3 /
0.5) and UDLM (k1 = 1) trained from scratch on character-level text, three seeds each, compared on the validation
PPL bound (likelihood) and on few-step generation (Gen-PPL under a causal evaluator, unigram entropy), with both
samplers; optionally also on 8x8 digit images (FID at 4 / 8 / 16 / 32 steps).

    xdlm reproduce-small --digits --jobs 2  # full: ~45 minutes on 2 cores, writes docs/small_scale.md
    xdlm reproduce-small --smoke            # about a minute: the same pipeline at toy size (CI)

Run it from the repository root (the corpus is data/stdlib_docs; --corpus names another copy).

Text: the corpus is modelled one character per token (printable ASCII, `ascii_normalize` and `build_char_tokenizer`,
saved once in the work dir and shared by every model and the evaluator), the setting of text8 with case and
punctuation kept: there a model this small learns to use context within minutes. Every model goes through the real
entry point (llada_xdlm.training.train.main) with the same tokenizer, data, optimiser and number of steps; only the
objective and the seed differ (the seed sets the initial weights and the order of the training batches). The
Gen-PPL evaluator is a causal model (objective `ar`) trained by this script on the same text, evaluated on the
validation split every few steps and kept at its best validation loss (`load_best_model_at_end`). Results, settings
and the paper's claims go to <doc_dir>/small_scale.md with three plots (doc_dir: docs/, or the work dir with --smoke).
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import yaml

from .checkpoint import load_checkpoint
from .evaluation import gen_ppl, perplexity
from .tokenization import ascii_normalize, build_char_tokenizer

CORPUS = os.path.join("data", "stdlib_docs")
K1S = [0.0, 0.03, 0.1, 0.3, 0.5, 1.0]
SAMPLERS = ("ancestral", "remask")
PAPER = {
    "likelihood": "XDLM's likelihood is within reach of MDLM's and far ahead of UDLM's (small models, LM1B / OWT).",
    "zero-shot PPL": "XDLM beats UDLM by 5.4 points on average over zero-shot text perplexity benchmarks.",
    "sweet spot": "k1 = 0.1 is the sweet spot between likelihood (MDLM-like) and few-step generation (UDLM-like).",
    "few-step generation": "XDLM generates better text than MDLM in few steps (lower Gen-PPL).",
    "images": "few-step image generation: FID 54.1 (XDLM) vs 80.8 (MDLM).",
}
MODES = {
    # `--digits --jobs 2` on 2 shared cores: see docs/small_scale.md for the measured time.
    "full": dict(
        seeds=3, k1s=K1S,
        text=dict(model=dict(d_model=64, n_layers=4, n_heads=4, mlp_hidden_size=192), block=64, batch=64,
                  steps=450, lr=5e-3, warmup=30, eval_every=50),
        evaluator=dict(steps=450, eval_every=50),
        digits=dict(model=dict(d_model=64, n_layers=4, n_heads=4, mlp_hidden_size=192), batch=32, steps=300,
                    lr=5e-3, warmup=30, eval_every=50),
        mc_num=8, eval_blocks=128, gen_samples=48, gen_steps=[4, 8, 16, 32, 64], fid_samples=400,
        fid_steps=[4, 8, 16, 32]),
    "smoke": dict(
        seeds=2, k1s=[0.0, 0.1, 1.0],
        text=dict(model=dict(d_model=32, n_layers=1, n_heads=2, mlp_hidden_size=64), block=32, batch=8, steps=6,
                  lr=3e-3, warmup=0, eval_every=3),
        evaluator=dict(steps=6, eval_every=3),
        digits=dict(model=dict(d_model=32, n_layers=1, n_heads=2, mlp_hidden_size=64), batch=8, steps=4, lr=3e-3,
                    warmup=0, eval_every=2),
        mc_num=2, eval_blocks=4, gen_samples=4, gen_steps=[2, 4], fid_samples=20, fid_steps=[2, 4]),
}


# ---- data ----------------------------------------------------------------------------------------------------


def prepare_chars(corpus: str, out: str) -> dict:
    """The corpus in printable ASCII (train.jsonl / validation.jsonl under `out`, empty rows dropped) and the
    character tokenizer (out/tokenizer): {tokenizer, train, validation} paths."""
    os.makedirs(out, exist_ok=True)
    data = dict(tokenizer=os.path.join(out, "tokenizer"))
    for split in ("train", "validation"):
        texts = [ascii_normalize(t) for t in perplexity.load_texts(os.path.join(corpus, f"{split}.jsonl"))]
        data[split] = os.path.join(out, f"{split}.jsonl")
        with open(data[split], "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts if t)
    build_char_tokenizer().save_pretrained(data["tokenizer"])
    return data


def prepare_digits(out: str) -> dict:
    """The digits corpus (16 grey levels, 197 images held out): {tokenizer, train, validation} paths."""
    import numpy as np

    from .training.images import digits_levels, write_image_corpus

    images, _ = digits_levels(16)
    order = np.random.default_rng(0).permutation(len(images))
    write_image_corpus(images[order[197:]], images[order[:197]], 16, out)
    return dict(tokenizer=os.path.join(out, "tokenizer"), train=os.path.join(out, "train.jsonl"),
                validation=os.path.join(out, "validation.jsonl"))


# ---- recipes and training ------------------------------------------------------------------------------------


def objective_for(k1: float) -> tuple[str, float | None]:
    return {0.0: ("mdlm", None), 1.0: ("udlm", None)}.get(k1, ("xdlm", k1))


def label(k1: float) -> str:
    return {0.0: "MDLM", 1.0: "UDLM"}.get(k1, "XDLM")


def run_name(k1: float, seed: int, prefix: str = "") -> str:
    return f"{prefix}{label(k1).lower()}_k1_{k1:g}_seed{seed}"


def recipe(train: dict, name: str, objective: str, k1: float | None, work: str, data: dict, block: int, seed: int,
           keep_best: bool = False) -> str:
    """Write one run's YAML recipe (flat keys of llada_xdlm.training.args) and return its path. The validation
    NELBO is logged every train['eval_every'] steps (the training dynamics); keep_best also saves a checkpoint at
    each evaluation and ends with the one of lowest validation loss (the AR evaluator)."""
    keys = dict(
        model_config=dict(train["model"], n_kv_heads=train["model"]["n_heads"], max_sequence_length=block,
                          rope_theta=10000.0),
        tokenizer_name_or_path=data["tokenizer"],
        data_files=[data["train"]], eval_data_files=[data["validation"]], block_size=block, random_length_prob=0.0,
        objective=objective, schedule="loglinear", loss_implementation="fused",
        output_dir=os.path.join(work, name), use_cpu=True, seed=seed, max_steps=train["steps"],
        per_device_train_batch_size=train["batch"], per_device_eval_batch_size=64, learning_rate=train["lr"],
        lr_scheduler_type="cosine", warmup_steps=train["warmup"], weight_decay=0.01, max_grad_norm=1.0,
        logging_steps=train["eval_every"], eval_strategy="steps", eval_steps=train["eval_every"],
        save_strategy="no", report_to="none", dataloader_num_workers=0, disable_tqdm=True,
    )
    if keep_best:
        keys.update(save_strategy="steps", save_steps=train["eval_every"], save_total_limit=1,
                    load_best_model_at_end=True, metric_for_best_model="nelbo", greater_is_better=False)
    if k1 is not None:
        keys["k1"] = k1
    path = os.path.join(work, "recipes", f"{name}.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(keys, f, sort_keys=False)
    return path


def train_all(runs: dict[str, str], jobs: int, log) -> dict[str, dict]:
    """Train every run {name: recipe path} through the real entry point; {name: metrics}: the final ones printed by
    train.main plus `curve`, the validation NELBO logged during training [(step, nelbo)]. A run whose output
    directory already holds metrics for the identical recipe is reused (a crashed reproduction resumes). jobs > 1
    trains that many runs at once in subprocesses (`python -m llada_xdlm.train`), one thread each."""
    metrics, todo = {}, []
    for name, path in runs.items():
        with open(path) as f:
            text = f.read()
        output_dir = yaml.safe_load(text)["output_dir"]
        done = os.path.join(output_dir, "reproduce_metrics.json")
        if os.path.exists(done):
            with open(done) as f:
                saved = json.load(f)
            if saved["recipe"] == text:
                metrics[name] = dict(saved["metrics"], reused=True)
                log(f"{name}: reusing the finished run")
                continue
        todo.append((name, path, text, output_dir, done))
    if jobs == 1:
        from .training.train import main as train_main

        for name, path, text, output_dir, done in todo:
            start = time.time()
            metrics[name] = dict(train_main([path, "--overwrite_output_dir", "true"]),
                                 train_seconds=time.time() - start, curve=validation_curve(output_dir))
            _save(done, text, metrics[name])
            log(f"{name}: trained in {metrics[name]['train_seconds']:.0f} s")
        return metrics
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    running = []
    while todo or running:
        while todo and len(running) < jobs:
            name, path, text, output_dir, done = todo.pop(0)
            out = open(path[: -len(".yaml")] + ".log", "w")
            proc = subprocess.Popen([sys.executable, "-m", "llada_xdlm.train", path, "--overwrite_output_dir",
                                     "true"], stdout=out, stderr=subprocess.STDOUT, env=env)
            running.append((name, text, output_dir, done, proc, out, time.time()))
        time.sleep(2)
        for item in [r for r in running if r[4].poll() is not None]:
            name, text, output_dir, done, proc, out, start = item
            running.remove(item)
            out.close()
            if proc.returncode != 0:
                raise RuntimeError(f"training {name} failed (exit {proc.returncode}); see {out.name}")
            with open(out.name) as f:  # train.main prints `key: value` lines for its final metrics
                lines = [line.split(":", 1) for line in f if line.startswith(("train_loss:", "nelbo_"))]
            metrics[name] = {k: float(v.split()[0]) for k, v in lines}
            metrics[name].update(train_seconds=time.time() - start, curve=validation_curve(output_dir))
            _save(done, text, metrics[name])
            log(f"{name}: trained in {metrics[name]['train_seconds']:.0f} s")
    return metrics


def validation_curve(output_dir: str) -> list[tuple[int, float]]:
    """[(step, validation NELBO)] from the trainer state that train.main saves with the model."""
    with open(os.path.join(output_dir, "trainer_state.json")) as f:
        history = json.load(f)["log_history"]
    return [(log["step"], log["eval_nelbo"]) for log in history if "eval_nelbo" in log]


def _save(path: str, recipe_text: str, metrics: dict) -> None:
    with open(path, "w") as f:
        json.dump(dict(recipe=recipe_text, metrics=metrics), f, indent=2)


# ---- evaluation (one model per call, so that --jobs can run them in parallel) ---------------------------------


def evaluate_text_model(job: dict) -> dict:
    """PPL bound on the validation blocks and, per sampler and number of steps, Gen-PPL (under the AR evaluator)
    and unigram entropy of unconditional samples: one table row of one (k1, seed) run."""
    model, tokenizer = load_checkpoint(job["model"])
    evaluator, _ = load_checkpoint(job["evaluator"])
    blocks = perplexity.text_blocks(perplexity.load_texts(job["validation"]), tokenizer, job["block"],
                                    job["eval_blocks"])
    row = dict(bound=perplexity.ppl_bound(model, blocks, mc_num=job["mc_num"], seed=0), gen={})
    for sampler in SAMPLERS:
        row["gen"][sampler] = gen_ppl.measure(model, tokenizer, evaluator, tokenizer, steps_list=job["gen_steps"],
                                              num_samples=job["gen_samples"], length=job["block"], sampler=sampler,
                                              seed=0)
    return row


_DIGITS_REFERENCE = {}  # per process: (feature extractor, reference features), built once


def evaluate_digits_model(job: dict) -> dict:
    """FID (digits classifier features, against all 1797 digits) of ancestral samples at each number of steps."""
    from .evaluation.fid import DigitsFeatures, fid, generate_images, load_digits_images

    if not _DIGITS_REFERENCE:
        extractor = DigitsFeatures(seed=0)
        _DIGITS_REFERENCE.update(extractor=extractor, features=extractor(load_digits_images(16)[0]))
    extractor, reference = _DIGITS_REFERENCE["extractor"], _DIGITS_REFERENCE["features"]
    scores = {}
    for steps in job["fid_steps"]:
        images, _ = generate_images(job["model"], job["fid_samples"], steps, (8, 8), sampler="ancestral",
                                    batch_size=100, seed=0, device="cpu")
        scores[str(steps)] = fid(reference, extractor(images))
    return dict(fid=scores)


def evaluate_all(fn, jobs_by_name: dict[str, dict], jobs: int, log) -> dict[str, dict]:
    """{name: fn(job)}; jobs > 1 runs that many evaluations at once in worker processes, one thread each."""
    if jobs == 1:
        out = {}
        for name, job in jobs_by_name.items():
            start = time.time()
            out[name] = dict(fn(job), eval_seconds=time.time() - start)
            log(f"{name}: evaluated in {out[name]['eval_seconds']:.0f} s")
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=torch.set_num_threads,
                             initargs=(1,)) as pool:
        futures = {name: pool.submit(_timed, fn, job) for name, job in jobs_by_name.items()}
        out = {}
        for name, future in futures.items():
            out[name] = future.result()
            log(f"{name}: evaluated in {out[name]['eval_seconds']:.0f} s")
    return out


def _timed(fn, job: dict) -> dict:
    start = time.time()
    return dict(fn(job), eval_seconds=time.time() - start)


# ---- statistics over seeds -----------------------------------------------------------------------------------


def mean_std(values: list[float]) -> dict:
    """{mean, std, values}: std is the sample standard deviation over seeds (0 for a single seed)."""
    return dict(mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else 0.0,
                values=list(values))


def summarize_text(runs: dict[str, dict], k1s: list[float], seeds: list[int], gen_steps: list[int]) -> dict:
    """Per k1 (str): mean +- std over seeds of the PPL bound, the final validation NELBO and, per sampler and
    steps, Gen-PPL and entropy; each statistic keeps the per-seed values it was computed from."""
    out = {}
    for k1 in k1s:
        rows = [runs[run_name(k1, s)] for s in seeds]
        gen = {sampler: {str(n): {key: mean_std([next(g[key] for g in r["gen"][sampler] if g["steps"] == n)
                                                  for r in rows])
                                  for key in ("gen_ppl", "entropy")}
                         for n in gen_steps}
               for sampler in SAMPLERS}
        out[str(k1)] = dict(k1=k1, name=label(k1), ppl_bound=mean_std([r["bound"]["ppl_bound"] for r in rows]),
                            nelbo=mean_std([r["bound"]["nelbo"] for r in rows]), gen=gen,
                            train_seconds=mean_std([r["train_seconds"] for r in rows]))
    return out


def summarize_digits(runs: dict[str, dict], k1s: list[float], seeds: list[int], fid_steps: list[int]) -> dict:
    out = {}
    for k1 in k1s:
        rows = [runs[run_name(k1, s, "digits_")] for s in seeds]
        out[str(k1)] = dict(k1=k1, name=label(k1), val_nelbo=mean_std([r["nelbo_after"] for r in rows]),
                            fid={str(n): mean_std([r["fid"][str(n)] for r in rows]) for n in fid_steps},
                            train_seconds=mean_std([r["train_seconds"] for r in rows]))
    return out


def fmt(stat: dict, digits: int = 2) -> str:
    return f"{stat['mean']:.{digits}f} +- {stat['std']:.{digits}f}"


# ---- plots ---------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(results: dict, path: str) -> None:
    """Likelihood (x: PPL bound) against few-step generation (y: Gen-PPL), one point per k1 and number of steps,
    error bars = std over seeds; one panel per sampler."""
    plt = _pyplot()
    summary, steps = results["text"]["summary"], results["settings"]["gen_steps"]
    shown = [steps[0], steps[len(steps) // 2], steps[-1]] if len(steps) > 2 else steps
    fig, axes = plt.subplots(1, len(SAMPLERS), figsize=(6.5 * len(SAMPLERS), 5), squeeze=False)
    for ax, sampler in zip(axes[0], SAMPLERS):
        for i, n in enumerate(shown):
            xs, ys = [], []
            for row in summary.values():
                x, y = row["ppl_bound"], row["gen"][sampler][str(n)]["gen_ppl"]
                ax.errorbar(x["mean"], y["mean"], xerr=x["std"], yerr=y["std"], fmt="os^"[i % 3], color=f"C{i}",
                            capsize=3, label=f"{n} steps" if not xs else None)
                xs.append(x["mean"])
                ys.append(y["mean"])
                if i == 0:
                    ax.annotate(f"{row['name']} {row['k1']:g}", (x["mean"], y["mean"]), fontsize=8,
                                textcoords="offset points", xytext=(5, 5))
            ax.plot(xs, ys, color=f"C{i}", lw=0.8, alpha=0.6)
        ax.axhline(results["text"]["evaluator"]["real_text_gen_ppl"], color="grey", ls=":", label="real text")
        ax.set_yscale("log")
        ax.set_xlabel("validation PPL bound (lower = better likelihood)")
        ax.set_ylabel("Gen-PPL under the AR evaluator (log scale; lower = better)")
        ax.set_title(f"{sampler} sampler: mean +- std over {results['settings']['seeds']} seeds")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dynamics(results: dict, path: str) -> None:
    """Validation PPL bound (one t per block, as logged by the trainer) against training step, mean over seeds with
    a +- std band, one line per k1 (text) and the unigram baseline."""
    plt = _pyplot()
    panels = [("text", results["text"]["curves"])] + ([("digits", results["digits"]["curves"])]
                                                      if results.get("digits") else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (what, curves) in zip(axes[0], panels):
        for i, (k1, runs) in enumerate(curves.items()):
            steps = [s for s, _ in runs[0]]
            ppl = torch.tensor([[math.exp(v) for _, v in run] for run in runs])  # [seeds, evaluations]
            mean, std = ppl.mean(0), ppl.std(0) if len(runs) > 1 else torch.zeros(len(steps))
            ax.plot(steps, mean, color=f"C{i}", label=f"{label(float(k1))} k1={float(k1):g}")
            ax.fill_between(steps, mean - std, mean + std, color=f"C{i}", alpha=0.2)
        if what == "text":
            ax.axhline(results["text"]["unigram_ppl"], color="grey", ls=":", label="unigram (no context)")
            ax.set_ylim(top=2 * results["text"]["unigram_ppl"])
        ax.set_xlabel("training step")
        ax.set_ylabel("validation PPL bound")
        ax.set_title(f"{what}: validation bound during training")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fid(results: dict, path: str) -> None:
    """Digits FID against the number of sampling steps, one line per k1, error bars = std over seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    steps = results["settings"]["fid_steps"]
    for i, row in enumerate(results["digits"]["summary"].values()):
        stats = [row["fid"][str(n)] for n in steps]
        ax.errorbar(steps, [s["mean"] for s in stats], yerr=[s["std"] for s in stats], marker="o", capsize=3,
                    color=f"C{i}", label=f"{row['name']} k1={row['k1']:g}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(n) for n in steps])
    ax.set_xlabel("sampling steps (ancestral)")
    ax.set_ylabel("FID (digits classifier features; lower = better)")
    ax.set_title("8x8 digits, 16 grey levels")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the report ----------------------------------------------------------------------------------------------


def markdown(results: dict, pngs: dict[str, str]) -> str:
    s, text = results["settings"], results["text"]
    steps, summary = s["gen_steps"], text["summary"]
    seeds = ", ".join(str(x) for x in s["seed_list"])
    lines = [
        "# Small-scale reproduction: MDLM vs XDLM vs UDLM on CPU",
        "",
        f"Measured by `{s['command']}` on {s['machine']} ({s['date']}, {s['minutes']:.0f} minutes in all; load "
        f"average {s['load_start']:.1f} at the start, {s['load_end']:.1f} at the end, mean of the 1-minute load "
        f"sampled during training {s['load_training']:.1f}). Mode `{s['mode']}`, seeds {seeds}; every number is "
        f"mean +- std (sample standard deviation) over the {s['seeds']} seeds, from the per-seed runs in "
        "`<work_dir>/results.json`."
        + (f" This invocation reused {len(s['reused'])} models trained by an earlier one with identical recipes."
           if s.get("reused") else ""),
        "",
        "## Text: likelihood",
        "",
        "| model | k1 | validation PPL bound | NELBO (nats/char) | per seed |",
        "|---|---|---|---|---|",
    ]
    for r in summary.values():
        lines.append(f"| {r['name']} | {r['k1']:g} | {fmt(r['ppl_bound'])} | {fmt(r['nelbo'], 3)} | "
                     + ", ".join(f"{v:.2f}" for v in r["ppl_bound"]["values"]) + " |")
    ev = text["evaluator"]
    lines += [
        f"| unigram frequencies (no context) | - | {text['unigram_ppl']:.2f} | {math.log(text['unigram_ppl']):.3f} "
        "| - |",
        f"| AR evaluator (causal, exact PPL) | - | {ev['val_ppl']:.2f} | {math.log(ev['val_ppl']):.3f} | - |",
        "",
        f"PPL bound: exp(NELBO per character) on {text['tokens']} validation characters (blocks of {s['block']}), "
        f"{s['mc_num']} diffusion times per block, noise seed 0 (`xdlm ppl`). Context gate: MDLM's bound is "
        f"{abs(text['gate']):.0%} {'below' if text['gate'] >= 0 else 'above'} the unigram baseline (required: at "
        "least 30% below).",
        "",
    ]
    for sampler in SAMPLERS:
        lines += [
            f"## Text: few-step generation, {sampler} sampler",
            "",
            "| model | k1 | " + " | ".join(f"{n} steps: Gen-PPL (entropy)" for n in steps) + " |",
            "|---|---|" + "---|" * len(steps),
        ]
        for r in summary.values():
            cells = [f"{fmt(g['gen_ppl'], 1)} ({g['entropy']['mean']:.2f})"
                     for g in (r["gen"][sampler][str(n)] for n in steps)]
            lines.append(f"| {r['name']} | {r['k1']:g} | " + " | ".join(cells) + " |")
        lines += ["| real validation text | - | " + " | ".join(
            [f"{ev['real_text_gen_ppl']:.1f} ({ev['real_text_entropy']:.2f})"] * len(steps)) + " |", ""]
    lines += [
        f"Gen-PPL: {s['gen_samples']} unconditional samples of {s['block']} characters per model, sampler and number "
        f"of steps (sampling seed 0), scored by the AR evaluator (`xdlm gen-ppl`); in brackets the mean per-sample "
        "unigram entropy in nats (repetitive samples score low). The remask sampler draws at temperature 1 "
        "(`llada_xdlm.sampling.generate`, low-confidence remasking); the ancestral sampler draws from the model's "
        "posterior at its own k1. The 'real validation text' row scores held-out text with the same evaluator. Compare "
        "Gen-PPL only between samples of similar entropy: a sampler that repeats characters scores a low Gen-PPL.",
        "",
        f"![likelihood vs few-step generation]({pngs['pareto']})",
        "",
        f"![validation bound during training]({pngs['dynamics']})",
        "",
    ]
    if results.get("digits"):
        fid_steps = s["fid_steps"]
        lines += [
            "## Images: 8x8 digits, 16 grey levels, FID",
            "",
            "| model | k1 | validation NELBO (nats/pixel) | " + " | ".join(f"FID {n} steps" for n in fid_steps) + " |",
            "|---|---|---|" + "---|" * len(fid_steps),
        ]
        for r in results["digits"]["summary"].values():
            lines.append(f"| {r['name']} | {r['k1']:g} | {fmt(r['val_nelbo'], 3)} | "
                         + " | ".join(fmt(r["fid"][str(n)]) for n in fid_steps) + " |")
        lines += [
            "",
            f"FID of {s['fid_samples']} ancestral samples per model and number of steps against all 1797 "
            "scikit-learn digits, features from a small classifier (`llada_xdlm.evaluation.fid.DigitsFeatures`): "
            "comparable between these rows only, not with published FIDs.",
            "",
            f"![digits FID]({pngs['fid']})",
            "",
        ]
    t, d, e = s["text"], s["digits"], s["evaluator"]
    lines += [
        "## Settings",
        "",
        "- Corpus: `data/stdlib_docs` (English prose from Python standard-library docstrings) in printable ASCII: "
        f"{text['train_chars']} training and {text['validation_chars']} validation characters; one token per "
        f"character ({text['vocab']} ids with bos / eos / mask).",
        f"- Text model: LLaDA architecture, d_model {t['model']['d_model']}, {t['model']['n_layers']} layers, "
        f"{t['model']['n_heads']} heads, SwiGLU {t['model']['mlp_hidden_size']}, {text['params'] / 1e6:.2f} M "
        f"parameters, no time conditioning. Training (each model, through `llada_xdlm.training.train.main`): "
        f"{t['steps']} steps, batch {t['batch']} x {s['block']} characters, AdamW lr {t['lr']} cosine, "
        f"{t['warmup']} warm-up, log-linear schedule, fused loss, validation NELBO every {t['eval_every']} steps. "
        "Only the objective and the seed differ.",
        f"- AR evaluator: the same architecture, objective ar, seed {s['seed_list'][0]}, {e['steps']} steps, "
        f"evaluated every {e['eval_every']} steps; the checkpoint of lowest validation loss is kept (step "
        f"{ev['best_step']} of {e['steps']}, validation PPL {ev['val_ppl']:.2f}).",
    ]
    if results.get("digits"):
        lines.append(f"- Digits models: d_model {d['model']['d_model']}, {d['model']['n_layers']} layers, "
                     f"{d['steps']} steps, batch {d['batch']} images (65 tokens: 64 pixels + EOS), lr {d['lr']}.")
    timing = ", ".join(f"{r['name']} k1={r['k1']:g} {r['train_seconds']['mean']:.0f}" for r in summary.values())
    how = "worker processes, one thread each" if s["jobs"] > 1 else "in-process"
    lines += [
        f"- {s['jobs']} model(s) trained and evaluated at a time ({how}); mean training seconds per text model: "
        f"{timing}; evaluator {ev['train_seconds']:.0f}"
        + (", digits " + ", ".join(f"k1={r['k1']:g} {r['train_seconds']['mean']:.0f}"
                                  for r in results["digits"]["summary"].values()) if results.get("digits") else "")
        + f". Phases: {', '.join(f'{k} {v:.1f} min' for k, v in s['phase_minutes'].items())}.",
        "- Recipes written by the script: `<work_dir>/recipes/*.yaml`; raw per-seed numbers: "
        "`<work_dir>/results.json`.",
        "",
        "## The paper's claims, beside ours",
        "",
    ]
    lines += ["| claim | paper | this run | verdict |", "|---|---|---|---|"]
    lines += [f"| {v['claim']} | {v['paper']} | {v['ours']} | **{v['verdict']}** |" for v in results["verdicts"]]
    lines += ["", "A difference is clear only when the means are further apart than the sum of the seed standard "
              "deviations; a verdict is 'supports' or 'contradicts' when most settings show a clear difference one "
              "way and none the other (likelihood: XDLM clearly ahead of UDLM and nearer to MDLM than to UDLM). Our "
              f"scale (character-level English, {results['text']['params'] / 1e6:.2f} M parameters, "
              "minutes of CPU) says nothing about the size of the paper's differences, only about their direction.",
              "", "## Reading", "", *results["reading"], ""]
    return "\n".join(lines)


def _separated(a: dict, b: dict) -> bool:
    """Whether two seed statistics differ by more than the sum of their standard deviations."""
    return abs(a["mean"] - b["mean"]) > a["std"] + b["std"]


def _tally(outcomes: list[bool | None], means_better: list[bool]) -> str:
    """'XDLM's mean better in a of n settings (clearly in b), worse in c (clearly in d)'."""
    n = len(outcomes)
    return (f"XDLM's mean better in {sum(means_better)} of {n} (clearly in {outcomes.count(True)}), worse in "
            f"{n - sum(means_better)} (clearly in {outcomes.count(False)})")


def _compare(better: list[bool | None]) -> str:
    """Verdict from per-setting outcomes: True = XDLM clearly better, False = clearly worse, None = within noise."""
    wins, losses = better.count(True), better.count(False)
    if wins > len(better) / 2 and losses == 0:
        return "supports"
    if losses > len(better) / 2 and wins == 0:
        return "contradicts"
    return "cannot decide"


def _outcome(x: dict, y: dict) -> bool | None:
    """True when statistic x is clearly lower (better) than y, False when clearly higher, None within seed noise."""
    return (x["mean"] < y["mean"]) if _separated(x, y) else None


def verdicts(results: dict) -> list[dict]:
    """The paper's claims against this run: [{claim, paper, ours, verdict}], verdict one of supports / contradicts /
    cannot decide. A difference counts only when the means are further apart than the sum of the seed stds."""
    summary = {float(k): r for k, r in results["text"]["summary"].items()}
    if not {0.0, 0.1, 1.0} <= summary.keys():
        return []
    m, x, u = (summary[k]["ppl_bound"] for k in (0.0, 0.1, 1.0))
    out = []
    closer_to_mdlm = x["mean"] - m["mean"] < u["mean"] - x["mean"]
    ahead = _outcome(x, u)
    out.append(dict(claim="likelihood", paper=PAPER["likelihood"],
                    ours=f"PPL bound MDLM {fmt(m)}, XDLM k1=0.1 {fmt(x)}, UDLM {fmt(u)}: XDLM is "
                         f"{x['mean'] - m['mean']:+.2f} from MDLM and {x['mean'] - u['mean']:+.2f} from UDLM.",
                    verdict="supports" if ahead and closer_to_mdlm else
                    "contradicts" if ahead is False or (ahead and not closer_to_mdlm) else "cannot decide"))
    out.append(dict(claim="zero-shot PPL", paper=PAPER["zero-shot PPL"],
                    ours=f"PPL bound UDLM - XDLM k1=0.1 = {u['mean'] - x['mean']:+.2f} (validation characters; the "
                         "size is not comparable with the paper's word-level points, only the sign).",
                    verdict={True: "supports", False: "contradicts", None: "cannot decide"}[ahead]))
    few = [n for n in results["settings"]["gen_steps"] if n <= 16]
    settings = [(sampler, n) for sampler in SAMPLERS for n in few]
    dominated = []
    for sampler, n in settings:
        point = (x, summary[0.1]["gen"][sampler][str(n)]["gen_ppl"])
        dominated.append(any(_outcome(r["ppl_bound"], point[0]) and _outcome(r["gen"][sampler][str(n)]["gen_ppl"],
                                                                             point[1])
                             for k, r in summary.items() if k != 0.1))
    out.append(dict(claim="sweet spot", paper=PAPER["sweet spot"],
                    ours=f"k1 = 0.1 is clearly beaten in both PPL bound and Gen-PPL by another k1 in "
                         f"{sum(dominated)} of {len(settings)} few-step settings ({', '.join(map(str, few))} steps, "
                         "both samplers); the sweep's best bound is at k1 = "
                         f"{min(summary, key=lambda k: summary[k]['ppl_bound']['mean']):g}.",
                    verdict="contradicts" if sum(dominated) > len(settings) / 2 else
                    "cannot decide" if any(dominated) else "supports"))
    gen = [_outcome(summary[0.1]["gen"][s][str(n)]["gen_ppl"], summary[0.0]["gen"][s][str(n)]["gen_ppl"])
           for s, n in settings]
    cells = "; ".join(f"{s} {n}: {summary[0.1]['gen'][s][str(n)]['gen_ppl']['mean']:.1f} vs "
                      f"{summary[0.0]['gen'][s][str(n)]['gen_ppl']['mean']:.1f}" for s, n in settings)
    out.append(dict(claim="few-step generation", paper=PAPER["few-step generation"],
                    ours=f"Gen-PPL XDLM k1=0.1 vs MDLM ({cells}): " + _tally(gen, [
                        summary[0.1]["gen"][s][str(n)]["gen_ppl"]["mean"] < summary[0.0]["gen"][s][str(n)]["gen_ppl"]
                        ["mean"] for s, n in settings]) + ".", verdict=_compare(gen)))
    if results.get("digits"):
        digits = {float(k): r for k, r in results["digits"]["summary"].items()}
        if {0.0, 0.1} <= digits.keys():
            steps = results["settings"]["fid_steps"]
            fid = [_outcome(digits[0.1]["fid"][str(n)], digits[0.0]["fid"][str(n)]) for n in steps]
            cells = "; ".join(f"{n} steps {fmt(digits[0.1]['fid'][str(n)], 1)} vs {fmt(digits[0.0]['fid'][str(n)], 1)}"
                              for n in steps)
            means = [digits[0.1]["fid"][str(n)]["mean"] < digits[0.0]["fid"][str(n)]["mean"] for n in steps]
            out.append(dict(claim="images", paper=PAPER["images"],
                            ours=f"digits FID XDLM k1=0.1 vs MDLM: {cells}; " + _tally(fid, means) + ".",
                            verdict=_compare(fid)))
    return out


def reading(results: dict) -> list[str]:
    """Plain statements of what the measured numbers show, claim by claim (a difference counts only when the means
    are further apart than the sum of the seed standard deviations)."""
    summary = {float(k): r for k, r in results["text"]["summary"].items()}
    steps = results["settings"]["gen_steps"]
    out = ["- (no MDLM run: the context gate is not measured)"]
    if 0.0 in summary:
        gate = results["text"]["gate"]
        out = [f"- Context gate: MDLM's PPL bound is {abs(gate):.0%} {'below' if gate >= 0 else 'above'} the unigram "
               f"baseline ({summary[0.0]['ppl_bound']['mean']:.2f} vs {results['text']['unigram_ppl']:.2f}): "
               + ("passed (at least 30%), the models use context." if gate >= 0.3 else
                  "FAILED (less than 30%): the models have learnt too little context for the comparison to mean "
                  "much.")]
    if {0.0, 0.1, 1.0} <= summary.keys():
        m, x, u = (summary[k]["ppl_bound"] for k in (0.0, 0.1, 1.0))
        out.append(f"- Likelihood: PPL bound MDLM {fmt(m)}, XDLM k1=0.1 {fmt(x)}, UDLM {fmt(u)}. XDLM vs UDLM: "
                   + ("XDLM better (supports the paper)" if _separated(x, u) and x["mean"] < u["mean"] else
                      "UDLM better (contradicts the paper)" if _separated(x, u) else "within seed noise (undecided)")
                   + f"; XDLM's gap to MDLM is {x['mean'] - m['mean']:+.2f}, its gap to UDLM "
                   f"{x['mean'] - u['mean']:+.2f}.")
    for sampler in SAMPLERS:
        for n in steps:
            g = {k: r["gen"][sampler][str(n)]["gen_ppl"] for k, r in summary.items()}
            order = " < ".join(f"{label(k)} {k:g} {v['mean']:.1f}" for k, v in sorted(g.items(),
                                                                                   key=lambda kv: kv[1]["mean"]))
            verdict = ""
            if 0.0 in g and 0.1 in g:
                verdict = (" XDLM 0.1 vs MDLM: " + ("XDLM better" if g[0.1]["mean"] < g[0.0]["mean"] else "MDLM better")
                           + ("" if _separated(g[0.1], g[0.0]) else " (within seed noise)") + ".")
            out.append(f"- Gen-PPL, {sampler}, {n} steps (lower first): {order}.{verdict}")
    real = results["text"]["evaluator"]["real_text_entropy"]
    for sampler in SAMPLERS:
        h = [r["gen"][sampler][str(steps[-1])]["entropy"]["mean"] for r in summary.values()]
        out.append(f"- Entropy at {steps[-1]} steps, {sampler}: {min(h):.2f} to {max(h):.2f} nats across k1 (real "
                   f"text {real:.2f}).")
    if results.get("digits"):
        for n in results["settings"]["fid_steps"]:
            f = {float(k): r["fid"][str(n)] for k, r in results["digits"]["summary"].items()}
            order = " < ".join(f"{label(k)} {k:g} {v['mean']:.1f}" for k, v in sorted(f.items(),
                                                                                   key=lambda kv: kv[1]["mean"]))
            out.append(f"- Digits FID at {n} steps (lower first): {order}.")
    return out


# ---- the command ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """`xdlm reproduce-small`: train, evaluate and write the report; returns the results (as results.json)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes, 2 seeds, 3 k1 values: about a minute (CI)")
    parser.add_argument("--digits", action="store_true", help="also train digits models and report FID")
    parser.add_argument("--k1", type=float, nargs="+", default=None, help="mixing ratios (mode default; include 0 "
                        "for the context gate)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per k1: 0 .. N-1 (mode default)")
    parser.add_argument("--jobs", type=int, default=1, help="train / evaluate this many models at once")
    parser.add_argument("--work_dir", default=None, help="default outputs/reproduce_small_<mode>; finished runs "
                        "with identical recipes there are reused")
    parser.add_argument("--doc_dir", default=None, help="where small_scale.md and the plots go (default docs/; "
                        "smoke: the work dir)")
    parser.add_argument("--corpus", default=CORPUS, help="folder with train.jsonl and validation.jsonl")
    parser.add_argument("--report_only", action="store_true", help="rewrite small_scale.md and the plots from "
                        "<work_dir>/results.json of an earlier run: no training, no evaluation")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "full"
    cfg = dict(MODES[mode])
    k1s = cfg["k1s"] if args.k1 is None else args.k1
    seeds = list(range(cfg["seeds"] if args.seeds is None else args.seeds))
    if any(not 0.0 <= k <= 1.0 for k in k1s):
        parser.error(f"--k1 values must lie in [0, 1]; got {k1s}.")
    if not seeds or args.jobs < 1:
        parser.error(f"--seeds ({len(seeds)}) and --jobs ({args.jobs}) must be at least 1.")
    if not all(os.path.isfile(os.path.join(args.corpus, f"{split}.jsonl")) for split in ("train", "validation")):
        parser.error(f"{args.corpus} lacks train.jsonl / validation.jsonl: run from the repository root or pass "
                     "--corpus.")
    work = os.path.abspath(args.work_dir or os.path.join("outputs", f"reproduce_small_{mode}"))
    doc_dir = args.doc_dir or (work if args.smoke else "docs")
    os.makedirs(doc_dir, exist_ok=True)
    if args.report_only:
        path = os.path.join(work, "results.json")
        if not os.path.isfile(path):
            parser.error(f"--report_only needs {path}: run without it first (or pass that run's --work_dir).")
        with open(path) as f:
            results = json.load(f)
        results["reading"], results["verdicts"] = reading(results), verdicts(results)
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
        write_report(results, doc_dir)
        print(f"wrote {os.path.join(doc_dir, 'small_scale.md')} and its plots from {path}")
        return results
    os.makedirs(work, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = phase_start = time.time()
    phases, loads = {}, []

    def log(msg: str) -> None:
        loads.append(os.getloadavg()[0])
        print(f"[{(time.time() - start) / 60:5.1f} min] {msg}", flush=True)

    def phase(name: str) -> None:
        nonlocal phase_start
        phases[name] = (time.time() - phase_start) / 60
        phase_start = time.time()

    command = " ".join([prog or "xdlm reproduce-small", *(sys.argv[1:] if argv is None else argv)])
    block = cfg["text"]["block"]
    settings = dict(cfg, mode=mode, k1s=k1s, seeds=len(seeds), seed_list=seeds, block=block, command=command,
                    jobs=args.jobs, machine=f"{platform.machine()} CPU, {os.cpu_count()} cores, torch "
                                            f"{torch.__version__}",
                    date=time.strftime("%Y-%m-%d", time.gmtime()), load_start=os.getloadavg()[0])
    text_data = prepare_chars(os.path.abspath(args.corpus), os.path.join(work, "chars"))
    runs = {"evaluator_ar": recipe(cfg["text"] | cfg["evaluator"], "evaluator_ar", "ar", None, work, text_data,
                                   block, seeds[0], keep_best=True)}
    runs.update({run_name(k1, s): recipe(cfg["text"], run_name(k1, s), *objective_for(k1), work, text_data, block, s)
                 for k1 in k1s for s in seeds})
    if args.digits:
        digits_data = prepare_digits(os.path.join(work, "digits16"))
        runs.update({run_name(k1, s, "digits_"): recipe(cfg["digits"], run_name(k1, s, "digits_"),
                                                        *objective_for(k1), work, digits_data, 65, s)
                     for k1 in k1s for s in seeds})
    metrics = train_all(runs, args.jobs, log)
    settings["load_training"] = statistics.fmean(loads) if loads else os.getloadavg()[0]
    phase("training")

    tokenizer = build_char_tokenizer()
    val_texts = perplexity.load_texts(text_data["validation"])
    train_texts = perplexity.load_texts(text_data["train"])
    blocks = perplexity.text_blocks(val_texts, tokenizer, block, cfg["eval_blocks"])
    evaluator, _ = load_checkpoint(os.path.join(work, "evaluator_ar"))
    curve = metrics["evaluator_ar"]["curve"]
    train_blocks = perplexity.text_blocks(train_texts, tokenizer, block)
    text = dict(
        unigram_ppl=perplexity.unigram_ppl(train_blocks, blocks, len(tokenizer)), tokens=blocks.numel(),
        vocab=len(tokenizer), train_chars=sum(map(len, train_texts)), validation_chars=sum(map(len, val_texts)),
        params=sum(p.numel() for p in evaluator.parameters()),
        evaluator=dict(val_ppl=math.exp(metrics["evaluator_ar"]["nelbo_after"]), curve=curve,
                       best_step=min(curve, key=lambda c: c[1])[0],
                       train_seconds=metrics["evaluator_ar"]["train_seconds"],
                       real_text_gen_ppl=gen_ppl.gen_ppl(evaluator, tokenizer, val_texts[:200]),
                       real_text_entropy=gen_ppl.unigram_entropy(blocks)))
    common = dict(evaluator=os.path.join(work, "evaluator_ar"), validation=text_data["validation"], block=block,
                  eval_blocks=cfg["eval_blocks"], mc_num=cfg["mc_num"], gen_steps=cfg["gen_steps"],
                  gen_samples=cfg["gen_samples"])
    names = [run_name(k1, s) for k1 in k1s for s in seeds]
    evaluated = evaluate_all(evaluate_text_model, {n: dict(common, model=os.path.join(work, n)) for n in names},
                             args.jobs, log)
    text["runs"] = {n: dict(evaluated[n], k1=k1, seed=s, train_seconds=metrics[n]["train_seconds"],
                            train_loss=metrics[n]["train_loss"], curve=metrics[n]["curve"])
                    for n, (k1, s) in zip(names, [(k1, s) for k1 in k1s for s in seeds])}
    text["summary"] = summarize_text(text["runs"], k1s, seeds, cfg["gen_steps"])
    text["curves"] = {str(k1): [metrics[run_name(k1, s)]["curve"] for s in seeds] for k1 in k1s}
    if "0.0" in text["summary"]:
        text["gate"] = 1 - text["summary"]["0.0"]["ppl_bound"]["mean"] / text["unigram_ppl"]
    results = dict(settings=settings, text=text)
    phase("text evaluation")
    if args.digits:
        names = [run_name(k1, s, "digits_") for k1 in k1s for s in seeds]
        job = dict(fid_steps=cfg["fid_steps"], fid_samples=cfg["fid_samples"])
        evaluated = evaluate_all(evaluate_digits_model, {n: dict(job, model=os.path.join(work, n)) for n in names},
                                 args.jobs, log)
        digit_runs = {n: dict(evaluated[n], k1=k1, seed=s, train_seconds=metrics[n]["train_seconds"],
                              nelbo_after=metrics[n]["nelbo_after"], curve=metrics[n]["curve"])
                      for n, (k1, s) in zip(names, [(k1, s) for k1 in k1s for s in seeds])}
        results["digits"] = dict(runs=digit_runs, summary=summarize_digits(digit_runs, k1s, seeds, cfg["fid_steps"]),
                                 curves={str(k1): [metrics[run_name(k1, s, "digits_")]["curve"] for s in seeds]
                                         for k1 in k1s})
        phase("digits evaluation")
    settings["minutes"] = (time.time() - start) / 60
    settings["phase_minutes"] = phases
    settings["reused"] = [name for name, m in metrics.items() if m.get("reused")]
    settings["load_end"] = os.getloadavg()[0]  # 1-minute load, this run included
    results["reading"], results["verdicts"] = reading(results), verdicts(results)
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    write_report(results, doc_dir)
    log(f"wrote {os.path.join(doc_dir, 'small_scale.md')} and its plots")
    return results


def write_report(results: dict, doc_dir: str) -> None:
    """small_scale.md and its plots in doc_dir."""
    pngs = dict(pareto="small_scale_pareto.png", dynamics="small_scale_dynamics.png", fid="small_scale_fid.png")
    plot_pareto(results, os.path.join(doc_dir, pngs["pareto"]))
    plot_dynamics(results, os.path.join(doc_dir, pngs["dynamics"]))
    if results.get("digits"):
        plot_fid(results, os.path.join(doc_dir, pngs["fid"]))
    with open(os.path.join(doc_dir, "small_scale.md"), "w") as f:
        f.write(markdown(results, pngs))
