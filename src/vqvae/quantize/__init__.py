"""Vector quantisation layers of VQ-VAE ("Neural Discrete Representation Learning",
van den Oord, Vinyals, Kavukcuoglu 2017, https://arxiv.org/abs/1711.00937).

Two explicit classes, as in the reference implementation (DeepMind Sonnet 2,
``sonnet/src/nets/vqvae.py``):

* :class:`VectorQuantizer` learns the codebook by gradient descent on the codebook loss;
* :class:`VectorQuantizerEMA` updates the codebook from exponential moving averages.

With default arguments both reproduce the reference semantics exactly (see the tests, which
hold them against a NumPy transcription of the formulas). The improvements -- data-dependent
(k-means) initialisation and dead-code restarts -- are opt-in constructor options.

Numerics: the nearest-neighbour search and the EMA statistics always run in float32, also
under ``torch.autocast``; the search is chunked, so an N x K distance matrix is never held
in memory at once.
"""

from vqvae.quantize.base import QuantizerOutput
from vqvae.quantize.layers import VectorQuantizer, VectorQuantizerEMA, build_quantizer
from vqvae.quantize.search import kmeans, nearest_codes

__all__ = ["QuantizerOutput", "VectorQuantizer", "VectorQuantizerEMA", "build_quantizer", "kmeans",
           "nearest_codes"]
