"""Memory-efficient kernels built on llada_xdlm.diffusion (same numbers, less memory)."""

from llada_xdlm.ops.fused_loss import fused_linear_xdlm_loss

__all__ = ["fused_linear_xdlm_loss"]
