"""The lm-eval model "xdlm": LLaDA / LLaDA-XDLM checkpoints scored with lm-evaluation-harness.

    lm_eval --model xdlm --model_args pretrained=PATH,steps=32,gen_length=256,block_length=256 --tasks gsm8k

generate_until runs llada_xdlm.generate (few-step remasking sampler with XDLM refinement) on left-padded batches;
`mode=paper` decodes as the XDLM authors' OpenCompass harness does (docs/evaluation.md); loglikelihood is the Monte-Carlo ELBO of the continuation with the context never noised (likelihood.py), plus a
greedy check; loglikelihood_rolling sums that bound over windows of max_length tokens. Under `accelerate launch`
lm-eval shards the requests over processes and this class supplies rank, world size and the collectives.

Defaults come from the checkpoint: the sampler settings its config.json records (`sampling`), the k1 and schedule
it was trained with, and the likelihood estimator its objective calls for (LLaDA's "mdlm", except the "xdlm" bound
for a uniform-noise udlm model, which never saw a mask); model_args override them (a k1 other than the trained one is
logged).
"""

import atexit
import inspect
import json
import logging
import os
import time
import zlib
from dataclasses import fields, replace

import torch
from lm_eval.api.model import LM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
from tqdm import tqdm

from llada_xdlm.checkpoint import resolve_model_path, trained_setting
from llada_xdlm.cli import UsageError
from llada_xdlm.evaluation.likelihood import ESTIMATORS, nelbo_samples
from llada_xdlm.sampling import SamplerConfig, checkpoint_sampler, generate, truncate_at_stop

logger = logging.getLogger(__name__)

DTYPES = {"auto": "auto", "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
SEED = 1234  # base seed of the Monte-Carlo draws; each request adds a hash of its own text
MODES = ("standard", "paper")


class XDLMEvalLM(LM):
    """lm-eval LM for LLaDA-style diffusion checkpoints; every model_arg is a keyword of __init__."""

    def __init__(
        self,
        pretrained: str | None = None,
        peft: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int = 1,
        mode: str = "standard",
        mc_num: int = 128,
        likelihood: str | None = None,
        max_length: int | None = None,
        stats_path: str | None = None,
        **sampler_settings,
    ):
        """pretrained: checkpoint folder or Hub id; peft: adapter folder merged into it; batch_size: prompts per
        generate() call and Monte-Carlo samples per forward; mode: "standard" (lm-eval's conventions) or "paper"
        (the XDLM authors' harness: prompt tokenized with the tokenizer's special tokens, the whole generated span
        decoded with special tokens skipped (text after an EOS kept), cut at the first stop string, no prompt
        truncation, refine_budget "block" unless given); sampler_settings: any SamplerConfig field (steps,
        gen_length, block_length, k1, refine_budget, temperature, remasking, cfg_scale (generation only), compat
        ("xdlm-authors": the authors' sampler, docs/evaluation.md), ...),
        each defaulting to the checkpoint's (config.json `sampling`, config.k1), else gen_length 256 and
        SamplerConfig's; mc_num: samples per loglikelihood; likelihood: "mdlm" (LLaDA's estimator, low variance) or
        "xdlm" (the XDLM bound at k1); default "mdlm", "xdlm" for a checkpoint trained with objective udlm;
        max_length: tokens per sequence
        (default: config.max_sequence_length); stats_path: a JSON file to write generation statistics to (prompts,
        generated tokens, model forwards, seconds; one file per process under data parallelism, `.rank<r>` added)."""
        super().__init__()
        sampler_defaults = _validate(pretrained, dtype, batch_size, mode, mc_num, likelihood, max_length)
        pretrained, peft = resolve_model_path(pretrained), peft and resolve_model_path(peft)
        from accelerate import Accelerator
        from transformers import AutoTokenizer

        from llada_xdlm.modeling import backbone_classes

        config_class, model_class = backbone_classes(pretrained)
        config = config_class.from_pretrained(pretrained)  # the checkpoint's defaults, checked before the weights load
        self.sampler = checkpoint_sampler(config, defaults=sampler_defaults, **sampler_settings)
        self.estimator = likelihood or _estimator(config)
        if self.estimator == "mdlm" and self.sampler.k1 == 1:
            logger.warning("likelihood=mdlm masks tokens, but this model samples with k1=1 (uniform noise only, "
                           "never a mask): likelihood=xdlm is the bound that matches it.")

        accelerator = Accelerator()
        self.accelerator = accelerator if accelerator.num_processes > 1 else None
        if self.accelerator is not None:
            self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
            self._device = accelerator.device
            # lm-eval returns without tearing the process group down; left to interpreter exit, gloo's threads can
            # abort a rank ("terminate called without an active exception") after a run that succeeded.
            atexit.register(torch.distributed.destroy_process_group)
        else:
            self._device = torch.device(device or "cuda")
            if self._device.type == "cuda" and not torch.cuda.is_available():  # lm-eval passes cuda:0 by default
                logger.warning("device=%s but CUDA is not available: running on CPU.", self._device)
                self._device = torch.device("cpu")

        model = model_class.from_pretrained(pretrained, config=config, dtype=DTYPES[dtype])
        if peft is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, peft).merge_and_unload()
        self.model = model.to(self._device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained)
        self.batch_size, self.mode = batch_size, mode
        if mode == "paper" and batch_size > 1:
            logger.warning("mode=paper with batch_size=%d: the authors generate one prompt at a time; in bf16 a "
                           "left-padded row can differ from the same prompt alone (docs/sampling.md).", batch_size)
        self.mc_num = mc_num
        self.max_length = config.max_sequence_length if max_length is None else max_length
        if self.max_length <= self.sampler.gen_length:
            raise UsageError(f"max_length={self.max_length} must exceed gen_length={self.sampler.gen_length} to "
                             f"leave room for the prompt.")
        self.mask_id = config.mask_token_id
        self.eos_id = config.eos_token_id
        bos = self.tokenizer.bos_token_id
        self.prefix = [bos if bos is not None else self.eos_id]  # the start-of-text token every input begins with
        eot = self.tokenizer.convert_tokens_to_ids("<|eot_id|>")  # LLaDA-Instruct's end of turn (unk if absent)
        self.end_ids = {self.eos_id, eot} - {self.tokenizer.unk_token_id, None}
        self.stats_path = stats_path
        self.stats = {"prompts": 0, "generated_tokens": 0, "forwards": 0, "seconds": 0.0}

    # ---- construction from lm-eval's --model_args ---------------------------------------------------------

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        """model_args win over the harness's own settings (--batch_size / --device, which it always passes)."""
        known = set(inspect.signature(cls.__init__).parameters) - {"self", "sampler_settings"}
        known |= {f.name for f in fields(SamplerConfig)}
        unknown = sorted(set(arg_dict) - known)
        if unknown:
            raise UsageError(f"unknown model_args {unknown} for --model xdlm; valid keys: {sorted(known)}.")
        harness = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        if isinstance(harness.get("batch_size"), str) and harness["batch_size"].isdigit():
            harness["batch_size"] = int(harness["batch_size"])  # lm-eval's --batch_size arrives as text
        if "max_batch_size" in harness:
            raise UsageError("--max_batch_size needs --batch_size auto, which the xdlm model does not support; "
                             "pass an integer batch_size.")
        return cls(**harness, **arg_dict)

    # ---- distributed helpers used by lm-eval --------------------------------------------------------------

    def all_gather(self, tensor):
        return tensor if self.accelerator is None else self.accelerator.gather(tensor)

    def gather_object(self, obj, dst=0):
        if self.accelerator is None:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def barrier(self):
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    # ---- tokenization -------------------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of prefix + context and of the continuation, split so that tokens spanning the boundary
        belong to the continuation (trailing spaces of the context move to it first)."""
        n_space = len(context) - len(context.rstrip())
        if n_space:
            context, continuation = context[:-n_space], context[-n_space:] + continuation
        whole = self._encode(context + continuation)
        n_context = len(self._encode(context))
        return self.prefix + whole[:n_context], whole[n_context:]

    # ---- generation ---------------------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Left-padded batches of prompts with equal gen_kwargs, longest first. mode "standard": each output is cut
        at the first end-of-text token, at max_gen_toks tokens and at the first of the request's `until` strings;
        the prompt keeps its last max_length - gen_length tokens. mode "paper": see __init__."""
        gen_length = self.sampler.gen_length
        prompts = [self._prompt_ids(r.args[0]) for r in requests]
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(repr(sorted(r.args[1].items())), []).append(i)
        results: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="xdlm generate_until", disable=disable_tqdm or self.rank != 0)
        count_forwards = self.model.register_forward_hook(self._count_forward)
        start_time = time.perf_counter()
        for indices in groups.values():
            kwargs = requests[indices[0]].args[1]
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = gen_length if self.mode == "paper" else min(int(kwargs.get("max_gen_toks", gen_length)),
                                                                    gen_length)
            indices.sort(key=lambda i: -len(prompts[i]))
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                input_ids, attention_mask = self._left_pad([prompts[i] for i in batch])
                self.stats["prompts"] += len(batch)
                self.stats["generated_tokens"] += len(batch) * gen_length
                out = generate(self.model, input_ids, attention_mask, self.sampler, mask_id=self.mask_id,
                               eos_token_id=None if self.mode == "paper" else self.eos_id)
                texts = [self._decode(row[input_ids.shape[1]:][:max_new].tolist()) for row in out]
                for i, text in zip(batch, truncate_at_stop(texts, until)):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(batch))
        bar.close()
        count_forwards.remove()
        self.stats["seconds"] += time.perf_counter() - start_time
        self._report_stats()
        return results

    def _count_forward(self, *_) -> None:
        self.stats["forwards"] += 1

    def _report_stats(self) -> None:
        """Log the generation statistics so far (tokens per forward, tokens/s) and write them to stats_path."""
        stats = dict(self.stats)
        stats["tokens_per_forward"] = stats["generated_tokens"] / max(stats["forwards"], 1)
        stats["tokens_per_second"] = stats["generated_tokens"] / max(stats["seconds"], 1e-9)
        logger.info("xdlm generation: %d prompts, %d tokens in %d forwards (%.2f tokens/forward), %.1f tokens/s",
                    stats["prompts"], stats["generated_tokens"], stats["forwards"], stats["tokens_per_forward"],
                    stats["tokens_per_second"])
        if self.stats_path:
            path = self.stats_path if self.world_size == 1 else f"{self.stats_path}.rank{self.rank}"
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                json.dump(stats, f, indent=1)

    def _prompt_ids(self, text: str) -> list[int]:
        """Token ids of a generation prompt. "paper": the tokenizer's own special tokens, as the authors encode it,
        and an error when prompt + gen_length does not fit max_length; "standard": start-of-text + the text, keeping
        its last max_length - gen_length tokens (lm-eval's left truncation), with a warning when it cuts."""
        room = self.max_length - self.sampler.gen_length
        if self.mode == "paper":
            ids = self.tokenizer(text)["input_ids"]
            if len(ids) > room:
                raise UsageError(f"a prompt of {len(ids)} tokens plus gen_length={self.sampler.gen_length} exceeds "
                                 f"max_length={self.max_length}; mode=paper never truncates a prompt: raise "
                                 f"max_length (model_args max_length=...) if the model allows it.")
            return ids
        ids = self.prefix + self._encode(text)
        if len(ids) > room:
            logger.warning("prompt of %d tokens truncated to its last %d (max_length=%d - gen_length=%d).",
                           len(ids), room, self.max_length, self.sampler.gen_length)
        return ids[-room:]

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.eos_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        return ids.to(self._device), mask.to(self._device)

    def _decode(self, ids: list[int]) -> str:
        """"standard": the text up to the first end-of-text token; "paper": every token's text, special tokens
        skipped (what follows an EOS is kept, as the authors decode)."""
        end = len(ids) if self.mode == "paper" else next((j for j, t in enumerate(ids) if t in self.end_ids),
                                                         len(ids))
        return self.tokenizer.decode(ids[:end], skip_special_tokens=True)

    # ---- likelihood ---------------------------------------------------------------------------------------

    def _nelbo(self, context: list[int], target: list[int], seed_text: str) -> float:
        """Mean Monte-Carlo NELBO of `target` after `context` (context kept clean), seeded by the request text so
        results do not depend on batching, order or rank."""
        ids = torch.tensor([context + target], device=self._device)
        target_mask = torch.zeros_like(ids, dtype=torch.bool)
        target_mask[0, len(context):] = True
        generator = torch.Generator(self._device).manual_seed(SEED + zlib.crc32(seed_text.encode("utf-8")))
        samples = nelbo_samples(self.model, ids, target_mask, estimator=self.estimator,
                                k1=self.sampler.k1, mc_num=self.mc_num, batch_size=self.batch_size,
                                mask_id=self.mask_id, generator=generator)
        return float(samples.mean())

    def _is_greedy(self, context: list[int], target: list[int]) -> bool:
        """Does the remasking sampler at temperature 0, filling one token per step, produce exactly `target`?"""
        ids = torch.tensor([context], device=self._device)
        greedy = replace(self.sampler, steps=len(target), gen_length=len(target), block_length=len(target),
                         sampler="remask", temperature=0.0, remasking="low_confidence", top_p=None, cfg_scale=0.0,
                         threshold=None, schedule=None)
        out = generate(self.model, ids, config=greedy, mask_id=self.mask_id)
        return out[0, len(context):].tolist() == target

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        results = []
        for r in tqdm(requests, desc="xdlm loglikelihood", disable=disable_tqdm or self.rank != 0):
            context, continuation = r.args
            ctx, target = self._encode_pair(context, continuation)
            if not target:
                raise UsageError(f"empty continuation for context {context[-50:]!r}: nothing to score.")
            if len(target) >= self.max_length:
                raise UsageError(f"continuation of {len(target)} tokens does not fit max_length={self.max_length}.")
            ctx = ctx[-(self.max_length - len(target)):]
            answer = (-self._nelbo(ctx, target, context + continuation), self._is_greedy(ctx, target))
            results.append(answer)
            self.cache_hook.add_partial("loglikelihood", r.args, answer)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Sum of the ELBO over disjoint windows of max_length tokens, each conditioned on the token before it."""
        results = []
        for r in tqdm(requests, desc="xdlm loglikelihood_rolling", disable=disable_tqdm or self.rank != 0):
            (text,) = r.args
            windows = get_rolling_token_windows(self._encode(text), self.prefix[0], self.max_length - 1, 1)
            total = 0.0
            for i, (ctx, target) in enumerate(map(make_disjoint_window, windows)):
                total -= self._nelbo(ctx, target, f"{i}:{text}")
            results.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", r.args, total)
        return results


def _validate(pretrained, dtype, batch_size, mode, mc_num, likelihood, max_length) -> dict:
    """Check every model_arg before anything is loaded; the message names the value and the fix. Returns this
    model's sampler defaults, below the checkpoint's (gen_length 256 and, in mode "paper", refine_budget "block")."""

    def positive_int(name, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name}={value!r} must be a positive integer.")

    if not pretrained:
        raise UsageError("model_args needs pretrained=<checkpoint folder or Hub id>, e.g. "
                         "--model_args pretrained=GSAI-ML/LLaDA-8B-Base.")
    if dtype not in DTYPES:
        raise UsageError(f"dtype={dtype!r} is not one of {sorted(DTYPES)}.")
    if mode not in MODES:
        raise UsageError(f"mode={mode!r} is not one of {MODES}.")
    for name, value in [("batch_size", batch_size), ("mc_num", mc_num)]:
        positive_int(name, value)
    if max_length is not None:
        positive_int("max_length", max_length)
    if likelihood is not None and likelihood not in ESTIMATORS:
        raise UsageError(f"likelihood={likelihood!r} is not one of {ESTIMATORS}.")
    defaults = {"gen_length": 256, **({"refine_budget": "block"} if mode == "paper" else {})}
    return defaults


def _estimator(model_config) -> str:
    """The likelihood estimator a checkpoint's objective calls for: LLaDA's masking one (lowest variance, comparable
    with published LLaDA numbers) for every model that learned to fill masks, the XDLM bound at k1 = 1 for a uniform-
    noise model, which never saw a mask."""
    return "xdlm" if trained_setting(model_config, "objective") == "udlm" else "mdlm"
