"""Vector quantisation layers of VQ-VAE ("Neural Discrete Representation Learning",
van den Oord, Vinyals, Kavukcuoglu 2017, https://arxiv.org/abs/1711.00937), and those that came after.

The paper's two, as two explicit classes as in the reference implementation (DeepMind Sonnet 2,
``sonnet/src/nets/vqvae.py``):

* :class:`VectorQuantizer` learns the codebook by gradient descent on the codebook loss;
* :class:`VectorQuantizerEMA` updates the codebook from exponential moving averages.

With default arguments both reproduce the reference semantics exactly (see the tests, which
hold them against a NumPy transcription of the formulas). Their options -- k-means initialisation,
dead-code restarts, cosine codes, low-dimensional codes, the rotation trick, heads, code sampling -- are
opt-in constructor arguments. Beside them: :class:`ResidualVQ` (a stack on successive residuals, with
quantizer dropout), :class:`FSQ` (finite scalar quantisation) and :class:`LFQ` (lookup-free quantisation).

Numerics: every layer computes in float32, also under ``torch.autocast``; the nearest-neighbour search is
tiled, so an N x K distance matrix is never held in memory at once.
"""

from vqvae.quantize.base import QuantizerLayer, QuantizerOutput
from vqvae.quantize.build import build_quantizer
from vqvae.quantize.kmeans import kmeans
from vqvae.quantize.layers import VectorQuantizer, VectorQuantizerEMA
from vqvae.quantize.residual import ResidualVQ
from vqvae.quantize.scalar import FSQ, LFQ
from vqvae.quantize.search import nearest_codes

__all__ = ["FSQ", "LFQ", "QuantizerLayer", "QuantizerOutput", "ResidualVQ", "VectorQuantizer",
           "VectorQuantizerEMA", "build_quantizer", "kmeans", "nearest_codes"]
