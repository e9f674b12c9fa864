"""Forward+backward time of LLaDAModelLM vs transformers' Llama of the same size, made bidirectional, on CPU.

Both models: same widths, untied LM head, sdpa attention, float32; Llama's causal mask is switched off so both do
the same work. Prints each median time and the ratio ours / Llama (target <= 1.10).
"""

import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llada_xdlm import LLaDAConfig, LLaDAModelLM


def bidirectional_llama(args) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.d_model, intermediate_size=args.mlp, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.heads, max_position_embeddings=args.length,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=False, attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config)
    for layer in model.model.layers:
        layer.self_attn.is_causal = False
    return model


def time_fwd_bwd(model, ids, mask, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(ids, attention_mask=mask).logits.float().logsumexp(-1).mean().backward()
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--d_model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--mlp", type=int, default=1536)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    torch.manual_seed(0)
    ours = LLaDAModelLM(LLaDAConfig(
        d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.heads, mlp_hidden_size=args.mlp,
        vocab_size=args.vocab, embedding_size=args.vocab, max_sequence_length=args.length, mask_token_id=args.vocab - 1,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )).train()
    llama = bidirectional_llama(args).train()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in llama.parameters())

    ids = torch.randint(0, args.vocab, (args.batch, args.length))
    mask = torch.ones_like(ids)
    with torch.no_grad():  # the baseline really is bidirectional: position 0 sees the last token
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % args.vocab
        assert not torch.allclose(llama(ids).logits[:, 0], llama(changed).logits[:, 0])

    time_fwd_bwd(ours, ids, mask, 1), time_fwd_bwd(llama, ids, mask, 1)  # warm-up
    t_ours, t_llama = [], []
    for _ in range(args.repeats):  # interleave so drift in machine load hits both equally
        t_ours += time_fwd_bwd(ours, ids, mask, 1)
        t_llama += time_fwd_bwd(llama, ids, mask, 1)
    ours_s, llama_s = statistics.median(t_ours), statistics.median(t_llama)
    print(f"shape: batch {args.batch} x length {args.length}, d_model {args.d_model}, {args.layers} layers, "
          f"V {args.vocab}, threads {torch.get_num_threads()}")
    print(f"llama (bidirectional) fwd+bwd: {llama_s * 1e3:8.1f} ms (median of {args.repeats})")
    print(f"LLaDAModelLM          fwd+bwd: {ours_s * 1e3:8.1f} ms (median of {args.repeats})")
    print(f"ratio ours / llama: {ours_s / llama_s:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
