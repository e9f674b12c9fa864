"""GPU acceptance: one command that measures what CPUs cannot show and judges it against fixed thresholds.

    xdlm check-gpu OUT_DIR            # LLaDA-8B shapes on a CUDA GPU (estimated 3-4 minutes, H200)
    xdlm check-gpu OUT_DIR --tiny     # the same code at toy shapes (CPU: a minute or two)

Five independent sections; an error in one is recorded as its FAIL and the others still run:
1. model numerics: bf16 logits (sdpa, and flash-attn when importable) against float32 on the same random weights,
   at LLaDA-8B width with a few layers; left-padded rows against the same rows unpadded.
2. fused loss at LLaDA-8B's head: fused_linear_xdlm_loss against xdlm_loss(hidden @ W.T) in bf16, forward +
   backward: agreement of loss and gradients, peak memory and time.
3. training: a ~1B-parameter LLaDA trained with XDLM (k1 = 0.1) on the shipped corpus through the real entry point,
   once under DeepSpeed ZeRO-3 and once without, from the same weights: the validation NELBO falls, the two give
   the same losses, tokens/s and peak memory.
4. sampling: generate() with LLaDA-8B's full shape in bf16 at the paper's setting, every mode in SAMPLER_MODES,
   batch 1 and 8: tokens/s and model forwards; batch-8 rows against batch 1 where the mode is deterministic.
5. environment: versions, the GPU, flash-attn, DeepSpeed's accelerator and ops.

Writes OUT_DIR/gpu_report.json and OUT_DIR/gpu_report.md (plus the training runs' logs), prints a one-screen summary
on stdout (progress and libraries' output go to stderr) and exits 1 when any check fails. Thresholds and the time
budget are explained in docs/gpu.md.
"""

import argparse
import contextlib
import datetime
import gc
import glob
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import yaml

from .diffusion import forward_process, xdlm_loss
from .modeling import LLaDAConfig, LLaDAModelLM
from .ops import fused_linear_xdlm_loss
from .sampling import generate

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "stdlib_docs"
DEEPSPEED_CONFIGS = {"cuda": REPO / "recipes" / "accelerate" / "ds_zero3.json",
                     "cpu": REPO / "recipes" / "accelerate" / "ds_zero3_cpu_test.json"}

# Thresholds (docs/gpu.md says why). Relative errors are max |got - want| / max |want| over the whole tensor.
BF16_LOGITS_RTOL = 5e-2  # bf16 against float32 logits, and bf16 padded against unpadded rows (4 random layers)
FUSED_RTOL = 2e-2  # fused against unfused loss and gradients, both bf16
FLOAT32_PADDING_RTOL = 1e-4  # float32 padded against unpadded rows (rotary positions shift by the padding)
FUSED_MEMORY_RATIO = 0.25  # fused / unfused peak memory above the inputs
FUSED_TIME_RATIO = 1.2  # fused / unfused time: no more than 20% slower
TRAINING_LOSS_RTOL = 1e-2  # ZeRO-3 against plain per-step training loss
TRAINING_TIMEOUT_S = 240  # one training process, start-up to exit (estimated 45-60 s at full shapes); DeepSpeed's
# JIT-built ops are built before it starts (build_deepspeed_ops), so the limit covers training only


@dataclass(frozen=True)
class SamplerMode:
    """One way of calling generate(): its keyword arguments, and whether the same prompt always gives the same
    tokens (then a row of a batch is compared with that row generated alone)."""

    name: str
    kwargs: dict
    deterministic: bool


# Every sampler mode generate() offers; section 4 times each one. Add a row for every new mode.
SAMPLER_MODES = (
    SamplerMode("remask k1=0", dict(sampler="remask", k1=0.0), deterministic=True),
    SamplerMode("remask k1=0.1", dict(sampler="remask", k1=0.1), deterministic=True),
    SamplerMode("ancestral k1=0", dict(sampler="ancestral", k1=0.0), deterministic=False),
    SamplerMode("ancestral k1=0.1", dict(sampler="ancestral", k1=0.1), deterministic=False),
)


@dataclass(frozen=True)
class Shapes:
    """Every size a run uses. FULL is what the thresholds are set for; TINY runs the same code in seconds."""

    model: dict  # LLaDAConfig keys of the random-weight model of sections 1, 2 (its head) and 4; {} = LLaDA-8B
    numerics_layers: int
    numerics_batch: int
    numerics_length: int
    numerics_padding: int
    loss_tokens: int
    loss_repeats: int
    train_model: dict  # LLaDAConfig keys of the model trained in section 3 (vocabulary from its tokenizer)
    train_vocab: int
    train_block: int
    train_batch: int
    train_steps: int
    train_lr: float
    prompt_length: int
    gen_length: int
    block_length: int
    sample_steps: int
    sample_batches: tuple[int, int]


FULL = Shapes(
    model={},
    numerics_layers=4, numerics_batch=2, numerics_length=512, numerics_padding=64,
    loss_tokens=8192, loss_repeats=3,
    train_model=dict(d_model=2048, n_heads=16, mlp_hidden_size=5632, n_layers=20, max_sequence_length=512),
    train_vocab=2048, train_block=512, train_batch=16, train_steps=30, train_lr=5e-4,
    prompt_length=512, gen_length=256, block_length=256, sample_steps=32, sample_batches=(1, 8),
)
TINY = Shapes(
    model=dict(d_model=64, n_heads=4, mlp_hidden_size=192, n_layers=2, vocab_size=512, embedding_size=512,
               mask_token_id=511, bos_token_id=509, eos_token_id=510, pad_token_id=510, max_sequence_length=128),
    numerics_layers=2, numerics_batch=2, numerics_length=32, numerics_padding=8,
    loss_tokens=256, loss_repeats=2,
    train_model=dict(d_model=64, n_heads=4, mlp_hidden_size=128, n_layers=2, max_sequence_length=64),
    train_vocab=512, train_block=64, train_batch=8, train_steps=8, train_lr=3e-3,
    prompt_length=16, gen_length=16, block_length=16, sample_steps=4, sample_batches=(1, 8),
)


# ---- the report --------------------------------------------------------------------------------------------------


@dataclass
class Check:
    """One line of the verdict: PASS / FAIL against `threshold`, or INFO (measured, not judged)."""

    name: str
    shown: str  # the value as printed
    status: str
    threshold: str = ""
    value: float | None = None


@dataclass
class Section:
    """What a section measured, filled in as it goes, so an error keeps everything recorded before it."""

    number: int
    title: str
    shape: str = ""
    checks: list[Check] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def judge(self, name: str, value: float, limit: float, shown: str | None = None, judged: bool = True):
        """PASS when value <= limit (NaN fails); INFO with the threshold shown when not judged at these shapes."""
        shown = f"{value:.3g}" if shown is None else shown
        status = ("PASS" if value <= limit else "FAIL") if judged else "INFO"
        threshold = f"<= {limit:g}" + ("" if judged else " (full shapes)")
        self.checks.append(Check(name, shown, status, threshold, float(value)))

    def require(self, name: str, ok: bool, shown: str, judged: bool = True):
        """PASS when ok; INFO when not judged in this run (e.g. a GPU requirement in a --tiny run on CPU)."""
        self.checks.append(Check(name, shown, ("PASS" if ok else "FAIL") if judged else "INFO",
                                 "required" + ("" if judged else " (full shapes)")))

    def info(self, name: str, shown: str, value: float | None = None):
        self.checks.append(Check(name, shown, "INFO", "", value))

    @property
    def status(self) -> str:
        return "FAIL" if self.error or any(c.status == "FAIL" for c in self.checks) else "PASS"


def max_relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| in float32: the error on the scale of the tensor (near-zero entries of a
    tensor make element-wise relative errors meaningless)."""
    want = want.float()
    return float((got.float() - want).abs().max() / want.abs().max())


def gib(n_bytes: float | None) -> str:
    return "n/a on CPU" if n_bytes is None else f"{n_bytes / 2**30:.2f} GiB"


def write_reports(out_dir: Path, header: dict, sections: list[Section]) -> None:
    report = {**header, "status": verdict(sections), "sections": [{**asdict(s), "status": s.status} for s in sections]}
    (out_dir / "gpu_report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# GPU acceptance report", ""]
    lines += [f"- {key}: {value}" for key, value in header.items() if key != "machine"]
    lines += [f"- machine: {header['machine']}", f"- verdict: **{verdict(sections)}**", ""]
    for s in sections:
        lines += [f"## {s.number}. {s.title}: {s.status} ({s.seconds:.1f} s)", ""]
        lines += [f"Shape: {s.shape or 'not reached'}", ""]
        lines += ["| check | value | threshold | status |", "| --- | --- | --- | --- |"]
        lines += [f"| {c.name} | {c.shown} | {c.threshold} | {c.status} |" for c in s.checks]
        if s.error:
            lines += ["", "Error:", "", "```", s.error.rstrip(), "```"]
        lines.append("")
    (out_dir / "gpu_report.md").write_text("\n".join(lines))


def summary(header: dict, sections: list[Section], out_dir: Path) -> str:
    """One screen: a line per section and per check."""
    lines = [f"GPU acceptance ({header['shapes']} shapes on {header['device']}): {verdict(sections)}   "
             f"[{header['seconds']:.0f} s; {out_dir / 'gpu_report.md'}]"]
    for s in sections:
        lines.append(f"{s.status:4s}  {s.number} {s.title} ({s.seconds:.1f} s): {s.shape or 'not reached'}")
        for c in s.checks:
            lines.append(f"  {c.status:4s}  {c.name:46s} {c.shown:>18s}  {c.threshold}")
        if s.error:
            lines.append(f"  FAIL  error: {s.error.strip().splitlines()[-1][:100]}")
    return "\n".join(lines)


def verdict(sections: list[Section]) -> str:
    return "FAIL" if any(s.status == "FAIL" for s in sections) else "PASS"


# ---- helpers -----------------------------------------------------------------------------------------------------


def llada_config(shapes: Shapes, **overrides) -> LLaDAConfig:
    return LLaDAConfig(**{**shapes.model, **overrides})


def random_model(config: LLaDAConfig, dtype: torch.dtype, device: torch.device, seed: int = 0) -> LLaDAModelLM:
    """LLaDA with random weights (init_std 0.02), built directly on the device (an 8B model never sits on the CPU)."""
    torch.manual_seed(seed)
    with torch.device(device):
        return LLaDAModelLM._from_config(config, dtype=dtype, attn_implementation="sdpa").eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """(seconds, fn()) with the device's queue drained on both sides."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def reset_peak_memory(device: torch.device) -> int | None:
    """Start a peak-memory window: the bytes allocated now (None on CPU, which keeps no such count)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def peak_memory_since(device: torch.device, base: int | None) -> int | None:
    """Peak bytes allocated above `base` since reset_peak_memory."""
    if base is None:
        return None
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def flash_attn_importable() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:  # not installed, or built against another torch / CUDA
        return False
    return True


# ---- 1. model numerics -------------------------------------------------------------------------------------------


def check_model_numerics(section: Section, shapes: Shapes, device: torch.device, tiny: bool) -> None:
    config = llada_config(shapes, n_layers=shapes.numerics_layers)
    B, L, P = shapes.numerics_batch, shapes.numerics_length, shapes.numerics_padding
    section.shape = (f"batch {B} x {L} tokens (+{P} left padding), d_model {config.d_model}, {config.n_heads} heads, "
                     f"mlp {config.mlp_hidden_size}, {config.n_layers} layers, V {config.embedding_size}")
    # Weights rounded to bf16 values (as in LLaDA-8B's checkpoint): the float32 reference then computes on exactly
    # the weights the bf16 run uses, and the difference is bf16 arithmetic alone.
    model = random_model(config, torch.float32, device).to(torch.bfloat16).float()
    generator = torch.Generator(device).manual_seed(1)
    ids = torch.randint(0, config.mask_token_id, (B, L), generator=generator, device=device)
    padded_ids = torch.cat([ids.new_full((B, P), config.pad_token_id), ids], dim=1)  # [B, P + L]
    padding_mask = torch.cat([torch.zeros_like(ids[:, :P]), torch.ones_like(ids)], dim=1)

    def logits(model):
        """(unpadded logits [B, L, V], the same rows left-padded [B, L, V])."""
        with torch.no_grad():
            return model(ids).logits, model(padded_ids, attention_mask=padding_mask).logits[:, P:]

    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # a float32 reference: no TF32
    try:
        reference, padded = logits(model)
    finally:
        torch.set_float32_matmul_precision(precision)
    section.judge("float32 sdpa: padded vs unpadded rows", max_relative_error(padded, reference), FLOAT32_PADDING_RTOL)
    del padded

    model.to(torch.bfloat16)
    implementations = ["sdpa"]
    if device.type == "cuda" and flash_attn_importable():
        implementations.append("flash_attention_2")
    else:
        section.info("flash-attn", "not importable" if device.type == "cuda" else "CUDA only")
    for implementation in implementations:
        model.set_attn_implementation(implementation)
        got, padded = logits(model)
        name = implementation.replace("_attention_2", "-attn")
        section.judge(f"bf16 {name} logits vs float32", max_relative_error(got, reference), BF16_LOGITS_RTOL)
        section.judge(f"bf16 {name}: padded vs unpadded rows", max_relative_error(padded, got), BF16_LOGITS_RTOL)
        del got, padded


# ---- 2. fused loss at the 8B head --------------------------------------------------------------------------------


def loss_forward_backward(loss_fn, hidden: torch.Tensor, weight: torch.Tensor):
    """loss_fn(hidden, weight).mean().backward(): (per-token loss [N], d/d hidden [N, D], d/d weight [V, D])."""
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    loss = loss_fn(hidden, weight)
    loss.mean().backward()
    return loss.detach(), hidden.grad, weight.grad


def check_fused_loss(section: Section, shapes: Shapes, device: torch.device, tiny: bool) -> None:
    config = llada_config(shapes)
    N, D, V, k1, mask_id = shapes.loss_tokens, config.d_model, config.embedding_size, 0.1, config.mask_token_id
    section.shape = f"N {N} tokens, D {D}, V {V}, bf16, k1 {k1}, forward + backward (grads of hidden and weight)"
    generator = torch.Generator(device).manual_seed(2)
    hidden = torch.randn(N, D, generator=generator, device=device).to(torch.bfloat16)  # unit RMS, as after ln_f
    weight = (torch.randn(V, D, generator=generator, device=device) * config.init_std).to(torch.bfloat16)
    clean = torch.randint(0, mask_id, (N,), generator=generator, device=device)
    sequence = min(N, 512)  # one t per sequence, as in training
    alpha = (torch.rand(-(-N // sequence), generator=generator, device=device) * 0.98 + 0.01)
    alpha = alpha.repeat_interleave(sequence)[:N]
    noisy = forward_process(clean[None], alpha[None], k1, mask_id, V, generator=generator)[0]

    def unfused(h, w):
        return xdlm_loss((h @ w.T)[None], noisy[None], clean[None], alpha[None], k1, mask_id)[0]  # [B=1, N, V] logits

    def fused(h, w):
        return fused_linear_xdlm_loss(h, w, noisy, clean, alpha, k1, mask_id)

    results = {}
    for name, loss_fn in (("unfused", unfused), ("fused", fused)):
        loss_forward_backward(loss_fn, hidden, weight)  # warm-up: kernels, allocator
        base = reset_peak_memory(device)
        out = loss_forward_backward(loss_fn, hidden, weight)
        peak = peak_memory_since(device, base)
        times = [timed(lambda: loss_forward_backward(loss_fn, hidden, weight), device)[0]
                 for _ in range(shapes.loss_repeats)]
        results[name] = out, peak, statistics.median(times)
        section.metrics[name] = {"peak_bytes": peak, "seconds": statistics.median(times), "times": times}
    (loss_u, grad_h_u, grad_w_u), peak_u, time_u = results["unfused"]
    (loss_f, grad_h_f, grad_w_f), peak_f, time_f = results["fused"]
    section.judge("fused vs unfused: per-token loss", max_relative_error(loss_f, loss_u), FUSED_RTOL)
    section.judge("fused vs unfused: grad of hidden", max_relative_error(grad_h_f, grad_h_u), FUSED_RTOL)
    section.judge("fused vs unfused: grad of LM-head weight", max_relative_error(grad_w_f, grad_w_u), FUSED_RTOL)
    if peak_u is None:
        section.info("peak memory fused / unfused", "n/a on CPU")
    else:
        section.judge("peak memory fused / unfused", peak_f / peak_u, FUSED_MEMORY_RATIO,
                      f"{peak_f / peak_u:.2f} ({gib(peak_f)} / {gib(peak_u)})", judged=not tiny)
    section.judge("time fused / unfused", time_f / time_u, FUSED_TIME_RATIO,
                  f"{time_f / time_u:.2f} ({time_f * 1e3:.0f} / {time_u * 1e3:.0f} ms)", judged=not tiny)


# ---- 3. training under ZeRO-3 and without ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def extensions_root() -> Path:
    """Where torch JIT-builds C++ extensions such as DeepSpeed's ops: TORCH_EXTENSIONS_DIR, else its default cache."""
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


def stale_build_locks(root: Path) -> list[Path]:
    """The build locks under `root` that no process on this machine holds open. torch's builder creates
    `<root>[/<python>_<device>]/<op>/lock`, keeps it open while it builds and deletes it after; a lock nobody holds
    was left by a build that was killed, and every later build of that op waits on it forever."""
    locks = sorted(root.glob("*/lock")) + sorted(root.glob("*/*/lock"))
    if not locks or not os.path.isdir("/proc"):  # without /proc no holder can be seen: assume a live build
        return []
    held = set()
    for fd in glob.glob("/proc/[0-9]*/fd/*"):
        with contextlib.suppress(OSError):  # a process that exited, or one we may not inspect
            held.add(os.readlink(fd))
    return [lock for lock in locks if str(lock.resolve()) not in held]


def build_deepspeed_ops() -> float:
    """Build (or load from the cache) the op DeepSpeed's ZeRO-3 communication JIT-compiles on its first use (on CPU
    its shared-memory collectives; nothing on CUDA), here and untimed: its first build takes minutes on a busy
    machine, and a training run killed during it would leave a stale lock. A stale lock already there is an error
    naming it and the command that removes it. Returns the seconds taken."""
    stale = stale_build_locks(extensions_root())
    if stale:
        raise RuntimeError(f"stale DeepSpeed build lock {', '.join(map(str, stale))} (no process holds it: a build "
                           f"was killed); every ZeRO-3 run would wait on it forever. If no other machine builds into "
                           f"this folder, remove it: rm {' '.join(shlex.quote(str(p)) for p in stale)}")
    from deepspeed.comm.torch import build_shm_op

    start = time.perf_counter()
    build_shm_op()
    return time.perf_counter() - start


def run_training_entry_point(recipe: str, result: str, log: str, environ: dict) -> None:
    """Child process: llada_xdlm.training.train.main([recipe]) as `xdlm train` runs it, output to `log`; writes its
    metrics, the process's peak GPU memory and whether DeepSpeed's communication was started to `result` (JSON)."""
    os.environ.update(environ)
    with open(log, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    from .training.train import main

    metrics = main([recipe])
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else None  # None: ran on the CPU
    # DeepSpeed's communication backend is created when its engine starts and outlives the process group, which
    # the entry point destroys before returning
    deepspeed = "deepspeed" in sys.modules and sys.modules["deepspeed"].comm.comm.cdb is not None
    Path(result).write_text(json.dumps({"metrics": metrics, "peak_bytes": peak, "deepspeed": deepspeed}))
    sys.stdout.flush()


def train_once(name: str, recipe: dict, work: Path, log: Path, environ: dict) -> dict:
    """Run one recipe in a fresh process (spawned: no CUDA or DeepSpeed state shared with this one). Returns
    {"metrics", "peak_bytes", "log_history"}; a failed run raises with the end of its log."""
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = work / f"{name}.json"
    process = multiprocessing.get_context("spawn").Process(
        target=run_training_entry_point, args=(str(path), str(result), str(log), environ))
    process.start()
    process.join(TRAINING_TIMEOUT_S)
    if process.is_alive():  # a hung collective must not eat the whole budget
        process.kill()
        process.join()
    if process.exitcode != 0 or not result.is_file():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:]) if log.is_file() else ""
        raise RuntimeError(f"the {name} training run exited with code {process.exitcode} (killed after "
                           f"{TRAINING_TIMEOUT_S} s if negative); end of {log}:\n{tail}")
    out = json.loads(result.read_text())
    out["log_history"] = json.loads((Path(recipe["output_dir"]) / "trainer_state.json").read_text())["log_history"]
    return out


def check_training(section: Section, shapes: Shapes, device: torch.device, tiny: bool, corpus: Path,
                   out_dir: Path) -> None:
    from transformers import TrainingArguments

    from .tokenization import build_tokenizer

    train_file, eval_file = corpus / "train.jsonl", corpus / "validation.jsonl"
    for path in (train_file, eval_file, DEEPSPEED_CONFIGS[device.type]):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run from a checkout of llada-xdlm (or pass --corpus).")
    texts = [json.loads(line)["text"] for line in train_file.read_text().splitlines() if line.strip()]
    tokenizer = build_tokenizer(texts, shapes.train_vocab)
    specials = {key: getattr(tokenizer, key)
                for key in ("mask_token_id", "bos_token_id", "eos_token_id", "pad_token_id")}
    config = LLaDAConfig(vocab_size=len(tokenizer), embedding_size=len(tokenizer), **specials, **shapes.train_model)
    work = Path(tempfile.mkdtemp(prefix="gpu_acceptance_train_"))
    try:
        model = random_model(config, torch.float32, device)  # both runs start from these weights
        n_params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(work / "init")
        tokenizer.save_pretrained(work / "init")
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the training processes get the whole GPU
        B, L, steps = shapes.train_batch, shapes.train_block, shapes.train_steps
        section.shape = (f"{n_params / 1e6:,.1f} M parameters (d_model {config.d_model}, {config.n_layers} layers, "
                         f"V {len(tokenizer)}), {steps} steps x {B} x {L} tokens, XDLM k1 0.1, fused loss, "
                         f"activation checkpointing, {'bf16' if device.type == 'cuda' else 'float32'}")
        # transformers renamed gradient_checkpointing; take the name this version has
        fields = TrainingArguments.__dataclass_fields__
        checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
        common = dict(
            model_name_or_path=str(work / "init"), dtype="float32", attn_implementation="sdpa",
            data_files=[str(train_file)], eval_data_files=[str(eval_file)], block_size=L, random_length_prob=0.0,
            objective="xdlm", k1=0.1, loss_implementation="fused",
            seed=0, max_steps=steps, per_device_train_batch_size=B, per_device_eval_batch_size=32,
            learning_rate=shapes.train_lr, warmup_steps=max(1, steps // 10), max_grad_norm=1.0,
            logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
            dataloader_num_workers=0, **{checkpointing: True},
            **(dict(bf16=True) if device.type == "cuda" else dict(use_cpu=True)),
        )
        base_env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        distributed = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(free_port()))
        section.info("DeepSpeed ops built (before the timed runs)", f"{build_deepspeed_ops():.1f} s")
        runs = {}
        for name, extra, environ in (
            ("zero3", dict(deepspeed=str(DEEPSPEED_CONFIGS[device.type]),
                           ddp_backend="nccl" if device.type == "cuda" else "gloo"), {**base_env, **distributed}),
            ("plain", {}, base_env),
        ):
            recipe = {**common, **extra, "output_dir": str(work / name)}
            start = time.perf_counter()
            runs[name] = train_once(name, recipe, work, out_dir / f"train_{name}.log", environ)
            seconds = time.perf_counter() - start
            history = runs[name]["log_history"]
            losses = [h["loss"] for h in history if "loss" in h]
            # trainer.train() evaluates once before the first step: its time is not training
            runtime = (next(h["train_runtime"] for h in history if "train_runtime" in h)
                       - next(h["eval_runtime"] for h in history if "eval_runtime" in h))
            metrics = runs[name]["metrics"]
            section.metrics[name] = {"losses": losses, "train_runtime": runtime, "process_seconds": seconds,
                                     "peak_bytes": runs[name]["peak_bytes"], **metrics}
            label = "ZeRO-3" if name == "zero3" else "plain"
            section.require(f"{label}: DeepSpeed {'on' if name == 'zero3' else 'off'}",
                            runs[name]["deepspeed"] == (name == "zero3"), "on" if runs[name]["deepspeed"] else "off")
            section.judge(f"{label}: validation NELBO falls", metrics["nelbo_after"] - metrics["nelbo_before"], 0.0,
                          f"{metrics['nelbo_before']:.3f} -> {metrics['nelbo_after']:.3f}")
            section.info(f"{label}: tokens/s (all steps, step 1 included)", f"{steps * B * L / runtime:,.0f}",
                         steps * B * L / runtime)
            section.info(f"{label}: peak memory", gib(runs[name]["peak_bytes"]), runs[name]["peak_bytes"])
        zero3, plain = section.metrics["zero3"]["losses"], section.metrics["plain"]["losses"]
        if len(zero3) != steps or len(plain) != steps:
            raise RuntimeError(f"expected {steps} logged losses per run, got {len(zero3)} (ZeRO-3) and "
                               f"{len(plain)} (plain)")
        worst = max(abs(a - b) / abs(b) for a, b in zip(zero3, plain))
        section.judge("ZeRO-3 vs plain loss, worst step (relative)", worst, TRAINING_LOSS_RTOL)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- 4. sampling -------------------------------------------------------------------------------------------------


def check_sampling(section: Section, shapes: Shapes, device: torch.device, tiny: bool) -> None:
    config = llada_config(shapes)
    P, G, steps = shapes.prompt_length, shapes.gen_length, shapes.sample_steps
    section.shape = (f"d_model {config.d_model}, {config.n_layers} layers, V {config.embedding_size}, bf16; "
                     f"prompt {P}, gen {G}, block {shapes.block_length}, {steps} steps (remask at temperature 0), batch "
                     f"{' and '.join(map(str, shapes.sample_batches))}")
    model = random_model(config, torch.bfloat16, device)
    forwards = []  # one entry per model forward
    model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    largest = max(shapes.sample_batches)
    prompts = torch.randint(0, config.mask_token_id, (largest, P), generator=torch.Generator(device).manual_seed(3),
                            device=device)
    common = dict(gen_length=G, block_length=shapes.block_length)
    for batch in shapes.sample_batches:  # warm-up: kernels and allocator at both shapes
        generate(model, prompts[:batch], steps=1, **common)
    for mode in SAMPLER_MODES:
        outputs, rates = {}, []
        for batch in shapes.sample_batches:
            forwards.clear()
            run = partial(generate, model, prompts[:batch], steps=steps,
                          generator=torch.Generator(device).manual_seed(0), **common, **mode.kwargs)
            seconds, outputs[batch] = timed(run, device)
            section.metrics[f"{mode.name}, batch {batch}"] = {"seconds": seconds, "forwards": len(forwards),
                                                              "tokens_per_s": batch * G / seconds}
            rates.append(f"b{batch} {batch * G / seconds:,.0f} tok/s")
        shown = f"{', '.join(rates)}, {len(forwards)} fwd"
        if mode.deterministic:
            small, large = shapes.sample_batches
            same = int((outputs[large][:small, P:] == outputs[small][:, P:]).sum())
            shown += f", rows equal {same}/{small * G}"
        section.info(f"{mode.name}: tokens/s, forwards", shown)


# ---- 5. environment ----------------------------------------------------------------------------------------------


def nvidia_driver() -> str:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({type(e).__name__})"
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else "unknown"


def flash_attn_status(device: torch.device) -> str:
    """Whether flash-attn imports and, on a GPU, agrees with sdpa on a small bidirectional attention."""
    if not flash_attn_importable():
        return "not importable"
    import flash_attn
    from flash_attn import flash_attn_func

    if device.type != "cuda":
        return f"{flash_attn.__version__} (importable; runs on CUDA only)"
    q, k, v = torch.randn(3, 2, 128, 8, 64, device=device, dtype=torch.bfloat16)  # [B, L, H, d] each
    got = flash_attn_func(q, k, v)
    want = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    return f"{flash_attn.__version__}, usable (vs sdpa {max_relative_error(got, want):.1e})"


def deepspeed_op_compatible(builder) -> bool:
    """DeepSpeed's probe of whether an op could be JIT-built here; a probe that raises (no CUDA toolkit) means no."""
    try:
        return bool(builder.is_compatible(verbose=False))
    except Exception:
        return False


def check_environment(section: Section, shapes: Shapes, device: torch.device, tiny: bool) -> None:
    import transformers

    section.shape = "this machine's software and GPU"
    section.info("python / torch / transformers",
                 f"{platform.python_version()} / {torch.__version__} / {transformers.__version__}")
    cuda = torch.cuda.is_available()
    section.require("CUDA device visible to torch", cuda, "yes" if cuda else "no", judged=not tiny)
    if cuda:
        props = torch.cuda.get_device_properties(0)
        section.info("GPU", f"{props.name}, {props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}")
        section.info("CUDA (torch build) / cuDNN / driver",
                     f"{torch.version.cuda} / {torch.backends.cudnn.version()} / {nvidia_driver()}")
        section.require("bf16 supported", torch.cuda.is_bf16_supported(), str(torch.cuda.is_bf16_supported()))
    section.info("flash-attn", flash_attn_status(device))
    try:
        import deepspeed
    except ImportError as e:
        section.require("DeepSpeed importable", False, f"no ({e})")
        return
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops
    from deepspeed.ops.op_builder.all_ops import ALL_OPS

    accelerator = get_accelerator().device_name()
    section.require("DeepSpeed importable", True, deepspeed.__version__)
    section.require("DeepSpeed accelerator is CUDA", accelerator == "cuda", accelerator, judged=not tiny)
    compatible = [name for name, builder in ALL_OPS.items() if deepspeed_op_compatible(builder)]
    prebuilt = [name for name, built in installed_ops.items() if built]
    section.info("DeepSpeed ops JIT-compatible", f"{len(compatible)}/{len(ALL_OPS)}")
    section.info("DeepSpeed ops prebuilt", ", ".join(prebuilt) or "none")
    section.metrics["deepspeed_ops"] = {"compatible": compatible, "prebuilt": prebuilt}


# ---- the command -------------------------------------------------------------------------------------------------

SECTIONS = {
    1: ("model numerics", check_model_numerics),
    2: ("fused loss at the 8B head", check_fused_loss),
    3: ("training: ZeRO-3 and plain", check_training),
    4: ("sampling", check_sampling),
    5: ("environment", check_environment),
}


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                epilog="Thresholds, time budget and the latest measured report: docs/gpu.md.")
    p.add_argument("out_dir", type=Path, help="folder for gpu_report.json, gpu_report.md and the training logs")
    p.add_argument("--tiny", action="store_true", help="toy shapes: every section in a minute or two on CPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cuda (default when available) or cpu (with --tiny only)")
    p.add_argument("--sections", default=",".join(map(str, SECTIONS)),
                   help="comma-separated section numbers to run (default: all)")
    p.add_argument("--corpus", type=Path, default=CORPUS, help="train.jsonl + validation.jsonl for section 3")
    p.add_argument("--fail-section", type=int, help="test hook: make this section raise after its measurements")
    args = p.parse_args(argv)
    try:
        args.sections = sorted({int(n) for n in args.sections.split(",")})
    except ValueError:
        p.error(f"--sections {args.sections!r}: give section numbers separated by commas, e.g. 1,3")
    unknown = [n for n in [*args.sections, args.fail_section] if n is not None and n not in SECTIONS]
    if unknown:
        p.error(f"section {unknown[0]} does not exist: the sections are {', '.join(map(str, SECTIONS))}")
    if args.device not in ("cuda", "cpu"):
        p.error(f"--device {args.device!r}: use cuda or cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device (torch.cuda.is_available() is False); on a CPU "
                "machine run the toy shapes with --tiny --device cpu")
    if args.device == "cpu" and not args.tiny:
        p.error("the full shapes (LLaDA-8B width) need a CUDA GPU; on CPU run the toy shapes with --tiny")
    reports = [args.out_dir / name for name in ("gpu_report.json", "gpu_report.md")]
    if any(path.exists() for path in reports):
        p.error(f"{args.out_dir} already holds a report; give a new or empty folder (nothing is overwritten)")
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run the selected sections, write both reports, print the summary; returns 0 if every check passed, else 1.
    argv defaults to sys.argv[1:]; prog names the command in usage and errors (e.g. "xdlm check-gpu")."""
    args = parse_args(argv, prog)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    shapes = TINY if args.tiny else FULL
    if device.type == "cpu":  # toy shapes gain nothing from threads; spinning OpenMP threads stall a shared CPU
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # read by the training processes' torch at import
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    extra = {3: dict(corpus=args.corpus, out_dir=args.out_dir)}
    started = time.perf_counter()
    sections = []
    for number in args.sections:
        title, check = SECTIONS[number]
        section = Section(number, title)
        sections.append(section)
        print(f"[{number}] {title} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # libraries' chatter; stdout carries the summary alone
                check(section, shapes, device, args.tiny, **extra.get(number, {}))
            if number == args.fail_section:
                raise RuntimeError(f"forced failure (--fail-section {number})")
        except Exception:
            section.error = traceback.format_exc()
        section.seconds = time.perf_counter() - start
        print(f"[{number}] {title}: {section.status} ({section.seconds:.1f} s)", file=sys.stderr, flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    header = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([prog or Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "shapes": "tiny" if args.tiny else "full",
        "device": args.device,
        "machine": machine_description(device),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_reports(args.out_dir, header, sections)
    print(summary(header, sections, args.out_dir))
    return 1 if verdict(sections) == "FAIL" else 0


def machine_description(device: torch.device) -> str:
    gpu = f"{torch.cuda.get_device_name(0)}, " if device.type == "cuda" else ""
    return f"{gpu}{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
