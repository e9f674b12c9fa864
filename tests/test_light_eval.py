"""`xdlm ppl` (NELBO bound, llada_xdlm.evaluation.perplexity) and `xdlm gen-ppl` (generative perplexity + unigram
entropy, llada_xdlm.evaluation.gen_ppl)."""

import json
import math

import pytest
import torch

from llada_xdlm import LLaDAModelLM
from llada_xdlm.diffusion import forward_process, sample_t, xdlm_loss
from llada_xdlm.evaluation import gen_ppl as eval_gen_ppl
from llada_xdlm.evaluation import perplexity as eval_ppl


@pytest.fixture
def val_blocks(corpus_texts, tiny_tokenizer):
    return eval_ppl.text_blocks(corpus_texts[-40:], tiny_tokenizer, block_size=32, max_blocks=8)


def train_a_few_steps(model, blocks, k1, steps=40):
    """Plain XDLM training on `blocks` through the math module (the trainer's own tests cover the trainer)."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    V = model.config.embedding_size
    for _ in range(steps):
        alpha = 1 - sample_t(len(blocks), generator=g)  # linear schedule, weight 1
        noisy = forward_process(blocks, alpha, k1, model.config.mask_token_id, V, generator=g)
        loss = xdlm_loss(model(noisy).logits, noisy, blocks, alpha, k1, model.config.mask_token_id).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_text_blocks_pack_documents_with_eos(tiny_tokenizer):
    blocks = eval_ppl.text_blocks(["one two three", "four five"], tiny_tokenizer, block_size=3)
    stream = [*tiny_tokenizer("one two three")["input_ids"], tiny_tokenizer.eos_token_id,
              *tiny_tokenizer("four five")["input_ids"], tiny_tokenizer.eos_token_id]
    assert blocks.shape == (len(stream) // 3, 3)
    assert blocks.flatten().tolist() == stream[: blocks.numel()]
    with pytest.raises(ValueError, match="block_size"):
        eval_ppl.text_blocks(["hi"], tiny_tokenizer, block_size=1000)


def test_ppl_bound_is_deterministic_given_the_seed(tiny_model, val_blocks):
    a = eval_ppl.ppl_bound(tiny_model, val_blocks, mc_num=4, seed=3, k1=0.1)
    b = eval_ppl.ppl_bound(tiny_model, val_blocks, mc_num=4, seed=3, k1=0.1)
    c = eval_ppl.ppl_bound(tiny_model, val_blocks, mc_num=4, seed=4, k1=0.1)
    assert a["nelbo"] == b["nelbo"]
    assert a["nelbo"] != c["nelbo"]
    assert a["tokens"] == val_blocks.numel() and a["mc_num"] == 4 and a["seed"] == 3
    assert a["ppl_bound"] == pytest.approx(math.exp(a["nelbo"]))


def test_a_model_trained_a_few_steps_has_a_lower_ppl_bound_than_its_init(tiny_model, corpus_texts, tiny_tokenizer,
                                                                           val_blocks):
    before = eval_ppl.ppl_bound(tiny_model, val_blocks, mc_num=4, seed=0, k1=0.1)["ppl_bound"]
    train = eval_ppl.text_blocks(corpus_texts[:-40], tiny_tokenizer, block_size=32, max_blocks=32)
    after = eval_ppl.ppl_bound(train_a_few_steps(tiny_model, train, k1=0.1), val_blocks, mc_num=4, seed=0,
                               k1=0.1)["ppl_bound"]
    assert after < 0.7 * before


def test_ppl_command_on_a_local_jsonl_file(tiny_model, tiny_tokenizer, corpus_texts, tmp_path):
    tiny_model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus_texts[:30]))
    out = tmp_path / "ppl.json"
    results = eval_ppl.main(["--model", str(tmp_path / "model"), "--datasets", str(data), "--block_size", "32",
                             "--max_blocks", "4", "--mc_num", "2", "--output", str(out)])
    r = results[str(data)]
    assert r["blocks"] == 4 and r["block_size"] == 32 and math.isfinite(r["ppl_bound"])
    assert json.loads(out.read_text())[str(data)]["nelbo"] == r["nelbo"]
    with pytest.raises(ValueError, match="unknown corpus"):
        eval_ppl.load_texts("wikitext-9")


def test_unigram_ppl_scores_each_token_by_its_add_one_training_frequency():
    # counts over 4 ids: [0, 2, 3, 0] -> add-one probabilities [1, 3, 4, 1] / 9, ragged rows counted alike
    ppl = eval_ppl.unigram_ppl([[1, 1, 2], [2, 2]], torch.tensor([[1, 3], [2, 2]]), vocab_size=4)
    assert ppl == pytest.approx((9 / 3 * 9 / 1 * 9 / 4 * 9 / 4) ** (1 / 4), rel=1e-12)


def test_unigram_entropy_of_identical_samples_is_the_hand_computed_value():
    row = torch.tensor([5, 5, 7, 9, 5, 7, 11, 5])  # frequencies 4/8, 2/8, 1/8, 1/8
    expected = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 2 * 0.125 * math.log(0.125))
    assert eval_gen_ppl.unigram_entropy(row.repeat(6, 1)) == pytest.approx(expected, rel=1e-12)
    assert eval_gen_ppl.unigram_entropy(torch.full((3, 8), 4)) == 0.0


def test_gen_ppl_of_a_uniform_evaluator_is_its_vocabulary_size(tiny_config, tiny_tokenizer):
    evaluator = LLaDAModelLM(tiny_config).eval()
    with torch.no_grad():
        evaluator.get_output_embeddings().weight.zero_()  # logits all 0: every token has probability 1 / V
    ppl = eval_gen_ppl.gen_ppl(evaluator, tiny_tokenizer, ["The module returns a list.", "Open the file."])
    assert ppl == pytest.approx(tiny_config.embedding_size, rel=1e-5)


def test_gen_ppl_of_a_sharp_one_layer_evaluator_matches_prefix_by_prefix_scoring(tiny_config, tiny_tokenizer):
    """Gen-PPL = exp(total NLL / scored tokens), each token scored given only the tokens before it. With one layer a
    bidirectional forward of the prefix ids[:i] gives at its last position exactly the causal prediction of
    ids[i], so the expected value is computed prefix by prefix without causal attention. The LM head is scaled
    (logits std ~3) so that the evaluator is far from uniform and seeing the next token changes its score (by ~20%
    here); two texts of different lengths in one batch check that padding is not scored."""
    tiny_config.n_layers = 1
    torch.manual_seed(0)
    evaluator = LLaDAModelLM(tiny_config).eval()
    with torch.no_grad():
        evaluator.get_output_embeddings().weight.mul_(20)
    texts = ["The module returns a list.", "Open the file and read every line of it."]
    nll, tokens = 0.0, 0
    for text in texts:
        ids = [tiny_tokenizer.bos_token_id] + tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        for i in range(1, len(ids)):
            with torch.no_grad():
                logits = evaluator(torch.tensor([ids[:i]])).logits[0, -1].double()  # [V] prediction of ids[i]
            nll -= logits.log_softmax(-1)[ids[i]].item()
            tokens += 1
    ppl = eval_gen_ppl.gen_ppl(evaluator, tiny_tokenizer, texts, batch_size=2)
    assert ppl == pytest.approx(math.exp(nll / tokens), rel=1e-5)


@pytest.mark.parametrize("sampler", ["ancestral", "remask"])
def test_measure_reports_gen_ppl_and_entropy_for_both_samplers(tiny_model, tiny_config, tiny_tokenizer,
                                                               sampler):
    torch.manual_seed(1)
    evaluator = LLaDAModelLM(tiny_config).eval()
    results = eval_gen_ppl.measure(tiny_model, tiny_tokenizer, evaluator, tiny_tokenizer, steps_list=[2, 4],
                                   num_samples=5, length=16, sampler=sampler, batch_size=2, seed=0, k1=0.1)
    assert [r["steps"] for r in results] == [2, 4]
    for r in results:
        assert r["num_samples"] == 5 and r["sampler"] == sampler and r["k1"] == 0.1
        assert 1 < r["gen_ppl"] < 10 * tiny_config.embedding_size
        assert 0 < r["entropy"] <= math.log(16)
    samples = eval_gen_ppl.sample_sequences(tiny_model, 3, 16, 4, sampler=sampler, batch_size=2, seed=0, k1=0.1)
    assert samples.shape == (3, 16) and not bool((samples == tiny_config.mask_token_id).any())


def test_gen_ppl_command_with_a_tiny_llada_ar_evaluator(tiny_model, tiny_config, tiny_tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    LLaDAModelLM(tiny_config).save_pretrained(tmp_path / "evaluator")
    tiny_tokenizer.save_pretrained(tmp_path / "evaluator")
    out = tmp_path / "gen.json"
    results = eval_gen_ppl.main([
        "--model", str(tmp_path / "model"), "--evaluator", str(tmp_path / "evaluator"), "--num_samples", "3",
        "--length", "8", "--steps", "2", "--batch_size", "3", "--output", str(out)])
    assert len(results) == 1 and math.isfinite(results[0]["gen_ppl"]) and results[0]["entropy"] > 0
    assert json.loads(out.read_text())[0]["gen_ppl"] == results[0]["gen_ppl"]
