"""`xdlm-train RECIPE.yaml [--key value ...]` (also `python -m llada_xdlm.train`): the whole training run.

Order matters for ZeRO-3: TrainingArguments (which registers the DeepSpeed config) exist before the model is
built, so `from_pretrained` / `_from_config` create the parameters already partitioned and an 8B model never sits
whole in one process. Every input check runs before training starts; the recipe values, the output directory (locked
for the run's life), the checkpoint to resume from and the recipe it was trained with are checked before any model
or data is built, and a run that already reached max_steps stops there having changed nothing.
"""

import logging
import math
import os
import sys
from contextlib import ExitStack, contextmanager

import torch
import transformers
from datasets import Dataset
from transformers import AutoTokenizer, set_seed

from ..checkpoint import resolve_model_path
from ..cli import UsageError
from ..evaluation.perplexity import unigram_ppl
from ..modeling import LLaDAConfig, LLaDAModelLM, load_backbone, load_config
from ..tokenization import build_tokenizer
from . import checkpoints
from .args import (RECIPE_FILE, RESUME_MAY_CHANGE, DataArguments, DiffusionArguments, ModelArguments,
                   read_recipe, read_recipe_file, recipe_changes)
from .data import XDLMCollator, build_dataset, corpus_texts, load_splits
from .pretokenize import load_pretokenized
from .trainer import XDLMTrainer, unwrap

logger = logging.getLogger("llada_xdlm.train")


def load_tokenizer(model_args: ModelArguments, data_args: DataArguments, raw_train):
    """The checkpoint's tokenizer, or (no path given) a byte-level BPE built from the training corpus."""
    if model_args.tokenizer_name_or_path:
        return AutoTokenizer.from_pretrained(resolve_model_path(model_args.tokenizer_name_or_path),
                                             **(model_args.tokenizer_kwargs or {}))
    logger.info("Building a %d-id tokenizer from the training corpus", model_args.tokenizer_vocab_size)
    return build_tokenizer(corpus_texts(raw_train, data_args), model_args.tokenizer_vocab_size)


def model_config(model_args: ModelArguments, tokenizer):
    """The checkpoint's config (of its backbone), or a fresh LLaDAConfig sized by model_config with the tokenizer's
    vocabulary and special ids."""
    if model_args.model_name_or_path:
        return load_config(resolve_model_path(model_args.model_name_or_path))
    specials = dict(
        vocab_size=len(tokenizer),
        embedding_size=len(tokenizer),
        mask_token_id=tokenizer.mask_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LLaDAConfig(**{**specials, **model_args.model_config})


def load_model(model_args: ModelArguments, tokenizer):
    """A checkpoint (any backbone), or a fresh LLaDA-architecture model sized by model_config with the tokenizer's
    special ids."""
    dtype = model_args.dtype
    if model_args.model_name_or_path:
        return load_backbone(resolve_model_path(model_args.model_name_or_path), dtype=dtype,
                             attn_implementation=model_args.attn_implementation)
    dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
    # _from_config builds under deepspeed.zero.Init when ZeRO-3 is on (partitioned at creation).
    return LLaDAModelLM._from_config(
        model_config(model_args, tokenizer), dtype=dtype, attn_implementation=model_args.attn_implementation
    )


def resolve_mask_id(config, tokenizer) -> int:
    """The mask id from the model config (LLaDA: 126336), else the tokenizer's mask token; they must agree."""
    mask_id = config.mask_token_id if config.mask_token_id is not None else tokenizer.mask_token_id
    if mask_id is None:
        raise UsageError(
            "No mask token id: the model config has mask_token_id=None and the tokenizer has no mask token. Set "
            "mask_token_id in the model config (LLaDA: 126336) or give the tokenizer a mask token."
        )
    if tokenizer.mask_token_id is not None and tokenizer.mask_token_id != mask_id:
        raise UsageError(
            f"The model's mask_token_id={mask_id} differs from the tokenizer's mask token id "
            f"{tokenizer.mask_token_id}: use the tokenizer the model was trained with."
        )
    return mask_id


def check_compatible(config, tokenizer, data_args: DataArguments, mask_id: int) -> None:
    """Errors before training: tokenizer ids outside the model, block longer than the model, mask id out of range."""
    if len(tokenizer) > config.embedding_size:
        raise UsageError(
            f"Vocabulary mismatch: the tokenizer has {len(tokenizer)} ids but the model scores only "
            f"embedding_size={config.embedding_size}: use the model's own tokenizer (or resize the embeddings)."
        )
    if not 0 <= mask_id < config.embedding_size:
        raise UsageError(f"mask_token_id={mask_id} is outside the model's {config.embedding_size} ids.")
    if data_args.block_size > config.max_sequence_length:
        raise UsageError(
            f"block_size={data_args.block_size} exceeds the model's max_sequence_length="
            f"{config.max_sequence_length}: lower block_size in the recipe."
        )
    if tokenizer.eos_token_id is None:
        raise UsageError("The tokenizer has no EOS token: documents are separated (and SFT padded) with EOS.")


def load_data(model_args: ModelArguments, data_args: DataArguments, seed: int):
    """(tokenizer, train blocks, eval blocks or None) from the recipe's data: the tokenizer loaded (or built), the
    model config checked against it, the text tokenised and packed (lazily when streaming)."""
    raw_train, raw_eval = load_splits(data_args)
    tokenizer = load_tokenizer(model_args, data_args, raw_train)
    config = model_config(model_args, tokenizer)
    mask_id = resolve_mask_id(config, tokenizer)
    check_compatible(config, tokenizer, data_args, mask_id)
    train = build_dataset(raw_train, tokenizer, data_args, mask_id, seed, "train", train=True)
    if raw_eval is None:
        return tokenizer, train, None
    return tokenizer, train, build_dataset(raw_eval, tokenizer, data_args, mask_id, seed, "eval", train=False)


def add_lora(model, model_args: ModelArguments):
    """Wrap the block linears named in lora_target_modules (regex on full names: never the LM head)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_regex,
        bias="none",
    )
    model = get_peft_model(model, config)
    model.print_trainable_parameters()
    return model


def record_training(config: LLaDAConfig, diffusion_args: DiffusionArguments) -> None:
    """Write how the model is trained into its config, saved with every checkpoint: sampling and evaluation read
    objective, k1 and schedule as their defaults. The recipe's `sampling` replaces the sampler defaults of the model
    trained from; without it they are kept."""
    config.objective = diffusion_args.objective
    if diffusion_args.objective == "ar":
        return
    config.k1 = diffusion_args.k1
    config.schedule = diffusion_args.schedule
    config.eps = diffusion_args.eps
    config.antithetic = diffusion_args.antithetic
    if diffusion_args.sampling is not None:
        config.sampling = dict(diffusion_args.sampling)


def check_sample_prompts(tokenizer, diffusion_args: DiffusionArguments, config: LLaDAConfig) -> None:
    """Before training: each end-of-run sample prompt plus the model's sampler gen_length fits max_sequence_length."""
    from ..sampling import checkpoint_sampler

    if not diffusion_args.sample_prompts or diffusion_args.objective == "ar":
        return
    gen_length = checkpoint_sampler(config).gen_length
    longest = max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in diffusion_args.sample_prompts)
    if longest + gen_length > config.max_sequence_length:
        raise UsageError(
            f"sample_prompts: a {longest}-token prompt plus the sampler's gen_length={gen_length} exceeds the model's "
            f"max_sequence_length={config.max_sequence_length}: set a shorter gen_length in the recipe's sampling "
            f"(e.g. sampling: {{gen_length: {config.max_sequence_length // 2}}})."
        )


def print_samples(model, tokenizer, prompts: list[str], main: bool) -> None:
    """Decode a sample after each prompt with the model's sampler defaults (every rank runs the forwards: ZeRO-3
    needs them all)."""
    from ..sampling import checkpoint_sampler, generate

    model.eval()
    device = next(model.parameters()).device
    config = checkpoint_sampler(unwrap(model).config)
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=device)
        with torch.no_grad():
            out = generate(model, ids, config=config, eos_token_id=tokenizer.eos_token_id,
                           generator=torch.Generator(device=device).manual_seed(0))
        if main:
            text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            print(f"[{config.steps}-step sample] {prompt}|{text}", flush=True)


@contextmanager
def owned_output_dir(training_args):
    """The main process holds output_dir's run lock for the run's life; every process stops at once if another run
    holds it."""
    with ExitStack() as stack:
        refusal = None
        if training_args.process_index == 0:
            try:
                stack.enter_context(checkpoints.run_lock(training_args.output_dir))
            except checkpoints.OutputDirInUse as error:
                refusal = str(error)
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            shared = [refusal]
            torch.distributed.broadcast_object_list(shared, src=0)
            refusal = shared[0]
        if refusal:
            raise checkpoints.OutputDirInUse(refusal)
        yield


def finished_at(folder: str | None, training_args) -> int | None:
    """The step at which the run saved in `folder` (a checkpoint, or the output_dir of a finished run) reached this
    run's max_steps (with max_steps unset, its own); None when steps are left to train."""
    state = checkpoints.read_state(folder) if folder else None
    if state is None:
        return None
    target = training_args.max_steps if training_args.max_steps > 0 else state.get("max_steps", math.inf)
    return state["global_step"] if state["global_step"] >= target else None


def report_finished(training_args, checkpoint: str | None, step: int) -> None:
    """Say that the run has nothing left to train. If it is this output_dir's run and it stopped after `checkpoint`
    but before its final save completed, complete that save from the checkpoint; otherwise no file changes."""
    output_dir = training_args.output_dir
    changed = "no file changed"
    if checkpoint and checkpoints.resumes_in(training_args.resume_from_checkpoint, output_dir) and \
            checkpoints.read_state(output_dir) is None:
        changed = f"its final save was incomplete: {output_dir} now holds the model of {checkpoint}"
        if training_args.process_index == 0:
            checkpoints.final_model_from(checkpoint, output_dir)
    if training_args.process_index == 0:
        print(f"{checkpoint or output_dir}: already finished at step {step} (max_steps {training_args.max_steps}): "
              f"nothing to train, {changed}. To train further, raise max_steps.", flush=True)


def check_resumed_recipe(checkpoint: str, recipe: dict) -> list[str]:
    """Refuse to resume `checkpoint` with a recipe that changes what is trained (every key but RESUME_MAY_CHANGE);
    log the keys that may change and did. Returns the notes for the recipe file: the checkpoint's own, plus one for
    this resume's changes."""
    path = os.path.join(checkpoint, RECIPE_FILE)
    if not os.path.isfile(path):
        logger.warning("Resume: %s has no %s; the recipe cannot be compared with the one it was trained with",
                       checkpoint, RECIPE_FILE)
        return []
    trained, notes = read_recipe_file(path)
    changes = recipe_changes(trained, recipe)
    listed = lambda keys: ", ".join(f"{k} {changes[k][0]!r} -> {changes[k][1]!r}" for k in keys)  # noqa: E731
    refused = [key for key in changes if key not in RESUME_MAY_CHANGE]
    if refused:
        raise UsageError(
            f"resume_from_checkpoint: {checkpoint} was trained with another recipe ({path}): {listed(refused)}. "
            "These keys change what is trained (learning rate and optimizer settings are restored from the "
            "checkpoint, a new value would be ignored): revert them, or train afresh into a new output_dir."
        )
    logged = [key for key in changes if key not in ("output_dir", "resume_from_checkpoint")]
    if not logged:
        return notes
    state = checkpoints.read_state(checkpoint) or {}
    logger.warning("Resume: changed since %s: %s", checkpoint, listed(logged))
    return [*notes, f"resumed at step {state.get('global_step', '?')} from {checkpoint} with {listed(logged)}; "
                    "the steps before ran with the earlier values"]


def unigram_baseline(train_dataset, eval_dataset, tokenizer, data_args: DataArguments) -> float | None:
    """The validation blocks' perplexity under the training tokens' add-one frequencies: the score of a model that
    uses no context. Only when pretraining on data this run tokenised itself (not streamed, not pretokenised), so
    the one pass over it costs less than the tokenising did."""
    if (eval_dataset is None or data_args.mode != "pretrain" or data_args.pretokenized_dir
            or not isinstance(train_dataset, Dataset)):
        return None
    return unigram_ppl(train_dataset["input_ids"], torch.tensor(eval_dataset["input_ids"]), len(tokenizer))


def bound_note(key: str, nelbo: float, unigram: float | None) -> str:
    """Printed after a metric: for a validation NELBO its PPL bound, and after training how far the bound lies
    below the unigram baseline (a model that uses no context lies at it)."""
    if not key.startswith("nelbo"):
        return ""
    bound = math.exp(nelbo)
    if key != "nelbo_after" or unigram is None:
        return f"  (PPL bound {bound:.1f})"
    gap = 1 - bound / unigram
    side = "below" if gap >= 0 else "above"
    return f"  (PPL bound {bound:.1f}, {abs(gap):.0%} {side} the unigram baseline {unigram:.1f})"


def main(argv: list[str] | None = None) -> dict:
    """Run a recipe; returns the final metrics (validation NELBO before/after when there is validation data; none
    when the run had already finished)."""
    (model_args, data_args, diffusion_args, training_args), recipe = read_recipe(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    training_args.remove_unused_columns = False  # examples hold exactly input_ids (+ labels)
    # Touching .device initialises torch.distributed (and DeepSpeed's comm) now, before zero.Init builds the model.
    logger.info("Process %d of %d on %s", training_args.process_index, training_args.world_size, training_args.device)
    if training_args.deepspeed_plugin is not None:
        import deepspeed

        # On CPU accelerate starts torch.distributed only; DeepSpeed's comm must wrap it before zero.Init reads the
        # world size (a no-op where accelerate already did it).
        deepspeed.init_distributed(dist_backend=training_args.ddp_backend)
    with owned_output_dir(training_args):
        metrics = run(model_args, data_args, diffusion_args, training_args, recipe)
    if torch.distributed.is_initialized():
        # Tear the process group down while every rank is alive: left to interpreter exit, gloo's threads can
        # abort a rank ("terminate called without an active exception") after a run that succeeded, one process too.
        if torch.distributed.get_world_size() > 1:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return metrics


def run(model_args: ModelArguments, data_args: DataArguments, diffusion_args: DiffusionArguments, training_args,
        recipe: dict) -> dict:
    """The run behind `main`, inside output_dir's lock: checks, data, model, training, final save."""
    set_seed(training_args.seed)
    if data_args.streaming and data_args.mode == "sft" and training_args.world_size > 1:
        raise UsageError(f"streaming SFT data over {training_args.world_size} processes: SFT batches are padded to "
                         "their longest row, and accelerate cannot split streamed batches of different lengths "
                         "between processes. Set streaming: false (or train on one process).")
    output_dir, resume = training_args.output_dir, training_args.resume_from_checkpoint
    checkpoints.check_output_dir(output_dir, resume, training_args.overwrite_output_dir,
                                 main_process=training_args.should_save)
    # A finished run is not trained again (nor its final model replaced). An explicit checkpoint is judged by its
    # own step (one before max_steps trains again from there).
    done = finished_at(output_dir, training_args) if resume is True else None
    if done is not None:
        report_finished(training_args, None, done)
        return {}
    # Every process verifies the checkpoint itself (the same files, the same verdict: no process waits on another).
    resume = checkpoints.resolve_resume(resume, output_dir)
    done = finished_at(resume, training_args)
    if done is not None:
        report_finished(training_args, resume, done)
        return {}
    notes = check_resumed_recipe(resume, recipe) if resume else []
    for path in (model_args.model_name_or_path, model_args.tokenizer_name_or_path):
        if path:
            resolve_model_path(path)  # a local path that is not there stops the run before the data is read

    load = load_pretokenized if data_args.pretokenized_dir else load_data
    tokenizer, train_dataset, eval_dataset = load(model_args, data_args, training_args.seed)
    model = load_model(model_args, tokenizer)
    mask_id = resolve_mask_id(model.config, tokenizer)
    check_compatible(model.config, tokenizer, data_args, mask_id)

    record_training(model.config, diffusion_args)
    check_sample_prompts(tokenizer, diffusion_args, model.config)
    model.config.use_cache = False
    if model_args.use_lora:
        model = add_lora(model, model_args)

    trainer = XDLMTrainer(
        model=model,
        args=training_args,
        diffusion_args=diffusion_args,
        mask_token_id=mask_id,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=XDLMCollator(tokenizer.eos_token_id, count_padding=data_args.mode == "sft",
                                   length=data_args.block_size if data_args.mode == "pretrain" else None),
        processing_class=tokenizer,
        max_nonfinite_steps=training_args.max_nonfinite_steps,
        recipe=recipe,
        recipe_notes=notes,
    )
    # With validation data, evaluate once before the first step too (inside train(): DeepSpeed-safe).
    training_args.eval_on_start = eval_dataset is not None
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = {"train_loss": result.training_loss}
    if eval_dataset is not None:
        metrics["nelbo_before"] = next(log["eval_nelbo"] for log in trainer.state.log_history if "eval_nelbo" in log)
    # Model (or LoRA adapter) + tokenizer + config recording the training settings + recipe.yaml + trainer state.
    trainer.save_final_model()
    if eval_dataset is not None:
        metrics["nelbo_after"] = trainer.evaluate()["eval_nelbo"]
    if trainer.is_world_process_zero():
        unigram = unigram_baseline(train_dataset, eval_dataset, tokenizer, data_args)
        for key, value in metrics.items():
            print(f"{key}: {value:.4f}{bound_note(key, value, unigram)}", flush=True)
        if unigram is not None:
            metrics["unigram_ppl"] = unigram
    if diffusion_args.sample_prompts and diffusion_args.objective != "ar":
        print_samples(trainer.model, tokenizer, diffusion_args.sample_prompts, trainer.is_world_process_zero())
    if trainer.is_world_process_zero():
        from ..cli import next_steps

        print(next_steps(training_args.output_dir, model.config.max_sequence_length, diffusion_args.sample_prompts,
                         data_args.eval_data_files, model.config.sampling), flush=True)
    return metrics


if __name__ == "__main__":
    main()
