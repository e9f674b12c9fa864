"""Training, in-process: recipe parsing, data pipeline, the XDLMTrainer loss against independent
references, SFT masking, LoRA, gradient-accumulation normalisation, resume, and bad inputs.
The DeepSpeed runs (one and two processes) are in test_training_zero3.py."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from datasets import Dataset
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerFast, TrainingArguments

import llada_xdlm.diffusion as diffusion
from llada_xdlm import LLaDAConfig, LLaDAModelLM
from llada_xdlm.training.args import DataArguments, DiffusionArguments, ModelArguments, parse_recipe
from llada_xdlm.training.data import MAP_BATCH, XDLMCollator, build_dataset, load_raw, pack_fn
from llada_xdlm.training.train import add_lora, main
from llada_xdlm.training.trainer import XDLMTrainer

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "stdlib_docs"
sys.path.insert(0, str(Path(__file__).parent))
from training_launch import fixed_forward_process, fixed_sample_t  # noqa: E402

TINY_RECIPE = dict(
    model_config=dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=128, max_sequence_length=64),
    tokenizer_vocab_size=512,
    data_files=[str(CORPUS / "train.jsonl")],
    block_size=64,
    objective="xdlm",
    k1=0.1,
    use_cpu=True,
    seed=0,
    max_steps=4,
    per_device_train_batch_size=4,
    learning_rate=1.0e-3,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    disable_tqdm=True,
)


def write_recipe(tmp_path: Path, name: str = "recipe", **overrides) -> str:
    recipe = {**TINY_RECIPE, "output_dir": str(tmp_path / name), **overrides}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def losses(output_dir) -> dict[int, float]:
    history = json.loads((Path(output_dir) / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def make_trainer(model, tokenizer, tmp_path, objective="xdlm", k1=None, mode="pretrain", schedule="linear",
                 loss_implementation="fused", **train_kwargs):
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), use_cpu=True, report_to="none",
                             disable_tqdm=True, **train_kwargs)
    diffusion_args = DiffusionArguments(objective=objective, k1=k1, schedule=schedule,
                                        loss_implementation=loss_implementation)
    return XDLMTrainer(
        model=model, args=args, diffusion_args=diffusion_args,
        mask_token_id=tokenizer.mask_token_id,
        data_collator=XDLMCollator(tokenizer.eos_token_id, count_padding=mode == "sft"),
    )


def packed_batch(tokenizer, corpus_texts, B=4, L=64) -> dict:
    ids = tokenizer(" ".join(corpus_texts), add_special_tokens=False)["input_ids"][: B * L]
    clean = torch.tensor(ids).view(B, L)
    return {"input_ids": clean, "labels": clean.clone()}


@pytest.fixture
def spy_noise(monkeypatch):
    """Records the alpha_t and noisy ids that the trainer draws (the real forward_process still draws them)."""
    seen = {}
    real = diffusion.forward_process

    def spy(clean_ids, alpha_t, *args, **kwargs):
        seen["alpha"], seen["noisy"] = alpha_t, real(clean_ids, alpha_t, *args, **kwargs)
        return seen["noisy"]

    monkeypatch.setattr(diffusion, "forward_process", spy)
    return seen


# ---- recipe --------------------------------------------------------------------------------------------------


def test_recipe_yaml_is_parsed_and_cli_overrides_it(tmp_path):
    path = write_recipe(tmp_path, learning_rate="3e-4")  # a string, as YAML 1.1 reads 3e-4: converted
    model_args, data_args, diff_args, training_args = parse_recipe([path, "--k1", "0.25", "--max_steps", "7"])
    assert model_args.model_config["d_model"] == 64 and model_args.model_name_or_path is None
    assert data_args.block_size == 64 and diff_args.k1 == 0.25 and training_args.max_steps == 7
    assert training_args.learning_rate == pytest.approx(3e-4)
    assert diff_args.loss_implementation == "fused"  # the default


NO_GPU = ["--bf16", "false"]  # the 8B recipes train in bf16 on GPUs; TrainingArguments refuses bf16 on CPU


def test_quickstart_and_shipped_recipes_parse():
    for name in ["quickstart.yaml", "llada_cpt.yaml", "llada_sft_lora.yaml"]:
        model_args, data_args, diff_args, training_args = parse_recipe([str(REPO / "recipes" / name), *NO_GPU])
        assert diff_args.objective == "xdlm" and diff_args.loss_implementation == "fused"
    _, data_args, diff_args, training_args = parse_recipe([str(REPO / "recipes" / "llada_cpt.yaml"), *NO_GPU])
    assert (data_args.block_size, diff_args.k1, training_args.max_steps) == (4096, 0.1, 1000)
    assert training_args.gradient_accumulation_steps == 64 and training_args.learning_rate == 2e-5


def test_lora_targets_match_block_linears_only_never_the_lm_head():
    import re

    regex = ModelArguments(model_config={}).lora_target_regex
    assert re.fullmatch(regex, "model.transformer.blocks.3.ff_out")
    assert re.fullmatch(regex, "model.transformer.blocks.0.attn_out")
    assert not re.fullmatch(regex, "model.transformer.ff_out")  # the LM head shares the name
    assert not re.fullmatch(regex, "model.transformer.blocks.0.attn_norm")


# ---- data ----------------------------------------------------------------------------------------------------


def test_packing_appends_eos_and_fills_blocks(tiny_tokenizer, corpus_texts):
    data_args = DataArguments(data_files=["x.jsonl"], block_size=32, random_length_prob=0.0)
    raw = Dataset.from_list([{"text": t} for t in corpus_texts[:20]])
    blocks = build_dataset(raw, tiny_tokenizer, data_args, tiny_tokenizer.mask_token_id, 0, "train", train=True)
    stream = []
    for text in corpus_texts[:20]:
        stream += tiny_tokenizer(text, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    flat = [t for b in blocks["input_ids"] for t in b]
    assert all(len(b) == 32 for b in blocks["input_ids"]) and len(blocks) == len(stream) // 32
    assert flat == stream[: len(flat)]


def test_random_length_trick_cuts_blocks_as_seed_and_row_draw_them(tiny_tokenizer, corpus_texts):
    """Each packed block is cut, with probability random_length_prob, to a length uniform in [1, block_size], drawn
    from a generator seeded by (seed, the map batch's first row): expected cuts drawn here from that rule. A cut
    only shortens a block (same start, nothing moved or dropped); another seed or another row cuts elsewhere."""
    assert len(corpus_texts) < MAP_BATCH  # one map batch, starting at row 0
    raw = Dataset.from_list([{"text": t} for t in corpus_texts])

    def build(seed: int, prob: float, train: bool = True) -> list[list[int]]:
        data_args = DataArguments(data_files=["x.jsonl"], block_size=32, random_length_prob=prob)
        return build_dataset(raw, tiny_tokenizer, data_args, tiny_tokenizer.mask_token_id, seed, "train",
                             train=train)["input_ids"]

    whole = build(0, 0.0)
    cuts = {}
    for seed in (0, 1):
        blocks = build(seed, 0.3)
        assert len(blocks) == len(whole) and all(b == w[: len(b)] for b, w in zip(blocks, whole))
        rng = np.random.default_rng([seed, 0])
        cut, length = rng.random(len(whole)) < 0.3, rng.integers(1, 33, len(whole))
        cuts[seed] = [len(b) for b in blocks]
        assert cuts[seed] == [int(n) if c else 32 for c, n in zip(cut, length)]
        assert 0.15 < sum(n < 32 for n in cuts[seed]) / len(whole) < 0.45
    assert cuts[0] != cuts[1]  # another seed, other cuts
    assert build(0, 0.3) == build(0, 0.3)
    assert build(0, 0.3, train=False) == whole  # validation blocks are never cut

    # the same documents packed at another row index (a later map batch) are cut elsewhere
    pack = pack_fn(tiny_tokenizer, 32, "text", tiny_tokenizer.mask_token_id, 0.3, seed=0)
    first = pack({"text": corpus_texts}, list(range(len(corpus_texts))))["input_ids"]
    later = pack({"text": corpus_texts}, list(range(MAP_BATCH, MAP_BATCH + len(corpus_texts))))["input_ids"]
    assert first == build(0, 0.3)
    assert [len(b) for b in later] != [len(b) for b in first]
    assert all(b == w[: len(b)] for b, w in zip(later, whole))


def test_streaming_and_map_style_give_the_same_blocks(tiny_tokenizer):
    blocks = {}
    for streaming in (False, True):
        data_args = DataArguments(data_files=[str(CORPUS / "validation.jsonl")], block_size=32, streaming=streaming)
        raw = load_raw(data_args, data_args.data_files, "train")
        ds = build_dataset(raw, tiny_tokenizer, data_args, tiny_tokenizer.mask_token_id, 0, "eval", train=False)
        blocks[streaming] = [row["input_ids"] for _, row in zip(range(10), ds)]
    assert blocks[True] == blocks[False] and len(blocks[True]) == 10


def test_text_with_the_mask_token_is_rejected_naming_the_row(tiny_tokenizer):
    data_args = DataArguments(data_files=["x.jsonl"], block_size=16)
    texts = ["A clean row.", "Another one.", "Fine too.", "Here is <|mdm_mask|> inside.", "Last."]
    raw = Dataset.from_list([{"text": t} for t in texts])
    with pytest.raises(ValueError, match=r"Row 3 contains the mask token id"):
        build_dataset(raw, tiny_tokenizer, data_args, tiny_tokenizer.mask_token_id, 0, "train", train=True)


# ---- the loss ------------------------------------------------------------------------------------------------


def test_mdlm_objective_equals_llada_masked_loss(tiny_model, tiny_tokenizer, corpus_texts, tmp_path, spy_noise):
    trainer = make_trainer(tiny_model, tiny_tokenizer, tmp_path, objective="mdlm")
    batch = packed_batch(tiny_tokenizer, corpus_texts)
    torch.manual_seed(0)
    loss = trainer.compute_loss(tiny_model, batch)
    # LLaDA's pretraining loss, written independently: mask each token with p_mask = t, then
    # sum over masked tokens of CE / p_mask, divided by b * l.
    clean, noisy, p_mask = batch["input_ids"], spy_noise["noisy"], 1 - spy_noise["alpha"]
    masked = noisy == tiny_tokenizer.mask_token_id
    assert torch.equal(noisy[~masked], clean[~masked])  # k1 = 0: no uniform noise
    logits = tiny_model(noisy).logits
    logits[..., tiny_tokenizer.mask_token_id] = float("-inf")  # the model never predicts the mask
    token_loss = F.cross_entropy(logits[masked], clean[masked], reduction="none") / p_mask[:, None].expand_as(noisy)[masked]
    torch.testing.assert_close(loss, token_loss.sum() / clean.numel(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_items_in_batch", [None, 1000])
def test_compute_loss_returns_loss_and_no_outputs_when_asked_for_outputs(tiny_model, tiny_tokenizer, corpus_texts,
                                                                        tmp_path, num_items_in_batch):
    """Trainer's contract (prediction_step calls it so): `(loss, outputs)` with return_outputs, whichever path."""
    trainer = make_trainer(tiny_model, tiny_tokenizer, tmp_path)
    batch = packed_batch(tiny_tokenizer, corpus_texts)
    torch.manual_seed(0)
    plain = trainer.compute_loss(tiny_model, batch, num_items_in_batch=num_items_in_batch)
    torch.manual_seed(0)
    loss, outputs = trainer.compute_loss(tiny_model, batch, return_outputs=True, num_items_in_batch=num_items_in_batch)
    assert outputs is None and loss.ndim == 0 and torch.equal(loss, plain)


def direct_xdlm_loss(logits, noisy, clean, alpha, k1, mask_id):
    """The per-token XDLM loss [N] written directly on the V axis in float64, without the package's per-token
    statistics (test_diffusion.py checks the package's closed form against the KL limit of the Bayes posteriors):
    with r(e) = k1 / V + (1 - k1) [e = m], the model's p (mask excluded), f_x = alpha onehot(x) + (1 - alpha) r and
    f_p = alpha p + (1 - alpha) r,
    L = r(z) / (alpha f_x(z)) * (f_x(z) / f_p(z) - 1 - log(f_x(z) / f_p(z)) + sum_e f_x(e) log(f_x(e) / f_p(e))).
    logits [N, V], noisy / clean [N], alpha [N]."""
    V = logits.shape[-1]
    p = logits.double().index_fill(-1, torch.tensor([mask_id]), float("-inf")).softmax(-1)  # [N, V]
    r = torch.full((V,), k1 / V, dtype=torch.float64)
    r[mask_id] += 1 - k1
    a = alpha.double()[:, None]  # [N, 1]
    f_x = a * F.one_hot(clean, V).double() + (1 - a) * r  # [N, V]
    f_p = a * p + (1 - a) * r
    kl = torch.where(f_x > 0, f_x * (f_x / f_p).log(), 0.0).sum(-1)  # [N]
    ratio = (f_x.gather(-1, noisy[:, None]) / f_p.gather(-1, noisy[:, None])).squeeze(-1)
    return r[noisy] / (a[:, 0] * f_x.gather(-1, noisy[:, None]).squeeze(-1)) * (ratio - 1 - ratio.log() + kl)


FIXED_T = torch.tensor([0.15, 0.4, 0.65, 0.9])  # one t per row of packed_batch; none 0.5, where alpha = t


@pytest.mark.parametrize("implementation", ["fused", "unfused"])
@pytest.mark.parametrize("objective, k1, schedule", [
    ("mdlm", 0.0, "linear"), ("xdlm", 0.1, "loglinear"), ("xdlm", 0.5, "linear"), ("udlm", 1.0, "loglinear"),
])
def test_trainer_loss_is_the_xdlm_loss_at_each_rows_alpha_times_the_schedule_weight(
        tiny_model, tiny_tokenizer, corpus_texts, tmp_path, monkeypatch, spy_noise, objective, k1, schedule,
        implementation):
    """per_token_loss at t = FIXED_T against direct_xdlm_loss on the model's logits for the noisy ids the trainer
    drew, at alpha = 1 - t, weight 1 (linear) or alpha = 1 - (1 - eps) t, weight 1 - eps (log-linear, eps = 1e-3).
    Both are float32 computations of the same logits: rtol 2e-5 (the loss's float32 accuracy is 1e-5)."""
    monkeypatch.setattr(diffusion, "sample_t", lambda batch, **kwargs: FIXED_T[:batch].clone())
    given_k1 = k1 if objective == "xdlm" else None  # mdlm / udlm fix k1 themselves
    trainer = make_trainer(tiny_model, tiny_tokenizer, tmp_path, objective=objective, k1=given_k1, schedule=schedule,
                           loss_implementation=implementation)
    batch = packed_batch(tiny_tokenizer, corpus_texts)
    loss, counted = trainer.per_token_loss(tiny_model, batch)
    assert trainer.diffusion_args.k1 == k1 and bool(counted.all())
    eps = 1e-3 if schedule == "loglinear" else 0.0
    alpha, weight = 1 - (1 - eps) * FIXED_T.double(), 1 - eps  # [B], scalar
    noisy, clean = spy_noise["noisy"], batch["input_ids"]  # [B, L]
    assert torch.allclose(spy_noise["alpha"].double(), alpha)
    mask_id = tiny_tokenizer.mask_token_id
    assert k1 == 1 or bool((noisy == mask_id).any())  # masked tokens are scored ...
    assert k1 == 0 or bool(((noisy != clean) & (noisy != mask_id)).any())  # ... and so are uniformly noised ones
    with torch.no_grad():
        logits = tiny_model(noisy).logits  # [B, L, V]
    B, L, V = logits.shape
    want = weight * direct_xdlm_loss(logits.view(B * L, V), noisy.view(-1), clean.view(-1),
                                     alpha[:, None].expand(B, L).reshape(-1), k1, mask_id)
    torch.testing.assert_close(loss.double(), want, rtol=2e-5, atol=1e-8)


def test_ar_objective_is_the_shifted_cross_entropy(tiny_model, tiny_tokenizer, corpus_texts, tmp_path):
    """objective ar: the loss of position i is -log p(labels[i + 1] | tokens <= i) under the causal model, one
    value per counted next token (labels != -100), in row-major order; written here as a loop over positions."""
    batch = packed_batch(tiny_tokenizer, corpus_texts)
    batch["labels"][0, :5] = -100  # a prompt: its tokens are context only
    batch["labels"][2, 40:] = -100
    trainer = make_trainer(tiny_model, tiny_tokenizer, tmp_path, objective="ar")
    loss, counted = trainer.per_token_loss(tiny_model, batch)
    with torch.no_grad():
        logits = tiny_model(batch["input_ids"], is_causal=True).logits.double()  # [B, L, V]
    labels = batch["labels"]
    want = [-logits[b, i].log_softmax(-1)[labels[b, i + 1]] for b in range(labels.shape[0])
            for i in range(labels.shape[1] - 1) if labels[b, i + 1] != -100]
    assert int(counted.sum()) == len(want) == labels.numel() - labels.shape[0] - 4 - 24
    torch.testing.assert_close(loss.double(), torch.stack(want), rtol=1e-5, atol=1e-6)


def test_sft_prompt_is_never_noised_and_not_in_the_loss(tiny_model, tiny_tokenizer, tmp_path, spy_noise):
    rows = [
        {"prompt": "What does the module do?", "response": "It parses the command line."},
        {"prompt": "Name a data structure for queues.", "response": "A deque is a good choice for queues and stacks."},
    ]
    data_args = DataArguments(data_files=["x.jsonl"], mode="sft", block_size=64)
    ds = build_dataset(Dataset.from_list(rows), tiny_tokenizer, data_args, tiny_tokenizer.mask_token_id, 0, "train",
                       train=True)
    batch = XDLMCollator(tiny_tokenizer.eos_token_id, count_padding=True)([ds[0], ds[1]])
    prompt = batch["labels"] == -100
    prompt_len = len(tiny_tokenizer.apply_chat_template([{"role": "user", "content": rows[0]["prompt"]}],
                                                       add_generation_prompt=True, return_dict=False))
    assert prompt[0].sum() == prompt_len and bool(prompt[:, 0].all())
    assert batch["input_ids"][0, -1] == tiny_tokenizer.eos_token_id and batch["labels"][0, -1] == tiny_tokenizer.eos_token_id
    assert "attention_mask" not in batch  # LLaDA SFT: EOS padding is attended and predicted
    trainer = make_trainer(tiny_model, tiny_tokenizer, tmp_path, mode="sft")
    for seed in range(5):
        torch.manual_seed(seed)
        loss, counted = trainer.per_token_loss(tiny_model, batch)
        assert torch.equal(spy_noise["noisy"][prompt], batch["input_ids"][prompt])  # prompt unchanged
        assert torch.equal(counted, ~prompt) and loss.shape == (int((~prompt).sum()),)  # prompt not counted
        assert bool((spy_noise["noisy"][~prompt] != batch["input_ids"][~prompt]).any())  # the response is noised


OVERLONG_ROWS = [
    {"prompt": "Short?", "response": "Yes."},
    {"prompt": "Tell me everything.", "response": "word " * 80},
    {"prompt": "And again.", "response": "more " * 80},
]


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("choice", ["truncate", "drop"])
def test_overlong_sft_rows_are_counted_and_reported_and_dropped_on_request(tiny_tokenizer, caplog, streaming, choice):
    data_args = DataArguments(data_files=["x.jsonl"], mode="sft", block_size=32, overlong_sft_rows=choice)
    raw = Dataset.from_list(OVERLONG_ROWS)
    raw = raw.to_iterable_dataset() if streaming else raw
    with caplog.at_level("WARNING", logger="llada_xdlm.train"):
        rows = list(build_dataset(raw, tiny_tokenizer, data_args, tiny_tokenizer.mask_token_id, 0, "train", train=True))
    warnings = [r.getMessage() for r in caplog.records if "longer than block_size=32" in r.getMessage()]
    if streaming:
        assert len(warnings) == 2 and "(2 so far)" in warnings[-1]  # one per overlong row, as they arrive
    else:
        assert len(warnings) == 1 and warnings[0].startswith("2 of 3 train SFT rows")
    lengths = [len(r["input_ids"]) for r in rows]
    assert set(rows[0]) == {"input_ids", "labels"}
    if choice == "drop":
        assert len(rows) == 1 and rows[0]["input_ids"][-1] == tiny_tokenizer.eos_token_id  # only the short row
    else:
        assert len(rows) == 3 and lengths[1] == lengths[2] == 32 and "left out" not in warnings[0]
        assert rows[1]["input_ids"][-1] != tiny_tokenizer.eos_token_id  # cut: the EOS is lost, and the log says so


def test_gradient_accumulation_gives_the_same_update_as_one_batch(tmp_path, monkeypatch):
    """Rows of different lengths (random-length trick at 100%) make the per-micro-batch token counts differ, so
    only a per-token normalisation over the whole step makes GA 2 x 2 rows equal one batch of 4."""
    monkeypatch.setattr(diffusion, "sample_t", fixed_sample_t)
    monkeypatch.setattr(diffusion, "forward_process", fixed_forward_process)
    common = dict(max_steps=1, optim="sgd", learning_rate=0.5, random_length_prob=1.0, save_strategy="no",
                  lr_scheduler_type="constant", max_grad_norm=1e9)
    main([write_recipe(tmp_path, "one", per_device_train_batch_size=4, gradient_accumulation_steps=1, **common)])
    main([write_recipe(tmp_path, "ga", per_device_train_batch_size=2, gradient_accumulation_steps=2, **common)])
    one, ga = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "ga" / "model.safetensors")
    for key in one:
        torch.testing.assert_close(one[key], ga[key], rtol=1e-5, atol=1e-6)
    assert losses(tmp_path / "one")[1] == pytest.approx(losses(tmp_path / "ga")[1], rel=1e-5)


def test_resume_reproduces_the_uninterrupted_losses(tmp_path):
    recipe = write_recipe(tmp_path, "run", max_steps=6, save_strategy="steps", save_steps=3, random_length_prob=0.5)
    main([recipe])
    full = losses(tmp_path / "run")
    main([recipe, "--output_dir", str(tmp_path / "resumed"),
          "--resume_from_checkpoint", str(tmp_path / "run" / "checkpoint-3")])
    resumed = losses(tmp_path / "resumed")
    assert sorted(resumed) == sorted(full) == [1, 2, 3, 4, 5, 6]  # steps 1-3 come from the checkpoint's state
    assert [resumed[s] for s in (4, 5, 6)] == [full[s] for s in (4, 5, 6)]  # exact


def test_recipe_as_run_is_saved_beside_the_model_and_in_every_checkpoint_and_repeats_the_run(tmp_path):
    recipe = write_recipe(tmp_path, "run", max_steps=3, save_strategy="steps", save_steps=2)
    main([recipe, "--k1", "0.3", "--learning_rate", "3e-3"])
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved == {**yaml.safe_load(Path(recipe).read_text()), "k1": 0.3, "learning_rate": 3e-3}
    assert yaml.safe_load((tmp_path / "run" / "checkpoint-2" / "recipe.yaml").read_text()) == saved
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["num_input_tokens_seen"] == 3 * 4 * 64  # steps x batch x block_size: the model card's tokens
    # The saved recipe alone repeats the run: the same losses, step for step.
    main([str(tmp_path / "run" / "recipe.yaml"), "--output_dir", str(tmp_path / "again")])
    assert losses(tmp_path / "again") == losses(tmp_path / "run")


# ---- LoRA ----------------------------------------------------------------------------------------------------


def test_lora_trains_only_adapters_and_saves_reloads_merges(tiny_config, tiny_tokenizer, corpus_texts, tmp_path):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(0)
    base_state = {k: v.clone() for k, v in LLaDAModelLM(tiny_config).state_dict().items()}
    model = LLaDAModelLM(tiny_config)
    model.load_state_dict(base_state)
    model = add_lora(model, ModelArguments(model_config={}, use_lora=True, lora_r=4, lora_dropout=0.0))
    wrapped = [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    assert len(wrapped) == 7 * tiny_config.n_layers  # q, k, v, attn_out, ff_proj, up_proj, ff_out per block
    assert not any(name.endswith("transformer.ff_out") for name in wrapped)  # never the LM head

    data_args = DataArguments(data_files=["x.jsonl"], block_size=32)
    train = build_dataset(Dataset.from_list([{"text": t} for t in corpus_texts]), tiny_tokenizer, data_args,
                          tiny_tokenizer.mask_token_id, 0, "train", train=True)
    trainer = make_trainer(model, tiny_tokenizer, tmp_path, max_steps=3, learning_rate=1e-2,
                           per_device_train_batch_size=4, save_strategy="no")
    trainer.train_dataset = train
    trainer.train()
    changed = set()
    for name, param in model.named_parameters():
        key = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if "lora_" in name:
            assert param.requires_grad
            changed.add(name) if "lora_B" in name and bool(param.abs().sum() > 0) else None
        else:
            assert not param.requires_grad and torch.equal(param, base_state[key]), name
    assert len(changed) == len(wrapped)  # every adapter learned (lora_B starts at zero)

    model.save_pretrained(tmp_path / "adapter")
    model.eval()
    ids = packed_batch(tiny_tokenizer, corpus_texts, B=2, L=32)["input_ids"]
    with torch.no_grad():
        expected = model(ids).logits
        base = LLaDAModelLM(tiny_config)
        base.load_state_dict(base_state)
        reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        torch.testing.assert_close(reloaded(ids).logits, expected)
        merged = reloaded.merge_and_unload()
        assert not any(isinstance(m, LoraLayer) for m in merged.modules())
        torch.testing.assert_close(merged(ids).logits, expected, rtol=1e-4, atol=1e-5)


# ---- bad inputs: a clear error before training starts ---------------------------------------------------------


@pytest.fixture
def saved_models(tmp_path, tiny_tokenizer):
    """A model without a mask id + a tokenizer without a mask token; and a model smaller than the tokenizer."""
    dirs = {}
    no_mask_tok = PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer.backend_tokenizer, bos_token="<|startoftext|>",
                                          eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    small = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden_size=64, max_sequence_length=64,
                 bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
                 pad_token_id=tiny_tokenizer.eos_token_id)
    V = len(tiny_tokenizer)
    for name, config, tokenizer in [
        ("no_mask", LLaDAConfig(vocab_size=V, embedding_size=V, mask_token_id=None, **small), no_mask_tok),
        ("small_vocab", LLaDAConfig(vocab_size=V - 50, embedding_size=V - 50, mask_token_id=2, **small), tiny_tokenizer),
    ]:
        LLaDAModelLM(config).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
        dirs[name] = str(tmp_path / name)
    return dirs


def _data_file(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [str(path)]


BAD_INPUTS = {
    "unknown_objective": (dict(objective="bert"), r"objective='bert' \(str\) is not one of 'xdlm', 'mdlm'"),
    "k1_above_one": (dict(k1=1.5), r"k1=1.5 is outside \[0, 1\]"),
    "k1_below_zero": (dict(k1=-0.1), r"k1=-0.1 is outside \[0, 1\]"),
    "block_longer_than_model": (dict(block_size=128), r"block_size=128 exceeds the model's max_sequence_length=64"),
    "no_text_column": ("no_text", r"no column \['text'\] \(columns: \['content'\]\): set text_column"),
    "empty_dataset": ("empty", r"dataset is empty"),
    "no_mask_id": ("no_mask", r"No mask token id"),
    "vocab_mismatch": ("small_vocab", r"Vocabulary mismatch: the tokenizer has \d+ ids but the model scores only"),
    "unknown_recipe_key": (dict(learning_rat=1e-3), r"unknown keys \['learning_rat'\]"),
    "streaming_without_max_steps": (dict(streaming=True, max_steps=-1), r"set max_steps"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_a_clear_error_before_training(case, tmp_path, saved_models):
    overrides, message = BAD_INPUTS[case]
    if overrides == "no_text":
        overrides = dict(data_files=_data_file(tmp_path, "c.jsonl", [{"content": "Some prose here."}]))
    elif overrides == "empty":
        (tmp_path / "empty.txt").write_text("")
        overrides = dict(data_files=[str(tmp_path / "empty.txt")])
    elif isinstance(overrides, str):
        overrides = dict(model_name_or_path=saved_models[overrides], model_config=None)
    recipe = write_recipe(tmp_path, **overrides)
    with pytest.raises(ValueError, match=message):
        main([recipe])
    assert not (tmp_path / "recipe" / "trainer_state.json").exists()


def test_fused_loss_with_activation_checkpointing_gives_the_same_gradients(tiny_config, tiny_tokenizer, corpus_texts,
                                                                          tmp_path):
    batch = packed_batch(tiny_tokenizer, corpus_texts)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = LLaDAModelLM(tiny_config).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        trainer = make_trainer(model, tiny_tokenizer, tmp_path)
        torch.manual_seed(1)
        trainer.compute_loss(model, batch).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)
