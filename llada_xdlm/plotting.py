"""Render a generate() trajectory like the XDLM paper's figure: one line per step, one cell per generated token,
green = filled from the mask, blue = refined (rewritten), red = re-masked, grey = still masked.

    xdlm plot-trajectory --model PATH --prompt "Question: ..." --k1 0.1 --steps 16 --out traj
    xdlm plot-trajectory --demo --out docs/trajectory --temperature 1 --steps 6 --gen_length 18

Writes OUT.html (token text, hover for the token id) and OUT.png (matplotlib).
"""

import argparse
import html
from pathlib import Path

import torch

FILLED, REFINED, REMASKED, MASKED, KEPT = "#2e9d4a", "#2f6fd0", "#d23a3a", "#d9d9d9", "#ffffff"


def _cells(trajectory, tokenizer, row):
    """Per step, per position: (text, colour). Text is the token after the step ('[M]' for a mask)."""
    tokens = trajectory.tokens[:, row]  # [S + 1, G]
    marks = [(trajectory.filled, FILLED), (trajectory.refined, REFINED), (trajectory.remasked, REMASKED)]
    lines = []
    for s in range(tokens.shape[0] - 1):
        line = []
        for g, tok in enumerate(tokens[s + 1].tolist()):
            colour = MASKED if tok == trajectory.mask_id else KEPT
            for mark, c in marks:
                if mark[s, row, g]:
                    colour = c
            text = "[M]" if tok == trajectory.mask_id else tokenizer.decode([tok]).strip() or "\u2423"
            line.append((text, tok, colour))
        lines.append(line)
    return lines


def write_html(lines, path: Path) -> Path:
    legend = "".join(f'<span style="background:{c};color:#fff;padding:2px 6px;margin-right:6px">{n}</span>'
                     for n, c in [("filled", FILLED), ("refined", REFINED), ("re-masked", REMASKED)])
    rows = []
    for s, line in enumerate(lines):
        cells = "".join(
            f'<span title="id {tok}" style="background:{c};color:{"#333" if c in (MASKED, KEPT) else "#fff"};'
            f'padding:1px 3px;margin:1px;border-radius:3px;display:inline-block">{html.escape(text)}</span>'
            for text, tok, c in line)
        label = f'<b style="display:inline-block;width:4em">step {s + 1}</b>'
        rows.append(f'<div style="margin:2px 0">{label}{cells}</div>')
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>generation trajectory</title></head>"
                    f"<body style='font-family:monospace;font-size:13px'><p>{legend}</p>{''.join(rows)}</body></html>")
    return path


def write_png(lines, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    S, G = len(lines), len(lines[0])
    width = max(len(text) for line in lines for text, _, _ in line)
    cw = 0.11 * max(width, 3) + 0.15  # inches per cell
    fig, ax = plt.subplots(figsize=(min(cw * G + 1.2, 40), 0.32 * S + 0.9))
    for s, line in enumerate(lines):
        for g, (text, _, c) in enumerate(line):
            ax.add_patch(Rectangle((g, S - 1 - s), 0.96, 0.9, color=c, ec="#bbbbbb", lw=0.4))
            ax.text(g + 0.48, S - 0.55 - s, text, ha="center", va="center", fontsize=7, family="monospace",
                    color="#fff" if c in (FILLED, REFINED, REMASKED) else "#333")
    ax.set_xlim(0, G)
    ax.set_ylim(0, S)
    ax.set_yticks([S - 0.55 - s for s in range(S)], [f"step {s + 1}" for s in range(S)], fontsize=7)
    ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    ax.legend(handles=[Patch(color=FILLED, label="filled"), Patch(color=REFINED, label="refined"),
                       Patch(color=REMASKED, label="re-masked")], loc="lower center", bbox_to_anchor=(0.5, 1.0),
              ncol=3, fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_trajectory(trajectory, tokenizer, out_prefix, row: int = 0) -> tuple[Path, Path]:
    """Write OUT.html and OUT.png for one batch row of a llada_xdlm.Trajectory; returns both paths."""
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    lines = _cells(trajectory, tokenizer, row)
    return write_html(lines, out_prefix.with_suffix(".html")), write_png(lines, out_prefix.with_suffix(".png"))


DEMO_TEXT = ("Diffusion language models draft every token at once, then refine the draft step by step until the text "
             "reads well.")


def _demo_model():
    """A tiny LLaDA (d 64, 2 layers, word-level tokens) trained with the XDLM loss (k1 = 0.3) to denoise DEMO_TEXT:
    it learns to fill masks and to spot wrong tokens, so the sampler's refinement has something to do."""
    import textwrap

    from .diffusion import forward_process, sample_t, xdlm_loss
    from .modeling import LLaDAConfig, LLaDAModelLM
    from .tokenization import build_tokenizer

    texts = [" ".join(p.split()) for p in (textwrap.__doc__, argparse.__doc__, html.__doc__) if p]
    tokenizer = build_tokenizer(texts * 4 + [DEMO_TEXT] * 8, vocab_size=700)
    V, k1 = len(tokenizer), 0.3
    config = LLaDAConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=128, vocab_size=V,
                         embedding_size=V, max_sequence_length=128, mask_token_id=tokenizer.mask_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, k1=k1)
    torch.manual_seed(0)
    model = LLaDAModelLM(config)
    batch = tokenizer(DEMO_TEXT, return_tensors="pt")["input_ids"].expand(16, -1)  # [16, 22]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(800):
        alpha = 1 - sample_t(16)  # linear schedule
        noisy = forward_process(batch, alpha, k1, config.mask_token_id, V)
        loss = xdlm_loss(model(noisy).logits, noisy, batch, alpha, k1, config.mask_token_id).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tokenizer, batch[0, :4]


def main(argv: list[str] | None = None, prog: str | None = None) -> tuple[Path, Path]:
    """`xdlm plot-trajectory`: sample once with the trajectory recorded and draw it; returns the two files."""
    from .checkpoint import load_checkpoint
    from .sampling import add_sampler_arguments, generate, sampler_config_from_arguments

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="path of a saved LLaDA model + tokenizer")
    parser.add_argument("--demo", action="store_true",
                        help="a tiny model trained on the spot (minutes) instead of --model")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--out", default="trajectory", help="output prefix: writes OUT.html and OUT.png")
    add_sampler_arguments(parser, steps=16, gen_length=24)
    args = parser.parse_args(argv)
    if args.demo == bool(args.model):
        parser.error("give exactly one of --model PATH or --demo")

    if args.demo:
        model, tokenizer, prompt = _demo_model()
        input_ids = prompt[None]
    else:
        model, tokenizer = load_checkpoint(args.model)
        input_ids = tokenizer(args.prompt, return_tensors="pt")["input_ids"]
    config = sampler_config_from_arguments(parser, args, model.config)
    out = generate(model, input_ids, config=config, generator=torch.Generator().manual_seed(0),
                   return_trajectory=True)
    paths = plot_trajectory(out.trajectory, tokenizer, args.out)
    for path in paths:
        print(f"wrote {path}")
    return paths
