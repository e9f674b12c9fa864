"""Dream configuration.

Reads the official `config.json` of Dream-org/Dream-v0-Base-7B unchanged (model_type "Dream", Qwen2's key names).
The defaults describe Dream-7B itself, so a config with missing keys never silently builds another model. Options
of the Qwen2 code base that Dream-7B does not use (sliding-window attention, RoPE scaling, another activation) are
refused rather than ignored. `embedding_size` and `max_sequence_length` read `vocab_size` and
`max_position_embeddings`, the names the trainer and the sampler use for every backbone.

How the model was trained and is sampled by default (objective, k1, schedule, eps, antithetic, sampling) is recorded
as in LLaDAConfig; a config without these keys (Dream-7B's own) describes masked diffusion.
"""

from transformers import PreTrainedConfig

from .configuration_llada import check_training_record


class DreamConfig(PreTrainedConfig):
    model_type = "Dream"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {"embedding_size": "vocab_size", "max_sequence_length": "max_position_embeddings"}

    def __init__(
        self,
        vocab_size: int = 152064,
        hidden_size: int = 3584,
        intermediate_size: int = 18944,
        num_hidden_layers: int = 28,
        num_attention_heads: int = 28,
        num_key_value_heads: int = 4,
        hidden_act: str = "silu",
        max_position_embeddings: int = 131072,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 1000000.0,
        rope_scaling: dict | None = None,
        use_sliding_window: bool = False,
        sliding_window: int | None = None,
        max_window_layers: int = 28,
        attention_dropout: float = 0.0,
        tie_word_embeddings: bool = False,
        mask_token_id: int = 151666,
        bos_token_id: int | None = 151643,
        eos_token_id: int | None = 151643,
        pad_token_id: int | None = 151643,
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
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}; choose "
                f"the heads so that head_dim = hidden_size / num_attention_heads is an integer (Dream-7B: 3584 / 28)."
            )
        if num_attention_heads % num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads={num_attention_heads} is not divisible by num_key_value_heads="
                f"{num_key_value_heads}; grouped-query attention needs the key/value heads to divide the heads."
            )
        check_training_record(objective, k1, schedule, eps, antithetic, sampling)
        # transformers 5 saves RoPE settings as rope_parameters; Dream-7B's config.json has rope_scaling: null.
        rope_parameters = kwargs.pop("rope_parameters", None) or rope_scaling or {}
        rope_theta = rope_parameters.get("rope_theta", rope_theta)
        unsupported = {
            "hidden_act": (hidden_act, "silu"),
            "rope_scaling": (rope_parameters.get("rope_type", rope_parameters.get("type", "default")), "default"),
            "use_sliding_window": (use_sliding_window, False),
            "attention_dropout": (attention_dropout, 0.0),
        }
        for key, (value, supported) in unsupported.items():
            if value != supported:
                raise ValueError(f"{key}={value!r} is not supported by this Dream implementation; use {supported!r}.")

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.use_sliding_window = use_sliding_window
        self.sliding_window = sliding_window
        self.max_window_layers = max_window_layers
        self.attention_dropout = attention_dropout
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
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads
