"""XDLMTrainingArguments: transformers.TrainingArguments plus the keys that keep a run safe. A module of its own:
importing TrainingArguments costs seconds, and `args` (imported by `import llada_xdlm`) stays light."""

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class XDLMTrainingArguments(TrainingArguments):
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train into an output_dir that holds another run (its checkpoints are deleted)."},
    )
    include_num_input_tokens_seen: str = field(
        default="all",
        metadata={"help": "Count the tokens trained on (trainer_state.json's num_input_tokens_seen; the model card)."},
    )
    max_nonfinite_steps: int = field(
        default=0,
        metadata={"help": "Optimizer steps with a non-finite loss or gradient norm to skip before stopping (0: none)."},
    )
