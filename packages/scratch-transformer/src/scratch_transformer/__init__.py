"""scratch-transformer: the encoder-decoder Transformer, written from scratch on scratch-engine."""

from scratch_transformer.attention import MultiHeadAttention, ScaledDotProductAttention, scaled_dot_product_attention
from scratch_transformer.embedding import PositionalEncoding, TokenEmbedding
from scratch_transformer.feedforward import FeedForward
from scratch_transformer.layernorm import LayerNorm
from scratch_transformer.layers import AddNorm, Decoder, DecoderLayer, Encoder, EncoderLayer
from scratch_transformer.masks import causal_mask, padding_mask
from scratch_transformer.model import Transformer

__version__ = "0.1.0"

__all__ = [
    "AddNorm",
    "Decoder",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "FeedForward",
    "LayerNorm",
    "MultiHeadAttention",
    "PositionalEncoding",
    "ScaledDotProductAttention",
    "TokenEmbedding",
    "Transformer",
    "__version__",
    "causal_mask",
    "padding_mask",
    "scaled_dot_product_attention",
]
