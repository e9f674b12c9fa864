#!/usr/bin/env bash
# The paper's generation benchmarks at 32 steps (LLaDA-XDLM, DESIGN §6): MBPP (headline), GSM8K, HumanEval, with
# gen_length 256, block_length 256, steps 32, greedy (temperature 0); k1 comes from the checkpoint's config.
#
#   eval/run_paper_evals.sh CHECKPOINT [OUTPUT_DIR] [extra lm_eval arguments...]
#
# Environment: K1=0.1 overrides the sampler's k1 (e.g. LLaDA-8B-Base sampled with k1 = 0.1); BATCH_SIZE (8);
# DTYPE (bfloat16); LM_EVAL, the command to run (default xdlm-eval; e.g. "accelerate launch -m llada_xdlm.eval"
# for data parallelism over all GPUs).
# MBPP and HumanEval execute model-written code in limited subprocesses (docs/evaluation.md, "Safety"):
# this script opts in with HF_ALLOW_CODE_EVAL=1 and --confirm_run_unsafe_code. Run it in a container.
set -euo pipefail

CHECKPOINT=${1:?usage: eval/run_paper_evals.sh CHECKPOINT [OUTPUT_DIR] [extra lm_eval arguments...]}
OUTPUT_DIR=${2:-results/$(basename "$CHECKPOINT")}
shift $(( $# >= 2 ? 2 : 1 ))
LM_EVAL=${LM_EVAL:-xdlm-eval}
MODEL_ARGS="pretrained=$CHECKPOINT,steps=32,gen_length=256,block_length=256,temperature=0"
MODEL_ARGS+=",batch_size=${BATCH_SIZE:-8},dtype=${DTYPE:-bfloat16}${K1:+,k1=$K1}"
TASKS_DIR=$(cd "$(dirname "$0")" && pwd)

export HF_ALLOW_CODE_EVAL=1
$LM_EVAL --model xdlm --model_args "$MODEL_ARGS" --include_path "$TASKS_DIR" \
    --tasks mbpp_xdlm,humaneval_xdlm --confirm_run_unsafe_code --output_path "$OUTPUT_DIR" "$@"
$LM_EVAL --model xdlm --model_args "$MODEL_ARGS" --tasks gsm8k --output_path "$OUTPUT_DIR" "$@"
