"""Vector quantizers: ``(quantized, indices, loss) = quantizer(z)`` and ``embed_codes(indices)``."""

from latentar.quantizers.kmeans import kmeans, kmeans_plus_plus
from latentar.quantizers.vector_quantizer import CodeUsage, VectorQuantizer

__all__ = ["CodeUsage", "VectorQuantizer", "kmeans", "kmeans_plus_plus"]
