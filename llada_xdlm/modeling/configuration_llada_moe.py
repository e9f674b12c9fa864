"""LLaDA-MoE configuration.

Reads the `config.json` of inclusionAI/LLaDA-MoE-7B-A1B-Base / -Instruct with the official key names (hidden_size,
num_experts, num_experts_per_tok, expert_intermediate_size, moe_layer_freq, qk_layernorm, ...). That file names its
model_type "llada", like LLaDA-8B's; `llada_xdlm.modeling.load_config` tells the two apart by its MoE keys, and a
config saved here is written with model_type "lladamoe". The defaults describe LLaDA-MoE-7B-A1B (16 layers of 16
heads, d 2048, 64 experts of width 1024 with 8 active per token, q/k RMSNorm, RoPE theta 50000, mask id 156895).

Keys the official modeling code reads but that would build a model it does not (rope_scaling, a tied LM head,
attention dropout) are refused. Keys it stores and never reads (norm_topk_prob, moe_router_score_function,
routed_scaling_factor, router_num_group, router_topk_group) are kept unchanged and, as there, have no effect:
routing is always a softmax over all experts, top-k, without renormalising the k weights.

How the model was trained (objective, k1, schedule, eps, antithetic) and its sampler defaults (`sampling`) are
recorded exactly as in LLaDAConfig. Standard LLaDA names (d_model, n_layers, max_sequence_length, embedding_size,
...) are aliases, so code written against LLaDAConfig reads this config unchanged.
"""

from transformers import PreTrainedConfig

from .configuration_llada import check_training_record


class LLaDAMoEConfig(PreTrainedConfig):
    model_type = "lladamoe"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "d_model": "hidden_size",
        "n_heads": "num_attention_heads",
        "n_kv_heads": "num_key_value_heads",
        "n_layers": "num_hidden_layers",
        "max_sequence_length": "max_position_embeddings",
        "embedding_size": "vocab_size",  # one embedding row per id, as in the official checkpoint
    }

    def __init__(
        self,
        vocab_size: int = 157184,
        hidden_size: int = 2048,
        dense_intermediate_size: int = 8192,  # the MLP of a layer whose moe_layer_freq entry is 0
        expert_intermediate_size: int = 1024,
        shared_expert_intermediate_size: int | None = None,  # None: no shared expert
        num_hidden_layers: int = 16,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = None,  # None: plain multi-head attention
        hidden_act: str = "silu",
        max_position_embeddings: int = 8192,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 50000.0,
        partial_rotary_factor: float = 1.0,  # RoPE on the first partial_rotary_factor * head_dim dims of a head
        rope_scaling: dict | None = None,
        attention_bias: bool = False,
        attention_dropout: float = 0.0,
        clip_qkv: float | None = None,  # clamp q, k, v to [-clip_qkv, clip_qkv] after the projections
        num_experts: int = 64,
        num_experts_per_tok: int = 8,
        qk_layernorm: bool = True,  # RMSNorm over each head's q and k (weight [head_dim], shared by the heads)
        moe_layer_freq: list[int] | None = None,  # per layer: 0 = dense MLP, otherwise MoE; None = all MoE
        moe_router_enable_expert_bias: bool = False,  # a per-expert bias added to the router probabilities
        output_router_logits: bool = False,
        router_aux_loss_coef: float = 0.01,
        norm_topk_prob: bool | None = None,  # ---- kept, unused by the official code (see the module docstring)
        moe_router_score_function: str | None = None,
        routed_scaling_factor: float = 1,
        router_num_group: int | None = -2,
        router_topk_group: int | None = -2,  # ----
        mask_token_id: int = 156895,
        bos_token_id: int | None = None,
        eos_token_id: int | None = 156892,
        pad_token_id: int | None = 156892,
        tie_word_embeddings: bool = False,
        # ---- how the model was trained, and its sampler defaults (docs/training.md, "What a checkpoint records")
        objective: str | None = None,
        k1: float = 0.0,
        schedule: str = "linear",
        eps: float = 1e-3,
        antithetic: bool = False,
        sampling: dict | None = None,
        # ----
        use_cache: bool = False,
        **kwargs,
    ):
        if num_key_value_heads is None:
            num_key_value_heads = num_attention_heads
        if moe_layer_freq is None:
            moe_layer_freq = [1] * num_hidden_layers
        if hidden_size % num_attention_heads != 0:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_attention_heads="
                             f"{num_attention_heads}; head_dim = hidden_size / num_attention_heads must be an integer.")
        if num_attention_heads % num_key_value_heads != 0:
            raise ValueError(f"num_attention_heads={num_attention_heads} is not divisible by num_key_value_heads="
                             f"{num_key_value_heads}; grouped-query attention needs the one to divide the other.")
        if len(moe_layer_freq) != num_hidden_layers:
            raise ValueError(f"moe_layer_freq has {len(moe_layer_freq)} entries but num_hidden_layers="
                             f"{num_hidden_layers}: give one per layer (0 = dense MLP, 1 = mixture of experts).")
        if not 1 <= num_experts_per_tok <= num_experts:
            raise ValueError(f"num_experts_per_tok={num_experts_per_tok} must lie in [1, num_experts={num_experts}].")
        rotary_dim = int(hidden_size // num_attention_heads * partial_rotary_factor)
        if not 0 < partial_rotary_factor <= 1 or rotary_dim % 2:
            raise ValueError(f"partial_rotary_factor={partial_rotary_factor} must lie in (0, 1] and rotate an even "
                             f"number of each head's {hidden_size // num_attention_heads} dims.")
        unsupported = {  # read by the official code, but a model it would build differently
            "rope_scaling": (rope_scaling, None),
            "attention_dropout": (attention_dropout, 0.0),
            "tie_word_embeddings": (tie_word_embeddings, False),
        }
        for key, (value, supported) in unsupported.items():
            if value != supported:
                raise ValueError(f"{key}={value!r} is not supported by this LLaDA-MoE implementation; use "
                                 f"{supported!r}.")
        check_training_record(objective, k1, schedule, eps, antithetic, sampling)

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.dense_intermediate_size = dense_intermediate_size
        self.expert_intermediate_size = expert_intermediate_size
        self.shared_expert_intermediate_size = shared_expert_intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.partial_rotary_factor = partial_rotary_factor
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.clip_qkv = clip_qkv
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.qk_layernorm = qk_layernorm
        self.moe_layer_freq = list(moe_layer_freq)
        self.moe_router_enable_expert_bias = moe_router_enable_expert_bias
        self.output_router_logits = output_router_logits
        self.router_aux_loss_coef = router_aux_loss_coef
        self.norm_topk_prob = norm_topk_prob
        self.moe_router_score_function = moe_router_score_function
        self.routed_scaling_factor = routed_scaling_factor
        self.router_num_group = router_num_group
        self.router_topk_group = router_topk_group
        self.mask_token_id = mask_token_id
        self.objective = objective  # how the model was trained ...
        self.k1 = k1
        self.schedule = schedule
        self.eps = eps
        self.antithetic = antithetic
        self.sampling = dict(sampling or {})  # ... and sampled by default
        self.use_cache = use_cache
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=False,
            **kwargs,
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        """How many leading dims of each head RoPE rotates (all of them in LLaDA-MoE-7B-A1B)."""
        return int(self.head_dim * self.partial_rotary_factor)
