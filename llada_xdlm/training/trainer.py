"""XDLMTrainer: HF Trainer whose loss is the XDLM diffusion NELBO (or AR cross-entropy) per counted token.

One step: per sequence t ~ schedule, alpha_t = alpha(t); noisy = forward_process(clean) with prompt/padding kept;
one forward; per-token loss from `llada_xdlm.diffusion.xdlm_loss` (or the fused, chunked LM head + loss) times the
schedule weight; summed over counted tokens (labels != -100) and divided by the number of counted tokens of the
whole optimizer step (`num_items_in_batch`: all gradient-accumulation micro-batches and all processes), so gradient
accumulation and data parallelism give the same update as one big batch.

Safety: checkpoints and the final model are saved under a temporary name (with a manifest, for checkpoints) and
moved into place when complete, so a full disk leaves the earlier ones intact (`checkpoints`); a streaming run saves
each process's data loader position and resumes from it instead of replaying the stream; the run stops at the first
optimizer step whose loss or gradient norm is not finite (or skips up to `max_nonfinite_steps` of them).
"""

import logging
import math
import os
import shutil
from functools import partial

import torch
import torch.nn.functional as F
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from .. import diffusion
from . import checkpoints
from .args import RECIPE_FILE, DiffusionArguments, write_recipe_file

logger = logging.getLogger("llada_xdlm.train")


class XDLMTrainer(Trainer):
    """`XDLMTrainer(model, args, diffusion_args=..., mask_token_id=..., train_dataset=..., ...)`."""

    # compute_loss divides by the step's token count itself: Trainer must not divide by the accumulation steps.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, diffusion_args: DiffusionArguments, mask_token_id: int, max_nonfinite_steps: int = 0,
                 recipe: dict | None = None, recipe_notes: list[str] = (), **kwargs):
        kwargs.setdefault("compute_metrics", nelbo_metrics)
        super().__init__(*args, **kwargs)
        if max_nonfinite_steps > 0 and self.is_deepspeed_enabled:
            raise ValueError(
                "max_nonfinite_steps > 0 cannot skip steps under DeepSpeed (its engine applies the update before the "
                "trainer sees the gradient norm): set max_nonfinite_steps: 0 (stop at the first non-finite step)."
            )
        self.max_nonfinite_steps = max_nonfinite_steps
        self._nonfinite_steps = 0
        self._losses_finite = None  # [] bool: every micro-batch loss of the current optimizer step was finite
        self._resumed_from = None
        self._restore_rng_after_fetch = False
        self._staging_dir = None
        self._train_dataloader = None
        # A streaming dataset is resumed from its saved position (torchdata's StatefulDataLoader under accelerate),
        # not by re-reading every batch seen so far.
        if isinstance(self.train_dataset, torch.utils.data.IterableDataset):
            self.accelerator.dataloader_config.use_stateful_dataloader = True
        self.diffusion_args = diffusion_args
        self.recipe = recipe  # written as recipe.yaml beside every saved model
        self.recipe_notes = list(recipe_notes)  # its comment lines: the changes made when the run was resumed
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
        if self.diffusion_args.loss_implementation == "fused":
            # The LM head + loss run inside the model's forward (DDP and ZeRO-3 track the head's weight there).
            loss_fn = partial(self._fused_head_loss, counted=counted, noisy=noisy[counted], clean=clean[counted],
                              alpha=alpha[:, None].expand(B, L)[counted])
            loss = model(input_ids=noisy, attention_mask=attention_mask, loss_fn=loss_fn).loss  # [N]
        else:
            logits = model(input_ids=noisy, attention_mask=attention_mask).logits  # [B, L, V]
            loss = diffusion.xdlm_loss(logits, noisy, clean, alpha, k1, mask_id, loss_mask=counted)[counted]  # [N]
        loss = loss * self.schedule.weight(t)[:, None].expand(B, L)[counted]
        if model.training:
            self._record(alpha, noisy[counted], clean[counted])
        return loss, counted

    def _fused_head_loss(self, hidden, weight, *, counted, noisy, clean, alpha):
        """Fused LM head + XDLM loss [N] of the counted positions of hidden [B, L, D], from the head's weight [V, D]
        (autocast may hand over bf16 hidden states)."""
        return self._fused_loss(hidden[counted].to(weight.dtype), weight, noisy, clean, alpha, self.diffusion_args.k1,
                                self.mask_token_id)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The step's loss; with return_outputs, (loss, None): no model outputs are kept (the fused loss never
        builds the logits)."""
        loss, counted = self.per_token_loss(model, inputs)
        if num_items_in_batch is None:  # one batch on its own: mean over its counted tokens
            loss = loss.sum() / counted.sum().clamp(min=1)
        else:
            loss = loss.sum() / num_items_in_batch
            if self.args.average_tokens_across_devices:  # the count is global; DDP / ZeRO average gradients over ranks
                loss = loss * self.accelerator.num_processes
        return (loss, None) if return_outputs else loss

    # ---- non-finite loss or gradient norm: stop (or skip the update) --------------------------------------------

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        finite = torch.isfinite(loss)  # stays on the device: read once per optimizer step
        self._losses_finite = finite if self._losses_finite is None else self._losses_finite & finite
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        """Runs once per optimizer step, after the backward passes and before `optimizer.step()`."""
        grad_norm = super()._get_grad_norm(model, grad_norm)
        self._check_finite(grad_norm)
        return grad_norm

    def _check_finite(self, grad_norm) -> None:
        bad_loss = (~self._losses_finite).float().reshape(1)
        self._losses_finite = None
        bad_loss = bool(self.accelerator.reduce(bad_loss, reduction="sum").item())  # any process
        norm = float(grad_norm)
        # Under fp16 an infinite gradient norm is the loss scaler's business: it skips that step itself.
        bad_norm = not math.isfinite(norm) and not self.args.fp16
        if not (bad_loss or bad_norm):
            return
        step = self.state.global_step + 1
        what = "the loss" if bad_loss else f"the gradient norm ({norm})"
        if self._nonfinite_steps < self.max_nonfinite_steps:
            self._nonfinite_steps += 1
            # Parameters without a gradient are left alone by the optimizer: the step changes no weight or moment.
            self.optimizer.zero_grad(set_to_none=True)
            logger.warning("Step %d: %s is not finite; update skipped (%d of max_nonfinite_steps=%d)", step, what,
                           self._nonfinite_steps, self.max_nonfinite_steps)
            return
        origin = f"resumed from {self._resumed_from}" if self._resumed_from else "started without a checkpoint"
        raise FloatingPointError(
            f"Step {step}: {what} is not finite; stopping before the update (the run {origin}; nothing after the last "
            "checkpoint is saved). Lower learning_rate, check this step's data, or allow skipping such steps with "
            "max_nonfinite_steps: N."
        )

    # ---- checkpoints and resume ------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: bool | str | None = None, **kwargs):
        """`resume_from_checkpoint=True` takes the newest complete checkpoint of output_dir (verified); a path is used
        as given (xdlm-train verifies it first). A checkpoint holding the data loader's position (a streaming run)
        resumes there instead of replaying the batches seen so far."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = checkpoints.newest_complete_checkpoint(self.args.output_dir)
        self._resumed_from = resume_from_checkpoint or None
        stateful = bool(self._resumed_from) and self._stateful_data and os.path.isfile(
            self._data_state_file(self._resumed_from)
        )
        self._restore_rng_after_fetch = stateful
        skip_data = self.args.ignore_data_skip
        self.args.ignore_data_skip = skip_data or stateful  # the loader restores its position itself
        try:
            return super().train(resume_from_checkpoint=self._resumed_from, **kwargs)
        finally:
            self.args.ignore_data_skip = skip_data

    @property
    def _stateful_data(self) -> bool:
        return bool(self.accelerator.dataloader_config.use_stateful_dataloader)

    def _data_state_file(self, folder: str) -> str:
        return os.path.join(folder, f"data_state_{self.args.process_index}.pt")

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        if self._stateful_data and self._resumed_from and os.path.isfile(self._data_state_file(self._resumed_from)):
            loader.load_state_dict(torch.load(self._data_state_file(self._resumed_from), weights_only=True))
            logger.info("Resume: the data continues from the position saved in %s", self._resumed_from)
        self._train_dataloader = loader
        return loader

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self._restore_rng_after_fetch:
            # Starting the data iterator drew a seed from the global RNG, which the uninterrupted run did before its
            # checkpoint: restore the RNG again now, as the Trainer does after replaying batches.
            self._restore_rng_after_fetch = False
            self._load_rng_state(self._resumed_from)
        return batches

    def _get_output_dir(self, trial) -> str:
        return self._staging_dir or super()._get_output_dir(trial)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Trainer's save of model, config and tokenizer, plus the recipe of the run (model and every checkpoint)."""
        super()._save(output_dir, state_dict)
        if self.recipe is not None and self.args.should_save:
            write_recipe_file(os.path.join(output_dir or self.args.output_dir, RECIPE_FILE), self.recipe,
                              self.recipe_notes)

    def _save_checkpoint(self, model, trial) -> None:
        """Trainer's save into `tmp-checkpoint-N/checkpoint-N` (every process writes its part), plus the data
        loader's position; then the main process writes the manifest, renames it to `checkpoint-N` and rotates."""
        run_dir = self._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._staging_dir = os.path.join(run_dir, checkpoints.STAGING_PREFIX + name)
        staged, final = os.path.join(self._staging_dir, name), os.path.join(run_dir, name)
        if self.args.should_save and os.path.isdir(self._staging_dir):
            shutil.rmtree(self._staging_dir)  # a save of this step that a crash interrupted
        self.accelerator.wait_for_everyone()
        with checkpoints.saving(self._staging_dir, run_dir, name):
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._staging_dir = None
            if self._stateful_data and self._train_dataloader is not None:
                torch.save(self._train_dataloader.state_dict(), self._data_state_file(staged))
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                if self.state.best_model_checkpoint == staged:
                    self.state.best_model_checkpoint = final
                    self.state.save_to_json(os.path.join(staged, "trainer_state.json"))
                checkpoints.finish_checkpoint(staged, final)
        if self.args.should_save:
            rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    def save_final_model(self) -> None:
        """The model (or LoRA adapter), tokenizer, config, recipe and trainer state, written to
        `output_dir/tmp-model` and moved into output_dir when complete (trainer_state.json last: it marks the run
        finished). A full disk removes the partial save and leaves output_dir's earlier files as they were."""
        output_dir = self.args.output_dir
        staged = os.path.join(output_dir, checkpoints.FINAL_STAGING)
        if self.args.should_save and os.path.isdir(staged):
            shutil.rmtree(staged)  # a final save that a crash interrupted
        self.accelerator.wait_for_everyone()
        with checkpoints.saving(staged, output_dir, "the final model"):
            self.save_model(staged)  # every process: ZeRO-3 gathers the weights
            if self.args.should_save:
                self.state.save_to_json(os.path.join(staged, "trainer_state.json"))
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            checkpoints.move_into(staged, output_dir)
        self.accelerator.wait_for_everyone()

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
    """The backbone inside DeepSpeed / DDP / peft wrappers."""
    while True:
        inner = getattr(model, "module", None)  # DeepSpeedEngine, DDP
        if inner is None and hasattr(model, "get_base_model"):  # peft
            inner = model.get_base_model()
        if inner is None or inner is model:
            return model
        model = inner
