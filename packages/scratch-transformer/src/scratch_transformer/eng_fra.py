r"""The ``train eng-fra`` task: an English-to-French character Transformer, trained and evaluated.

    scratch-transformer train eng-fra --out runs/scratch-transformer/eng-fra
    scratch-transformer train eng-fra --resume        # continue a run that was stopped

**Training** is teacher forcing: the decoder reads ``<bos>`` + the French sentence and predicts
the French sentence + ``<eos>``, every position at once (the causal mask hides the future).
The model is a :class:`~scratch_transformer.translator.Translator` (the engine's ``model(x)``
with ``x = (src_ids, tgt_in)``); the loss is the engine's ``CrossEntropyLoss(ignore_index=<pad>,
label_smoothing=0.1)`` (class dimension last), so padded target positions count for nothing.
Adam with warm-up + cosine to 0 at the planned steps (the default) or the paper's warm-up
schedule (``InverseSqrtWarmup``, scaled so that the peak is ``--lr``), gradient clipping by
global norm, batches bucketed by length (:class:`~scratch_transformer.data.BucketBatches`).

**Budget.** The engine's: the run ends at ``--max-steps`` steps, ``--max-minutes`` minutes or
``--epochs`` passes over the training pairs, whichever comes first, and validates every
``--eval-every`` steps. The shared runner (:func:`scratch_engine.tools.runner.run`) saves
``checkpoint.pt`` every few minutes, at validations, at the end and on Ctrl-C/SIGTERM; ``--resume``
continues a stopped run to the result an uninterrupted one reaches.

**Evaluation** decodes the distinct English sentences of the test split
(:func:`~scratch_transformer.evaluation.evaluate_translations`: greedy with the KV cache, beam
search with ``beam > 1``) for the corpus character error rate and the exact-match rate, and
writes ``translations.txt`` and ``attention_<k>.png``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from scratch_engine import CrossEntropyLoss, Module
from scratch_engine.tools.config import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    PROBABILITY,
    SCHEDULES,
    Number,
    TrainConfig,
    option,
)
from scratch_engine.tools.distributed import is_main_process
from scratch_engine.tools.files import write_text_atomic
from scratch_engine.tools.runner import Loaders, Run, Task
from scratch_engine.tools.runner import run as run_task
from scratch_transformer.attention_maps import attention_map, plot_attention
from scratch_transformer.checkpoint import translator_extra
from scratch_transformer.data import EngFra, Vocabulary, load_eng_fra
from scratch_transformer.evaluation import evaluate_translations, spread, translation_samples
from scratch_transformer.translator import MODEL_KEYS, Translator, build_translator

VAL_BATCH_SIZE = 256
SAMPLES = 20  # test translations in translations.txt (and the metrics' "samples")
ATTENTION_MAPS = 3


BEAM = Number(int, low=1, high=64)  # each step extends every hypothesis: a wider beam costs linearly, for little gain


@dataclass
class TranslateConfig(TrainConfig):
    """Every setting of ``scratch-transformer train eng-fra`` (the defaults are the CLI's)."""

    # budget: 9,000 steps are about 28 minutes on 2 CPU cores; the epochs are an upper bound only
    epochs: int | None = 1000
    max_steps: int | None = 9000
    max_minutes: float | None = 30.0
    eval_every: int | None = 250
    # optimisation: the peak rate 3e-3 was chosen by the README's runs (1e-3: CER 0.499, 2e-3: 0.450, 3e-3: 0.438)
    batch_size: int = 64
    learning_rate: float = 3e-3
    schedule: str = option(
        "cosine",
        "warm-up, then cosine to 0 at the planned steps; inverse-sqrt: the paper's, peaking at --lr (it decays early)",
        choices=SCHEDULES,
        group="optimisation",
    )
    warmup_steps: int = option(
        300,
        "linear warm-up steps; inverse-sqrt peaks at the last of them",
        check=NON_NEGATIVE_INT,
        group="optimisation",
    )
    clip_grad_norm: float | None = 1.0
    label_smoothing: float = option(0.1, "of the cross-entropy", check=PROBABILITY, group="optimisation")
    # model
    d_model: int = option(128, "model width (a multiple of --heads)", check=POSITIVE_INT, group="model")
    heads: int = option(4, "attention heads", check=POSITIVE_INT, group="model")
    layers: int = option(2, "encoder layers, and as many decoder layers", check=POSITIVE_INT, group="model")
    d_ff: int = option(512, "feed-forward width", check=POSITIVE_INT, group="model")
    dropout: float = option(0.1, "dropout everywhere (0 with --reference)", check=PROBABILITY, group="model")
    norm: str = option(
        "pre", "LayerNorm before (pre) or after (post) each sublayer", choices=("pre", "post"), group="model"
    )
    # data
    max_src_len: int | None = option(
        20, "keep English sentences of at most this many characters (none: all)", check=POSITIVE_INT, group="data"
    )
    pairs: str | None = option(None, "a pairs file (English<TAB>French per line) instead of eng-fra.txt", group="data")
    data_dir: str | None = option(None, "folder holding eng-fra/eng-fra.txt (none: $SCRATCH_DATA_DIR)", group="data")
    download: bool | None = option(
        None, "download the pairs if missing (none: unless SCRATCH_DOWNLOAD=0)", group="data"
    )
    # evaluation
    test_limit: int | None = option(
        None, "decode only the first N distinct test sentences (none: all)", check=POSITIVE_INT, group="evaluation"
    )
    beam: int = option(1, "beam size for the test CER, at most 64 (1: greedy)", check=BEAM, group="evaluation")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_model % self.heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.schedule == "inverse-sqrt" and self.warmup_steps < 1:
            raise ValueError("the inverse-sqrt schedule needs warmup_steps >= 1 (it peaks at the end of the warm-up)")

    def model_config(self) -> dict[str, Any]:
        """The entries that build the model (:data:`~scratch_transformer.translator.MODEL_KEYS`)."""
        return {name: getattr(self, name) for name in MODEL_KEYS}


@dataclass
class EngFraData(Loaders):
    """The loaders, and the pairs they come from (the test split, the vocabularies)."""

    corpus: EngFra = field(kw_only=True)


class EngFraTask(Task[TranslateConfig]):
    """English to French, character level: the test CER, sample translations, attention maps."""

    name = "eng-fra"
    help = "English to French, character level"
    config = TranslateConfig()
    resumable = frozenset({"test_limit", "beam"})  # the evaluation after training: a resumed run may change it

    def load_data(self, config: TranslateConfig, device: torch.device) -> EngFraData:
        corpus = load_eng_fra(config.pairs, config.data_dir, config.download, config.max_src_len)
        train = corpus.loader("train", config.batch_size, seed=config.seed)
        return EngFraData(train, corpus.loader("val", VAL_BATCH_SIZE), corpus=corpus)

    def build_model(self, config: TranslateConfig, data: EngFraData) -> Translator:
        corpus = data.corpus
        # positions the encodings cover: the data's, and room for translating longer sentences later
        longest = max(max(len(e), len(f)) for pairs in corpus.pairs.values() for e, f in pairs)
        sizes = config.model_config()  # its dropout is 0 with --reference (the runner's rule)
        return build_translator(sizes, len(corpus.src_vocab), len(corpus.tgt_vocab), max(512, 2 * longest + 16))

    def loss(self, config: TranslateConfig, data: EngFraData) -> CrossEntropyLoss:
        return CrossEntropyLoss(ignore_index=Vocabulary.PAD, label_smoothing=config.label_smoothing)

    def torch_twin(self, config: TranslateConfig, data: EngFraData, model: Module) -> torch.nn.Module:
        from scratch_transformer.reference import torch_twin  # torch.nn only on request

        assert isinstance(model, Translator)
        return torch_twin(model)

    def evaluate(self, run: Run[TranslateConfig]) -> dict[str, Any]:
        """Decode the test split: CER, exact match, samples; ``translations.txt`` and attention maps in ``run.out``."""
        config, corpus, model = run.config, run.data.corpus, run.model
        assert isinstance(model, Translator)
        test = evaluate_translations(model, corpus, "test", config.test_limit, config.beam, run.progress)
        if run.out is not None:
            if is_main_process():
                write_text_atomic(run.out / "translations.txt", translation_samples(test, SAMPLES))
            for k, i in enumerate(spread(test["sentences"], ATTENTION_MAPS, first=test["sentences"] // 4)):
                english, french = test["english"][i], test["hypotheses"][i]
                weights = attention_map(model, english, french, corpus.src_vocab, corpus.tgt_vocab)
                plot_attention(weights, english, french, run.out / f"attention_{k + 1}.png")
        return {
            "val_loss": run.engine.history["val_loss"][-1],  # after the last step: a budget ends with a row
            "test_cer": test["cer"],
            "test_exact_match": test["exact_match"],
            "test_sentences": test["sentences"],
            "decoding": "greedy" if config.beam == 1 else f"beam {config.beam}",
            "train_pairs": len(corpus.split("train")),
            "pairs_source": corpus.source,  # the file trained on, and its SHA-256
            "src_vocab": len(corpus.src_vocab),
            "tgt_vocab": len(corpus.tgt_vocab),
            "samples": [(test["english"][i], test["hypotheses"][i]) for i in spread(test["sentences"], SAMPLES)],
        }

    def checkpoint_extra(self, run: Run[TranslateConfig]) -> dict[str, Any]:
        """Both vocabularies and the config: what :func:`~scratch_transformer.checkpoint.load_translator` reads."""
        return translator_extra(run.model, run.data.corpus, asdict(run.config))


ENG_FRA = EngFraTask()


def run(
    config: TranslateConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool | str | Path = False,
) -> dict[str, Any]:
    """Train eng-fra, evaluate on the test split and (given ``out_dir``) write the run's files; returns the metrics.

    ``out_dir`` receives ``checkpoint.pt`` (during the run too), ``metrics.json``, ``loss.png``,
    ``attention_<k>.png`` (cross-attention of the last decoder layer for a few test sentences),
    ``translations.txt`` (20 test translations, spread over the lengths, with their references)
    and, with ``config.reference="torch"``, ``reference.png``. The metrics hold those samples
    as ``(English, French)`` pairs too. ``resume`` continues the run saved in ``out_dir``. A
    missing data file raises :class:`scratch_engine.tools.datasets.DataNotFoundError` before any training.
    """
    return run_task(ENG_FRA, config, out_dir, progress, resume)
