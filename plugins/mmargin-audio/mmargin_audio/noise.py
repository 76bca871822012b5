"""Random-noise helpers of the audio plugin: the L2 size of a perturbation and noise added
at a given size through torchaudio (what the noise baseline and the benchmark share)."""

from __future__ import annotations

import torch
from torch import Tensor


def l2(delta: Tensor) -> Tensor:
    """Per-clip L2 norm of a batch of perturbations ``(B, ...)``."""
    return delta.flatten(1).norm(dim=1)


def add_noise(x: Tensor, u: Tensor, scale: Tensor) -> Tensor:
    """``x`` plus noise ``u`` at the SNR that makes its L2 norm ``scale`` (per clip), through
    ``torchaudio.functional.add_noise`` over the whole clip (all channels together)."""
    import torchaudio.functional as F

    flat_x, flat_u = x.flatten(1), u.flatten(1)
    snr = 20 * torch.log10(flat_x.norm(dim=1) / (scale * flat_u.norm(dim=1)).clamp(min=1e-30))
    return F.add_noise(flat_x, flat_u, snr).view_as(x)
