"""What shapes a draw from an autoregressive net's logits, shared by every sampler (the Gated PixelCNN and
the transformer over image codes, the WaveNets over audio codes and samples): temperature, top-k, top-p
(nucleus, Holtzman et al. 2019) and classifier-free guidance (Ho & Salimans 2022). The draw is by inverse CDF
from a uniform drawn up front, so a cached sampler and a naive one that see the same logits draw the same
code."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vqvae.errors import VQVAEError


@dataclass(frozen=True)
class SamplingControls:
    """How logits become a draw.

    Args:
        temperature: divides the logits (> 0; 1: the model's own distribution).
        top_k: keep the k most likely codes (0: all).
        top_p: keep the most likely codes whose probabilities first reach p in total (1: all).
        guidance: classifier-free guidance scale s: logits = uncond + s * (cond - uncond), the unconditional
            logits being those with the class dropped (1: the conditional model alone, no second pass).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    guidance: float = 1.0

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and self.temperature < float("inf")):
            raise VQVAEError(f"temperature must be > 0 and finite, got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise VQVAEError(f"top_k must be an integer >= 0 (0: all codes), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise VQVAEError(f"top_p must be in (0, 1] (1: all codes), got {self.top_p!r}")
        if not (self.guidance >= 0 and self.guidance < float("inf")):
            raise VQVAEError(f"guidance must be a finite scale >= 0 (1: none), got {self.guidance!r}")

    @property
    def guided(self) -> bool:
        """Whether sampling needs the unconditional logits too (a guidance scale other than 1)."""
        return self.guidance != 1.0

    def guide(self, logits: Tensor) -> Tensor:
        """Mix the logits of a doubled batch: (2B, K) -- the B conditional rows, then the B unconditional
        ones -- -> (B, K); unguided logits (B, K) pass through.

        Args:
            logits: (2B, K) when :attr:`guided`, else (B, K).
        Returns:
            (B, K) logits.
        """
        if not self.guided:
            return logits
        cond, uncond = logits.chunk(2)
        return uncond + self.guidance * (cond - uncond)

    def probabilities(self, logits: Tensor) -> Tensor:
        """The distribution a draw follows: (B, K) logits -> (B, K) float64 probabilities (rows sum to 1).

        Args:
            logits: (B, K) logits (already guided).
        Returns:
            (B, K) probabilities after temperature, top-k and top-p.
        """
        logits = logits.double() / self.temperature
        k = logits.shape[1]
        if 0 < self.top_k < k:
            kth = logits.topk(self.top_k, dim=1).values[:, -1:]  # ties with the k-th code are kept
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=1)
        if self.top_p < 1:
            sorted_p, order = probs.sort(dim=1, descending=True)
            # a code is dropped when the codes more likely than it already reach top_p
            drop = (sorted_p.cumsum(1) - sorted_p) >= self.top_p
            drop[:, 0] = False
            probs = probs.masked_fill(drop.scatter(1, order, drop), 0.0)
            probs = probs / probs.sum(1, keepdim=True)
        return probs

    def draw(self, logits: Tensor, u: Tensor) -> Tensor:
        """Inverse-CDF draw: logits (B, K) (or (2B, K) when guided), uniforms (B,) in [0, 1) -> codes (B,).

        Args:
            logits: (B, K) logits, or (2B, K) conditional then unconditional rows when :attr:`guided`.
            u: (B,) uniforms.
        Returns:
            (B,) int64 codes: the first code whose cumulative probability exceeds u.
        """
        probs = self.probabilities(self.guide(logits))
        if not bool(torch.isfinite(probs).all()):
            raise VQVAEError("the sampling distribution is not finite (non-finite logits, or a temperature "
                             f"too small for them: {self.temperature!r})")
        cdf = probs.cumsum(1)
        cdf = cdf / cdf[:, -1:]  # the last entry exactly 1 > u: the draw never falls past the codes
        return torch.searchsorted(cdf, u.double()[:, None].contiguous(), right=True).squeeze(1) \
            .clamp(max=probs.shape[1] - 1)


def drop_classes(ids: Tensor | None, p: float, no_class: int) -> Tensor | None:
    """What training with class dropout feeds a prior, so that guidance can mix in the prior without the
    class: each id replaced by ``no_class`` with probability ``p`` (from the global generator); None stays
    None.

    Args:
        ids: (B,) class ids, or None.
        p: the dropout probability (0: none).
        no_class: the id of "no class".
    Returns:
        (B,) ids, some of them ``no_class``; or None.
    """
    if ids is None or p == 0:
        return ids
    return ids.masked_fill(torch.rand(ids.shape, device=ids.device) < p, no_class)


def sampling_controls(controls: SamplingControls | None) -> SamplingControls:
    """The controls a sampler runs with: ``controls``, or the model's own distribution for None.

    Args:
        controls: a :class:`SamplingControls`, or None.
    Returns:
        the controls.
    Raises:
        VQVAEError: anything else (a bare temperature, say), named.
    """
    if controls is None:
        return SamplingControls()
    if not isinstance(controls, SamplingControls):
        raise VQVAEError(f"controls must be a SamplingControls (e.g. SamplingControls(temperature=0.8)), "
                         f"got {controls!r}")
    return controls
