"""LLaDA configuration.

Reads the official `config.json` of GSAI-ML/LLaDA-8B-Base unchanged: every OLMo-era key is accepted and kept
(unknown keys become attributes and are written back on save). The defaults describe LLaDA-8B itself, so a
config with missing keys never silently builds some other model. Standard Hugging Face names (hidden_size,
num_attention_heads, ...) are aliases of the official ones.

How the model was trained is recorded too (objective, k1, schedule, eps, antithetic; written by `xdlm train`), with
the sampler settings it is sampled with by default (`sampling`, SamplerConfig's fields); sampling and evaluation
read them as their defaults. A config without these keys (LLaDA-8B-Base's) describes LLaDA's own pretraining:
masked diffusion (k1 0), alpha = 1 - t with t ~ U(1e-3, 1), no antithetic draws; objective None (not recorded)
reads as "mdlm" at k1 0, "udlm" at k1 1 and "xdlm" otherwise (llada_xdlm.checkpoint.trained_setting).

This file imports only transformers: it is shipped to the Hub as remote code next to modeling_llada.py.
"""

from transformers import PreTrainedConfig

OBJECTIVES = ("xdlm", "mdlm", "udlm", "ar")
SCHEDULES = ("linear", "loglinear")

# Keys of the official config.json that this implementation does not read, with LLaDA-8B's values. They are written
# into every saved config, so the official modeling code loading a checkpoint built here sees LLaDA-8B's values and
# not its own class defaults (which differ: dropouts 0.1, init_fn "normal", ...).
OFFICIAL_KEYS = {
    "alibi": False,
    "alibi_bias_max": 8.0,
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "embedding_dropout": 0.0,
    "flash_attention": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "layer_norm_with_affine": True,
    "mlp_ratio": 4,
    "multi_query_attention": None,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rope_full_precision": True,
}
# Of those, the ones that would change the model's function: any other value is refused.
FIXED_OFFICIAL_KEYS = ["alibi", "attention_dropout", "attention_layer_norm", "bias_for_layer_norm",
                       "embedding_dropout", "include_qkv_bias", "layer_norm_with_affine", "residual_dropout"]


def check_training_record(objective, k1, schedule, eps, antithetic, sampling) -> None:
    """Refuse training settings no objective here produces (the keys every backbone's config records, written by
    `xdlm train` and read back by sampling and evaluation)."""
    if not 0.0 <= k1 <= 1.0:
        raise ValueError(f"k1={k1} must lie in [0, 1] (0 = MDLM masking, 1 = uniform noise).")
    if objective is not None and objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not one of {OBJECTIVES}.")
    fixed_k1 = {"mdlm": 0.0, "udlm": 1.0}.get(objective)
    if fixed_k1 is not None and k1 != fixed_k1:
        raise ValueError(f"objective={objective!r} trains with k1={fixed_k1}, but k1={k1}; set k1={fixed_k1} or "
                         f"objective='xdlm'.")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not one of {SCHEDULES}.")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps={eps} must lie in [0, 1) (training draws t from [eps, 1)).")
    if not isinstance(antithetic, bool):
        raise ValueError(f"antithetic={antithetic!r} must be true or false.")
    if sampling is not None and not isinstance(sampling, dict):
        raise ValueError(f"sampling={sampling!r} must be a mapping of sampler settings, e.g. "
                         f"{{'steps': 32, 'gen_length': 64}}.")


class LLaDAConfig(PreTrainedConfig):
    model_type = "llada"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_key_value_heads": "n_kv_heads",
        "num_hidden_layers": "n_layers",
        "intermediate_size": "mlp_hidden_size",
        "max_position_embeddings": "max_sequence_length",
    }

    def __init__(
        self,
        d_model: int = 4096,
        n_heads: int = 32,
        n_kv_heads: int | None = None,  # None: plain multi-head attention (= n_heads), as LLaDA-8B
        n_layers: int = 32,
        mlp_hidden_size: int = 12288,
        vocab_size: int = 126464,
        embedding_size: int | None = 126464,
        max_sequence_length: int = 4096,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-5,
        init_std: float = 0.02,
        activation_type: str = "silu",
        block_type: str = "llama",
        layer_norm_type: str = "rms",
        include_bias: bool = False,
        rope: bool = True,
        weight_tying: bool = False,
        scale_logits: bool = False,
        input_emb_norm: bool = False,
        mask_token_id: int = 126336,
        bos_token_id: int | None = 126080,
        eos_token_id: int | None = 126081,
        pad_token_id: int | None = 126081,
        # ---- how the model was trained, and its sampler defaults (docs/training.md, "What a checkpoint records")
        objective: str | None = None,  # None: not recorded (LLaDA-8B-Base, a fresh model), read from k1
        k1: float = 0.0,
        schedule: str = "linear",
        eps: float = 1e-3,
        antithetic: bool = False,
        sampling: dict | None = None,  # SamplerConfig fields, e.g. {"steps": 32, "gen_length": 64}
        # ----
        use_cache: bool = False,
        **kwargs,
    ):
        if "num_experts" in kwargs:  # LLaDA-MoE's official config.json also names its model_type "llada"
            raise ValueError(
                "This config describes LLaDA-MoE (it has num_experts), not LLaDA-8B: load it with LLaDAMoEConfig / "
                "LLaDAMoEModelLM, or llada_xdlm.modeling.load_config(path), which picks the class from config.json."
            )
        if n_kv_heads is None:  # OLMo convention: null means plain multi-head attention
            n_kv_heads = n_heads
        if embedding_size is None:
            embedding_size = vocab_size
        if d_model % n_heads != 0:
            raise ValueError(
                f"d_model={d_model} is not divisible by n_heads={n_heads}; choose n_heads so that "
                f"head_dim = d_model / n_heads is an integer (LLaDA-8B: 4096 / 32 = 128)."
            )
        if n_heads % n_kv_heads != 0:
            raise ValueError(
                f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}; grouped-query attention needs "
                f"n_kv_heads to divide n_heads (set n_kv_heads = n_heads for plain multi-head attention)."
            )
        if embedding_size < vocab_size:
            raise ValueError(
                f"embedding_size={embedding_size} is smaller than vocab_size={vocab_size}; the embedding must have "
                f"a row for every token id (set embedding_size >= vocab_size)."
            )
        check_training_record(objective, k1, schedule, eps, antithetic, sampling)
        # Options of the OLMo code base that LLaDA-8B does not use; refuse rather than build a different model.
        unsupported = {
            "activation_type": (activation_type, "silu"),
            "block_type": (block_type, "llama"),
            "layer_norm_type": (layer_norm_type, "rms"),
            "include_bias": (include_bias, False),
            "rope": (rope, True),
            "weight_tying": (weight_tying, False),
            "scale_logits": (scale_logits, False),
            "input_emb_norm": (input_emb_norm, False),
            "tie_word_embeddings": (kwargs.pop("tie_word_embeddings", False), False),
        }
        for key, value in OFFICIAL_KEYS.items():
            kwargs.setdefault(key, value)
            if key in FIXED_OFFICIAL_KEYS:
                unsupported[key] = (kwargs[key], value)
        if kwargs["multi_query_attention"]:
            unsupported["multi_query_attention"] = (kwargs["multi_query_attention"], None)
        for key, (value, supported) in unsupported.items():
            if value != supported:
                raise ValueError(f"{key}={value!r} is not supported by this LLaDA implementation; use {supported!r}.")

        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.n_layers = n_layers
        self.mlp_hidden_size = mlp_hidden_size
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.max_sequence_length = max_sequence_length
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.init_std = init_std
        self.activation_type = activation_type
        self.block_type = block_type
        self.layer_norm_type = layer_norm_type
        self.include_bias = include_bias
        self.rope = rope
        self.weight_tying = weight_tying
        self.scale_logits = scale_logits
        self.input_emb_norm = input_emb_norm
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
        return self.d_model // self.n_heads
