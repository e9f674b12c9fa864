"""Evaluation: Monte-Carlo likelihood bounds, sandboxed pass@1, and the lm-eval model "xdlm".

The lm-eval model lives in `lm_eval_model` and is imported only by lm-eval (lazily, by name), so importing this
package does not import lm_eval.
"""

import os

from .likelihood import ESTIMATORS, loglikelihood, nelbo_samples

PASS_AT_1_PATH = os.path.join(os.path.dirname(__file__), "metrics", "pass_at_1")

__all__ = ["ESTIMATORS", "PASS_AT_1_PATH", "loglikelihood", "nelbo_samples"]
