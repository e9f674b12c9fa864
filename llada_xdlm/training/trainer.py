"""XDLMTrainer: HF Trainer whose loss is the XDLM diffusion NELBO (or AR cross-entropy) per counted token.

One step: per sequence t ~ schedule, alpha_t = alpha(t); noisy = forward_process(clean) with prompt/padding kept;
one forward; per-token loss from `llada_xdlm.diffusion.xdlm_loss` (or the fused, chunked LM head + loss) times the
schedule weight; summed over counted tokens (labels != -100) and divided by the number of counted tokens of the
whole optimizer step (`num_items_in_batch`: all gradient-accumulation micro-batches and all processes), so gradient
accumulation and data parallelism give the same update as one big batch.
"""

import math

import torch
import torch.nn.functional as F
from transformers import Trainer

from .. import diffusion
from .args import DiffusionArguments


class XDLMTrainer(Trainer):
    """`XDLMTrainer(model, args, diffusion_args=..., mask_token_id=..., train_dataset=..., ...)`."""

    # compute_loss divides by the step's token count itself: Trainer must not divide by the accumulation steps.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, diffusion_args: DiffusionArguments, mask_token_id: int, **kwargs):
        kwargs.setdefault("compute_metrics", nelbo_metrics)
        super().__init__(*args, **kwargs)
        self.diffusion_args = diffusion_args
        self.mask_token_id = mask_token_id
        self.schedule = diffusion.get_schedule(diffusion_args.schedule)
        self.model_accepts_loss_kwargs = True  # makes Trainer count num_items_in_batch from `labels`
        self._loss_shifts_labels = diffusion_args.objective == "ar"  # AR predicts labels[:, 1:]
        self._stats = torch.zeros(5, dtype=torch.float64)  # sum alpha, sequences, kept, uniform, masked
        self._eval_generator = None
        if diffusion_args.loss_implementation == "fused" and diffusion_args.objective != "ar":
            from ..ops.fused_loss import fused_linear_xdlm_loss

            self._fused_loss = fused_linear_xdlm_loss

    # ---- the loss ---------------------------------------------------------------------------------------------

    def per_token_loss(self, model, inputs: dict, generator: torch.Generator | None = None):
        """(loss [N], counted [B, L]): the weighted per-token loss of the N counted tokens (labels != -100)."""
        clean, labels = inputs["input_ids"], inputs["labels"]  # [B, L]
        attention_mask = inputs.get("attention_mask")
        if self.diffusion_args.objective == "ar":
            logits = model(input_ids=clean, attention_mask=attention_mask, is_causal=True).logits  # [B, L, V]
            counted = labels[:, 1:] != -100  # [B, L-1]
            loss = F.cross_entropy(logits[:, :-1][counted].float(), labels[:, 1:][counted], reduction="none")
            return loss, counted

        counted = labels != -100  # [B, L]
        B, L = clean.shape
        k1, mask_id = self.diffusion_args.k1, self.mask_token_id
        t = diffusion.sample_t(
            B, eps=self.diffusion_args.eps, antithetic=self.diffusion_args.antithetic, generator=generator,
            device=clean.device,
        )  # [B]
        alpha = self.schedule.alpha(t)  # [B]
        V = unwrap(model).config.embedding_size
        noisy = diffusion.forward_process(clean, alpha, k1, mask_id, V, generator=generator, keep_mask=~counted)
        fused = self.diffusion_args.loss_implementation == "fused"
        out = model(input_ids=noisy, attention_mask=attention_mask, compute_logits=not fused)
        alpha_tok = alpha[:, None].expand(B, L)[counted]  # [N]
        if fused:
            head = unwrap(model).get_output_embeddings()
            hidden = out.last_hidden_state[counted]  # [N, D]
            loss = call_as_forward(head, self._fused_head_loss, hidden, noisy[counted], clean[counted], alpha_tok)
        else:
            loss = diffusion.xdlm_loss(out.logits, noisy, clean, alpha, k1, mask_id, loss_mask=counted)[counted]  # [N]
        loss = loss * self.schedule.weight(t)[:, None].expand(B, L)[counted]
        if model.training:
            self._record(alpha, noisy[counted], clean[counted])
        return loss, counted

    def _fused_head_loss(self, head, hidden, noisy, clean, alpha):
        """Fused LM head + XDLM loss [N] from the head's weight (autocast may hand over bf16 hidden states)."""
        weight = head.weight  # [V, D]
        return self._fused_loss(hidden.to(weight.dtype), weight, noisy, clean, alpha, self.diffusion_args.k1,
                                self.mask_token_id)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, counted = self.per_token_loss(model, inputs)
        if num_items_in_batch is None:  # one batch on its own: mean over its counted tokens
            return loss.sum() / counted.sum().clamp(min=1)
        loss = loss.sum() / num_items_in_batch
        if self.args.average_tokens_across_devices:  # the count is global; DDP / ZeRO average gradients over ranks
            loss = loss * self.accelerator.num_processes
        return (loss, None) if return_outputs else loss

    # ---- logging ----------------------------------------------------------------------------------------------

    def _record(self, alpha: torch.Tensor, noisy: torch.Tensor, clean: torch.Tensor) -> None:
        masked = noisy == self.mask_token_id
        kept = noisy == clean
        stats = [alpha.sum(), alpha.numel(), kept.sum(), (~kept & ~masked).sum(), masked.sum()]
        self._stats += torch.tensor([float(s) for s in stats], dtype=torch.float64)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds mean alpha and the shares of kept / uniform / masked counted tokens since the last training log."""
        if "loss" in logs and self.diffusion_args.objective != "ar":
            stats = self.accelerator.reduce(self._stats.to(self.args.device), reduction="sum").cpu()
            self._stats.zero_()
            tokens = stats[2:].sum().clamp(min=1)
            logs["mean_alpha"] = round(float(stats[0] / stats[1].clamp(min=1)), 4)
            for i, name in enumerate(("kept", "uniform", "masked")):
                logs[f"share_{name}"] = round(float(stats[2 + i] / tokens), 4)
        super().log(logs, start_time)

    # ---- evaluation: NELBO per token with a fixed noise seed --------------------------------------------------

    def evaluate(self, *args, **kwargs):
        self._eval_generator = None  # every evaluation replays the same noise
        return super().evaluate(*args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Returns (batch loss, per-row [loss sum, token count] [B, 2], per-row count [B]) for `nelbo_metrics`."""
        inputs = self._prepare_inputs(inputs)
        if self._eval_generator is None:
            device = inputs["input_ids"].device
            self._eval_generator = torch.Generator(device=device)
            self._eval_generator.manual_seed(self.diffusion_args.eval_seed + self.args.process_index)
        with torch.no_grad():
            loss, counted = self.per_token_loss(model, inputs, generator=self._eval_generator)
        per_row = torch.zeros(counted.shape, dtype=torch.float32, device=loss.device)
        per_row[counted] = loss.float()
        sums, counts = per_row.sum(1), counted.sum(1).float()  # [B]
        batch_loss = sums.sum() / counts.sum().clamp(min=1)
        if prediction_loss_only:
            return batch_loss, None, None
        return batch_loss, torch.stack([sums, counts], dim=1), counts


def nelbo_metrics(eval_pred) -> dict[str, float]:
    """Validation NELBO per counted token (nats) and its perplexity bound exp(NELBO), over the whole eval set."""
    sums = eval_pred.predictions[:, 0].sum()
    counts = eval_pred.predictions[:, 1].sum()
    nelbo = float(sums / max(counts, 1))
    return {"nelbo": nelbo, "ppl_bound": math.exp(min(nelbo, 50.0))}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The LLaDAModelLM inside DeepSpeed / DDP / peft wrappers."""
    while True:
        inner = getattr(model, "module", None)  # DeepSpeedEngine, DDP
        if inner is None and hasattr(model, "get_base_model"):  # peft
            inner = model.get_base_model()
        if inner is None or inner is model:
            return model
        model = inner


def call_as_forward(module: torch.nn.Module, fn, *args):
    """fn(module, *args), run as `module`'s forward. Under ZeRO-3 the module's hooks then gather its partitioned
    weight for the forward AND again for the backward (a GatheredParameters block covers the forward only, and the
    weight gradient must be produced while the weight is whole); without DeepSpeed it is a plain call."""
    module.forward = lambda *inputs: fn(module, *inputs)  # instance attribute shadows the class method
    try:
        return module(*args)
    finally:
        del module.forward
