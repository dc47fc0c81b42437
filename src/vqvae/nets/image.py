"""The paper's image encoder and decoder (section 4.2 of arXiv:1711.00937).

Encoder: ``log2(downsample)`` strided 4x4 stride-2 convolutions, a 3x3 convolution, then a stack
of residual blocks (ReLU, 3x3 conv, ReLU, 1x1 conv). Decoder: a 3x3 convolution, the residual
stack, then ``log2(downsample)`` transposed 4x4 stride-2 convolutions. Widths halve towards the
pixels, as in the reference notebook (``hidden // 2`` after the first strided layer).
"""

from __future__ import annotations

from torch import Tensor, nn


class ResidualStack(nn.Module):
    """``num_layers`` blocks ``x + conv1x1(relu(conv3x3(relu(x))))`` followed by a ReLU.

    (B, C, H, W) -> (B, C, H, W).

    Args:
        channels: C, channels in and out.
        res_channels: channels inside each block (between the 3x3 and the 1x1 convolution).
        num_layers: number of residual blocks.
    """

    def __init__(self, channels: int, res_channels: int, num_layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(channels, res_channels, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(res_channels, channels, 1),
            )
            for _ in range(num_layers)
        )
        self.out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the blocks and the final ReLU.

        Args:
            x: (B, C, H, W) feature map.
        Returns:
            (B, C, H, W) feature map.
        """
        for block in self.blocks:
            x = x + block(x)
        return self.out(x)


def _num_halvings(downsample: int) -> int:
    n = downsample.bit_length() - 1
    if downsample < 2 or 1 << n != downsample:
        raise ValueError(f"downsample must be a power of two >= 2, got {downsample}")
    return n


class ImageEncoder(nn.Module):
    """(B, in_channels, H, W) -> (B, hidden, H / downsample, W / downsample).

    Args:
        in_channels: channels of the input image.
        hidden: channels of the output (half of it after the first strided layers).
        res_hidden: channels inside each residual block.
        num_res_layers: number of residual blocks.
        downsample: spatial reduction, a power of two >= 2 (one strided convolution per halving).
    """

    def __init__(self, in_channels: int, hidden: int, res_hidden: int, num_res_layers: int, downsample: int):
        super().__init__()
        n = _num_halvings(downsample)
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(n):
            out = hidden if i == n - 1 else max(hidden // 2, 1)
            layers += [nn.Conv2d(c, out, 4, stride=2, padding=1), nn.ReLU()]
            c = out
        layers.append(nn.Conv2d(hidden, hidden, 3, padding=1))
        self.net = nn.Sequential(*layers, ResidualStack(hidden, res_hidden, num_res_layers))

    def forward(self, x: Tensor) -> Tensor:
        """Encode images.

        Args:
            x: (B, in_channels, H, W) images.
        Returns:
            (B, hidden, H / downsample, W / downsample) features.
        """
        return self.net(x)


class ImageDecoder(nn.Module):
    """(B, embedding_dim, h, w) -> (B, out_channels, h * upsample, w * upsample).

    Args:
        embedding_dim: channels of the input (the code vectors' size D).
        out_channels: channels of the output image.
        hidden: channels after the first convolution (half of it in the transposed layers before the last).
        res_hidden: channels inside each residual block.
        num_res_layers: number of residual blocks.
        upsample: spatial enlargement, a power of two >= 2 (one transposed convolution per doubling).
    """

    def __init__(self, embedding_dim: int, out_channels: int, hidden: int, res_hidden: int,
                 num_res_layers: int, upsample: int):
        super().__init__()
        n = _num_halvings(upsample)
        layers: list[nn.Module] = [
            nn.Conv2d(embedding_dim, hidden, 3, padding=1),
            ResidualStack(hidden, res_hidden, num_res_layers),
        ]
        c = hidden
        for i in range(n):
            last = i == n - 1
            out = out_channels if last else max(hidden // 2, 1)
            layers.append(nn.ConvTranspose2d(c, out, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            c = out
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Decode quantised features.

        Args:
            z: (B, embedding_dim, h, w) code vectors.
        Returns:
            (B, out_channels, h * upsample, w * upsample) output, no final activation.
        """
        return self.net(z)
