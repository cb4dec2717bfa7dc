"""scratch-transformer: the encoder-decoder Transformer, written from scratch on scratch-engine."""

from scratch_transformer.attention import (
    KVCache,
    MultiHeadAttention,
    ScaledDotProductAttention,
    scaled_dot_product_attention,
)
from scratch_transformer.data import BucketBatches, EngFra, Vocabulary, locate_pairs, read_pairs
from scratch_transformer.decoding import beam_search, greedy_decode
from scratch_transformer.embedding import PositionalEncoding, TokenEmbedding
from scratch_transformer.feedforward import FeedForward
from scratch_transformer.layernorm import LayerNorm
from scratch_transformer.layers import AddNorm, Decoder, DecoderCache, DecoderLayer, Encoder, EncoderLayer
from scratch_transformer.masks import causal_mask, padding_mask
from scratch_transformer.metrics import (
    character_error_rate,
    corpus_character_error_rate,
    exact_match,
    exact_match_rate,
    levenshtein,
)
from scratch_transformer.model import Transformer
from scratch_transformer.translator import Translator

__version__ = "0.1.0"

__all__ = [
    "AddNorm",
    "BucketBatches",
    "Decoder",
    "DecoderCache",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "EngFra",
    "FeedForward",
    "KVCache",
    "LayerNorm",
    "MultiHeadAttention",
    "PositionalEncoding",
    "ScaledDotProductAttention",
    "TokenEmbedding",
    "Transformer",
    "Translator",
    "Vocabulary",
    "__version__",
    "beam_search",
    "causal_mask",
    "character_error_rate",
    "corpus_character_error_rate",
    "exact_match",
    "exact_match_rate",
    "greedy_decode",
    "levenshtein",
    "locate_pairs",
    "padding_mask",
    "read_pairs",
    "scaled_dot_product_attention",
]
