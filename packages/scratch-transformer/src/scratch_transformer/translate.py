"""Translation in one import: train, load, translate (``from scratch_transformer.translate import ...``).

The pieces live in focused modules; this one gathers the names the README and most users need:

- :class:`~scratch_transformer.translator.Translator`, the engine's view of a Transformer;
- :func:`~scratch_transformer.translating.translate`, English sentences in, French out;
- :class:`~scratch_transformer.eng_fra.TranslateConfig` and :func:`~scratch_transformer.eng_fra.run`,
  the ``train eng-fra`` task;
- :func:`~scratch_transformer.checkpoint.load_translator`, a trained model from its checkpoint;
- :func:`~scratch_transformer.evaluation.evaluate_translations` and
  :func:`~scratch_transformer.evaluation.evaluate_checkpoint`, the test CER;
- :func:`~scratch_transformer.attention_maps.attention_map` and
  :func:`~scratch_transformer.attention_maps.plot_attention`, what each output character looked at.
"""

from scratch_transformer.attention_maps import attention_map, plot_attention
from scratch_transformer.checkpoint import load_translator
from scratch_transformer.eng_fra import TranslateConfig, run
from scratch_transformer.evaluation import evaluate_checkpoint, evaluate_translations
from scratch_transformer.translating import translate
from scratch_transformer.translator import Translator, build_translator

__all__ = [
    "TranslateConfig",
    "Translator",
    "attention_map",
    "build_translator",
    "evaluate_checkpoint",
    "evaluate_translations",
    "load_translator",
    "plot_attention",
    "run",
    "translate",
]
