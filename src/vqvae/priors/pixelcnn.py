"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders",
arXiv:1606.05328) over a grid of code indices, as the VQ-VAE paper's image prior.

Two stacks remove the blind spot of the original PixelCNN: the vertical stack sees every row above
the current one (all columns within its receptive field), the horizontal stack sees the current row
to the left. Causality comes from padding and shifting instead of masks:

* vertical convolution, kernel (n+1, k): output row i sees input rows i-n .. i. Its output reaches the
  horizontal stack only after a shift down by one row, so position (i, j) gets rows < i from it;
* horizontal convolution, kernel (1, n+1): output column j sees columns j-n .. j of the same row; in the
  first layer its input is shifted right by one, so the current position itself is excluded.

Each layer applies the gated unit ``tanh(a + c) * sigmoid(b + c)`` (``c``: a learned embedding of the class
label) on both stacks; the horizontal stack has residual connections (from the second layer on) and every
layer contributes a skip connection to the output head, which gives K logits per position.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.config import PixelCNNConfig
from vqvae.errors import VQVAEError
from vqvae.models.pretrained import Pretrained


class GatedLayer(nn.Module):
    """One gated layer of both stacks. (B, C, H, W) x2 -> (B, C, H, W) x2 plus a skip (B, C, H, W).

    Args:
        channels: C, channels of both stacks.
        kernel_size: k, width of the vertical kernel; both stacks reach n = k // 2 back.
        num_classes: size of the label embedding table; 0 for an unconditional layer.
        first: the first layer, which excludes the current position and has no residual connection.
    """

    def __init__(self, channels: int, kernel_size: int, num_classes: int, first: bool):
        super().__init__()
        n = kernel_size // 2
        self.n, self.first = n, first
        c = channels
        self.vertical = nn.Conv2d(c, 2 * c, (n + 1, kernel_size))
        self.horizontal = nn.Conv2d(c, 2 * c, (1, n + 1))
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        self.h_out = nn.Conv2d(c, c, 1)
        self.skip = nn.Conv2d(c, c, 1)
        self.label = nn.Embedding(num_classes, 2 * c) if num_classes else None

    @staticmethod
    def _gate(x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: Tensor, h: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Run the layer on both stacks.

        Args:
            v: (B, C, H, W) vertical stack.
            h: (B, C, H, W) horizontal stack.
            labels: (B,) class labels, or None (ignored by an unconditional layer).
        Returns:
            ``(v, h, skip)``: the new stacks and the skip output, (B, C, H, W) each.
        """
        n = self.n
        v_pre = self.vertical(F.pad(v, (n, n, n, 0)))  # (B, 2C, H, W): rows i-n .. i
        if self.first:  # exclude the current position: shift right by one
            h_pre = self.horizontal(F.pad(h, (n + 1, 0, 0, 0))[..., :-1])
        else:
            h_pre = self.horizontal(F.pad(h, (n, 0, 0, 0)))  # columns j-n .. j
        # the vertical stack reaches the horizontal one from the row above only
        h_pre = h_pre + self.v_to_h(F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1])
        if self.label is not None and labels is not None:
            c = self.label(labels)[:, :, None, None]  # (B, 2C, 1, 1)
            v_pre, h_pre = v_pre + c, h_pre + c
        v_new = self._gate(v_pre)
        gated = self._gate(h_pre)
        h_new = self.h_out(gated) if self.first else h + self.h_out(gated)
        return v_new, h_new, self.skip(gated)


class GatedPixelCNN(Pretrained, nn.Module):
    """Prior over code grids: indices (B, H, W) int64 [+ labels (B,)] -> logits (B, K, H, W).

    Logits at position (i, j) depend only on the codes before (i, j) in raster order (and the label).

    Args:
        config: the architecture; None takes the defaults of :class:`~vqvae.config.PixelCNNConfig`.
        **overrides: fields of the config to replace (an unconditional prior gets no classes; the result
            is validated).
    """

    checkpoint_kind = "prior"
    config_section = "prior"

    def __init__(self, config: PixelCNNConfig | None = None, **overrides):
        super().__init__()
        config = dataclasses.replace(config or PixelCNNConfig(), **overrides)
        if not config.conditional:  # an unconditional prior has no label embeddings
            config = dataclasses.replace(config, num_classes=0)
        config.validate()
        self.config = c = config
        self.embed = nn.Embedding(c.num_embeddings, c.channels)
        self.layers = nn.ModuleList(
            GatedLayer(c.channels, c.kernel_size, c.num_classes, first=i == 0) for i in range(c.num_layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(c.channels, c.head_channels, 1), nn.ReLU(),
            nn.Conv2d(c.head_channels, c.num_embeddings, 1),
        )

    def _check(self, indices: Tensor, labels: Tensor | None) -> None:
        c = self.config
        if indices.dim() != 3 or indices.dtype != torch.int64:
            raise VQVAEError("expected int64 indices of shape (B, H, W), "
                             f"got {indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= c.num_embeddings):
            raise VQVAEError(f"code indices must lie in [0, {c.num_embeddings}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        if labels is not None:
            if not c.num_classes:
                raise VQVAEError("this prior is unconditional: it takes no labels")
            if labels.shape != indices.shape[:1]:
                raise VQVAEError(f"expected labels of shape ({indices.shape[0]},), got {tuple(labels.shape)}")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= c.num_classes):
                raise VQVAEError(f"class labels must lie in [0, {c.num_classes}), got "
                                 f"[{int(labels.min())}, {int(labels.max())}]")

    def forward_embedded(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits (B, K, H, W) from embedded codes x (B, C, H, W) -- the causal network itself.

        Args:
            x: (B, C, H, W) embedded codes (no input checks).
            labels: (B,) class labels, or None.
        Returns:
            (B, K, H, W) logits.
        """
        v, h, skips = x, x, 0
        for layer in self.layers:
            v, h, s = layer(v, h, labels)
            skips = skips + s
        return self.head(skips)

    def forward(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits of every code given the codes before it in raster order.

        Args:
            indices: (B, H, W) int64 codes in [0, K).
            labels: (B,) class labels in [0, num_classes), for a conditional prior only; None: no label.
        Returns:
            (B, K, H, W) logits.
        Raises:
            VQVAEError: codes or labels of the wrong shape, type or range, or labels for an unconditional
                prior.
        """
        self._check(indices, labels)
        x = self.embed(indices).permute(0, 3, 1, 2)  # (B, C, H, W)
        return self.forward_embedded(x, labels)

    def nll(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """Negative log-likelihood in nats of each grid: (B,) -- summed over its positions.

        Args:
            indices: (B, H, W) int64 codes, as in :meth:`forward`.
            labels: (B,) class labels, as in :meth:`forward`.
        Returns:
            (B,) negative log-likelihoods in nats.
        Raises:
            VQVAEError: bad codes or labels, as in :meth:`forward`.
        """
        logits = self(indices, labels)
        return F.cross_entropy(logits, indices, reduction="none").flatten(1).sum(1)

    def _prepare_sampling(self, labels: Tensor, temperature: float, shape: tuple[int, int],
                          generator: torch.Generator | None) -> tuple[Tensor | None, Tensor]:
        if not temperature > 0:
            raise VQVAEError(f"temperature must be > 0, got {temperature!r}")
        if labels.dim() != 1:
            raise VQVAEError(f"expected labels of shape (B,), got {tuple(labels.shape)}")
        c = self.config
        if c.num_classes and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= c.num_classes):
            raise VQVAEError(f"class labels must lie in [0, {c.num_classes}), got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        # All randomness up front, one uniform per position: both samplers consume it identically.
        dtype = self.embed.weight.dtype
        u = torch.rand(labels.shape[0], *shape, generator=generator, dtype=dtype).to(labels.device)
        return (labels if c.num_classes else None), u

    @staticmethod
    def _draw(logits: Tensor, u: Tensor, temperature: float) -> Tensor:
        """Inverse-CDF sampling: logits (B, K), uniforms (B,) -> codes (B,)."""
        cdf = torch.softmax(logits / temperature, dim=1).cumsum(1)
        return (cdf < u[:, None]).sum(1).clamp(max=logits.shape[1] - 1)

    @torch.no_grad()
    def sample_naive(self, shape: tuple[int, int], labels: Tensor, temperature: float = 1.0,
                     generator: torch.Generator | None = None) -> Tensor:
        """Sample (B, H, W) codes in raster order, rerunning the whole network for every position.

        Slow but obviously right: the reference that :meth:`sample` is tested against.

        Args:
            shape: (H, W) of the code grid.
            labels: (B,) class labels; sets B (ignored by an unconditional prior).
            temperature: divides the logits (> 0).
            generator: random generator for the uniforms, all drawn up front; None: the global one.
        Returns:
            (B, H, W) int64 codes, on ``labels``' device.
        Raises:
            VQVAEError: a temperature <= 0, or labels not (B,) or out of range.
        """
        cond, u = self._prepare_sampling(labels, temperature, shape, generator)
        h, w = shape
        out = torch.zeros(labels.shape[0], h, w, dtype=torch.long, device=labels.device)
        for i in range(h):
            for j in range(w):
                out[:, i, j] = self._draw(self(out, cond)[:, :, i, j], u[:, i, j], temperature)
        return out

    @torch.no_grad()
    def sample(self, shape: tuple[int, int], labels: Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """Sample (B, H, W) codes in raster order, computing only what each new code changes.

        The vertical stack is computed one row at a time, once the row above is complete; the horizontal
        stack and the head one position at a time, from cached activations of the current row. Same
        samples as :meth:`sample_naive` for the same generator state (up to floating-point summation
        order, which a tie within rounding error could expose).

        Args:
            shape: (H, W) of the code grid.
            labels: (B,) class labels; sets B (ignored by an unconditional prior).
            temperature: divides the logits (> 0).
            generator: random generator for the uniforms, all drawn up front; None: the global one.
        Returns:
            (B, H, W) int64 codes, on ``labels``' device.
        Raises:
            VQVAEError: a temperature <= 0, or labels not (B,) or out of range.
        """
        cond, u = self._prepare_sampling(labels, temperature, shape, generator)
        c, (h, w) = self.config, shape
        n, ch, b = c.kernel_size // 2, c.channels, labels.shape[0]
        dev, dtype = labels.device, self.embed.weight.dtype
        num = len(self.layers)
        out = torch.zeros(b, h, w, dtype=torch.long, device=dev)
        label_bias = [layer.label(cond)[:, :, None, None] if cond is not None else 0 for layer in self.layers]
        # vertical-stack inputs, zero-padded: n rows on top, n columns each side
        v_in = [torch.zeros(b, ch, h + n, w + 2 * n, device=dev, dtype=dtype) for _ in range(num)]
        # v_pre of the row above
        v_prev = [torch.zeros(b, 2 * ch, 1, w, device=dev, dtype=dtype) for _ in range(num)]
        pad = n + 1  # horizontal buffers hold column j at index j + pad
        for i in range(h):
            h_in = [torch.zeros(b, ch, 1, w + pad, device=dev, dtype=dtype) for _ in range(num)]
            for j in range(w):
                skips = 0
                for li, layer in enumerate(self.layers):
                    window = h_in[li][..., j : j + n + 1] if li == 0 else h_in[li][..., j + 1 : j + n + 2]
                    h_pre = (layer.horizontal(window) + layer.v_to_h(v_prev[li][..., j : j + 1])
                             + label_bias[li])
                    gated = layer._gate(h_pre)  # (B, C, 1, 1)
                    h_new = layer.h_out(gated)
                    if li:
                        h_new = h_new + h_in[li][..., j + pad : j + pad + 1]
                    if li + 1 < num:
                        h_in[li + 1][..., j + pad : j + pad + 1] = h_new
                    skips = skips + layer.skip(gated)
                code = self._draw(self.head(skips)[:, :, 0, 0], u[:, i, j], temperature)
                out[:, i, j] = code
                h_in[0][:, :, 0, j + pad] = self.embed(code)
            # row i is complete: advance the vertical stack by one row
            v_in[0][:, :, i + n, n : n + w] = self.embed(out[:, i]).permute(0, 2, 1)
            for li, layer in enumerate(self.layers):
                v_pre = layer.vertical(v_in[li][:, :, i : i + n + 1])  # (B, 2C, 1, W)
                v_prev[li] = v_pre
                if li + 1 < num:
                    v_in[li + 1][:, :, i + n : i + n + 1, n : n + w] = layer._gate(v_pre + label_bias[li])
        return out
