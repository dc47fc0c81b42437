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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.nets.controls import SamplingControls, sampling_controls
from vqvae.priors.base import ImagePrior


class GatedLayer(nn.Module):
    """One gated layer of both stacks. (B, C, H, W) x2 -> (B, C, H, W) x2 plus a skip (B, C, H, W).

    Args:
        channels: C, channels of both stacks.
        kernel_size: k, width of the vertical kernel; both stacks reach n = k // 2 back.
        num_classes: size of the label embedding table; 0 for an unconditional layer.
        first: the first layer, which excludes the current position and has no residual connection.
        dropout: dropout of the horizontal stack's gated units in training.
    """

    def __init__(self, channels: int, kernel_size: int, num_classes: int, first: bool, dropout: float = 0.0):
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
        self.drop = nn.Dropout(dropout)

    @staticmethod
    def gate(x: Tensor, dim: int = 1) -> Tensor:
        """The gated unit tanh(a) * sigmoid(b) of the two halves of ``x`` along ``dim`` (the channels)."""
        a, b = x.chunk(2, dim=dim)
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
        v_new = self.gate(v_pre)
        gated = self.drop(self.gate(h_pre))
        h_new = self.h_out(gated) if self.first else h + self.h_out(gated)
        return v_new, h_new, self.skip(gated)


class GatedPixelCNN(ImagePrior):
    """Prior over code grids: indices (B, H, W) int64 [+ labels (B,)] -> logits (B, K, H, W).

    Logits at position (i, j) depend only on the codes before (i, j) in raster order (and the label).

    Args:
        config: the architecture (``kind`` pixelcnn); None takes the defaults of
            :class:`~vqvae.config.ImagePriorConfig`.
        **overrides: fields of the config to replace (an unconditional prior gets no classes; the result
            is validated).
    """

    prior_kind = "pixelcnn"

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        self.embed = nn.Embedding(c.num_embeddings, c.channels)
        self.layers = nn.ModuleList(
            GatedLayer(c.channels, c.kernel_size, self.num_labels, first=i == 0, dropout=c.dropout)
            for i in range(c.num_layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(c.channels, c.head_channels, 1), nn.ReLU(),
            nn.Conv2d(c.head_channels, c.num_embeddings, 1),
        )

    def forward_embedded(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits (B, K, H, W) from embedded codes x (B, C, H, W) -- the causal network itself.

        Args:
            x: (B, C, H, W) embedded codes (no input checks).
            labels: (B,) labels (a class, or "no class"), or None.
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
            labels: (B,) class labels in [0, num_classes) (or num_classes, "no class", for a prior trained
                with class dropout), for a conditional prior only; None: no label ("no class" where the prior
                learned it).
        Returns:
            (B, K, H, W) logits.
        Raises:
            VQVAEError: codes or labels of the wrong shape, type or range, or labels for an unconditional
                prior.
        """
        self.check_inputs(indices, labels)
        if labels is None and self.num_labels > self.config.num_classes:  # "no class", as in training
            labels = torch.full(indices.shape[:1], self.config.num_classes, dtype=torch.long,
                                device=indices.device)
        x = self.embed(indices).permute(0, 3, 1, 2)  # (B, C, H, W)
        return self.forward_embedded(x, labels)

    @torch.inference_mode()
    def sample(self, shape: tuple[int, int], labels: Tensor, controls: SamplingControls | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """Sample (B, H, W) codes in raster order, computing only what each new code changes.

        The vertical stack is computed one row at a time, once the row above is complete, and with it
        everything the horizontal stack receives from above; the horizontal stack and the head one position
        at a time, as matrix products on cached activations of the current row. Same samples as
        :meth:`sample_naive` for the same generator state (up to floating-point summation order, which a tie
        within rounding error could expose).

        Args:
            shape: (H, W) of the code grid.
            labels: (B,) class labels; sets B (ignored by an unconditional prior).
            controls: temperature, top-k, top-p, guidance; None: the model's own distribution.
            generator: random generator for the uniforms, all drawn up front; None: the global one.
        Returns:
            (B, H, W) int64 codes, on ``labels``' device.
        Raises:
            VQVAEError: labels not (B,) or out of range, or guidance for a prior without "no class".
        """
        controls = sampling_controls(controls)
        cond, u = self.prepare_sampling(labels, controls, shape, generator)
        out = torch.zeros(labels.shape[0], *shape, dtype=torch.long, device=labels.device)
        state = _RowCache(self, cond, shape, 2 if controls.guided else 1, labels.shape[0])
        for i in range(shape[0]):
            state.start_row()
            for j in range(shape[1]):
                out[:, i, j] = code = controls.draw(state.logits(j), u[:, i, j])
                state.put(j, self.embed(code))
            state.finish_row(i, self.embed(out[:, i]))
        return out


class _RowCache:
    """The cached sampler's state: the vertical stack's inputs, advanced one row at a time, and the current
    row's horizontal-stack inputs (B, W + n + 1, C), with column j at index j + n + 1 so that a layer's
    window is a contiguous slice. Every convolution a position needs becomes one matrix product on weights
    flattened once here; the skips of all layers are one product on their gated units side by side.

    The horizontal gate is computed as tanh(a) * (1 + tanh(b / 2)) = 2 tanh(a) sigmoid(b): one tanh over
    both halves and one fused multiply-add. The halving of b is folded into the gate half of the weights and
    biases feeding it, the factor 2 into the weights reading the gated units. The vertical stack runs once a
    row, its kernel as one product on the unfolded rows above."""

    def __init__(self, model: GatedPixelCNN, cond: Tensor | None, shape: tuple[int, int], copies: int,
                 batch: int):
        c = model.config
        self.model, self.copies, (self.h, self.w) = model, copies, shape
        self.n, ch, self.bb = c.kernel_size // 2, c.channels, batch * copies
        dev, dtype = model.embed.weight.device, model.embed.weight.dtype
        layers = model.layers
        # (B, 1, 2C): each layer's label embedding, added to both stacks' pre-activations
        self.bias = [layer.label(cond)[:, None] if layer.label is not None and cond is not None else 0
                     for layer in layers]
        # (C (n + 1) k, 2C): the vertical kernel over an unfolded window; (2C, 2C): the 1x1 from it
        self.v_w = [layer.vertical.weight.flatten(1).t().contiguous() for layer in layers]
        self.vh_w = [layer.v_to_h.weight[:, :, 0, 0] for layer in layers]
        # the gate's half of every pre-activation is halved: (2C,) factors
        self.half = torch.cat([torch.ones(ch, device=dev, dtype=dtype), torch.full((ch,), 0.5, device=dev,
                                                                                dtype=dtype)])
        # ((n + 1) C, 2C): the horizontal kernel over a window laid out column by column
        self.h_w = [(layer.horizontal.weight[:, :, 0].permute(0, 2, 1).reshape(2 * ch, -1)
                     * self.half[:, None]).t().contiguous() for layer in layers]
        self.out_w = [((0.5 * layer.h_out.weight[:, :, 0, 0]).t().contiguous(), layer.h_out.bias)
                      for layer in layers]
        self.skip_w = torch.cat([0.5 * layer.skip.weight[:, :, 0, 0].t() for layer in layers]).contiguous()
        self.skip_b = sum(layer.skip.bias for layer in layers)
        head1, head2 = model.head[1], model.head[3]
        self.head = (head1.weight[:, :, 0, 0], head1.bias, head2.weight[:, :, 0, 0], head2.bias)
        n, w, bb = self.n, self.w, self.bb
        self.v_in = [torch.zeros(bb, ch, self.h + n, w + 2 * n, device=dev, dtype=dtype) for _ in layers]
        self.v_prev = [torch.zeros(bb, w, 2 * ch, device=dev, dtype=dtype) for _ in layers]
        self.h_in = [torch.zeros(bb, w + n + 1, ch, device=dev, dtype=dtype) for _ in layers]
        self.gated = torch.zeros(bb, len(layers) * ch, device=dev, dtype=dtype)
        self.gated_views = [self.gated[:, k * ch : (k + 1) * ch] for k in range(len(layers))]
        self.row: list[Tensor] = []

    def start_row(self) -> None:
        """What the horizontal stack gets from the rows above, for the whole row: (B, W, 2C) per layer."""
        for h_in in self.h_in:
            h_in.zero_()
        self.row = []
        for layer, v_prev, vh_w, bias in zip(self.model.layers, self.v_prev, self.vh_w, self.bias):
            above = F.linear(v_prev, vh_w, layer.v_to_h.bias) + bias + layer.horizontal.bias  # (B, W, 2C)
            self.row.append((above * self.half).contiguous())

    def logits(self, j: int) -> Tensor:
        """(B, K) logits at column j of the current row (2B rows when guided)."""
        n, pad, last = self.n, self.n + 1, len(self.h_in) - 1
        for k, (h_in, h_w) in enumerate(zip(self.h_in, self.h_w)):
            lo = j if k == 0 else j + 1  # the first layer excludes the current column
            window = h_in[:, lo : lo + n + 1].reshape(self.bb, h_w.shape[0])
            t = torch.addmm(self.row[k][:, j], window, h_w).tanh_()  # (B, 2C): tanh(a), tanh(b / 2)
            a, b = t.chunk(2, 1)
            gated = torch.addcmul(a, a, b, out=self.gated_views[k])  # 2 tanh(a) sigmoid(b)
            if k < last:
                w_out, b_out = self.out_w[k]
                target = self.h_in[k + 1][:, j + pad]
                if k:  # the residual connection
                    torch.addmm(h_in[:, j + pad], gated, w_out, out=target).add_(b_out)
                else:
                    torch.addmm(b_out, gated, w_out, out=target)
        w1, b1, w2, b2 = self.head
        skips = torch.addmm(self.skip_b, self.gated, self.skip_w)
        return F.linear(F.relu(F.linear(F.relu(skips), w1, b1)), w2, b2)

    def put(self, j: int, embedded: Tensor) -> None:
        """The code drawn at column j, embedded (B, C), becomes the first layer's input there."""
        self.h_in[0][:, j + self.n + 1] = embedded if self.copies == 1 else embedded.repeat(self.copies, 1)

    def finish_row(self, i: int, embedded: Tensor) -> None:
        """Row i is complete (its codes embedded, (B, W, C)): advance the vertical stack by one row."""
        n, w, last = self.n, self.w, len(self.v_in) - 1
        self.v_in[0][:, :, i + n, n : n + w] = embedded.permute(0, 2, 1).repeat(self.copies, 1, 1)
        for k, layer in enumerate(self.model.layers):
            rows = F.unfold(self.v_in[k][:, :, i : i + n + 1], (n + 1, 2 * n + 1))  # (B, C (n + 1) k, W)
            v_pre = torch.matmul(rows.transpose(1, 2), self.v_w[k]).add_(layer.vertical.bias)  # (B, W, 2C)
            self.v_prev[k] = v_pre
            if k < last:
                gated = layer.gate(v_pre + self.bias[k], dim=2)  # (B, W, C)
                self.v_in[k + 1][:, :, i + n, n : n + w] = gated.transpose(1, 2)
