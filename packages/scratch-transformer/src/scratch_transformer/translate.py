r"""Training an English-to-French character Transformer, and translating with it.

    scratch-transformer train eng-fra --max-minutes 30 --out runs/scratch-transformer/eng-fra
    scratch-transformer translate --checkpoint runs/scratch-transformer/eng-fra/checkpoint.pt "I am cold."

**Training** is teacher forcing: the decoder reads ``<bos>`` + the French sentence and predicts
the French sentence + ``<eos>``, every position at once (the causal mask hides the future).
:class:`Translator` wraps the :class:`~scratch_transformer.Transformer` so that the engine's
``model(x)`` with ``x = (src_ids, tgt_in)`` gives the logits ``(B, T, V)``; the loss is the
engine's ``CrossEntropyLoss(ignore_index=<pad>, label_smoothing=0.1)`` (class dimension last), so
padded target positions count for nothing. Adam with warm-up + cosine to 0 at ``--max-steps``
(the default) or the paper's warm-up schedule (``InverseSqrtWarmup``, scaled so that the peak is
``--lr``), gradient clipping by global norm, batches bucketed by length
(:class:`~scratch_transformer.BucketBatches`).

**Budget.** The engine trains whole epochs. Here an "epoch" is a fixed number of steps
(``steps_per_epoch``, then validation): :class:`StepBudget` serves that many batches from the
bucketed loader (continuing across passes over the data) and stops early, mid-epoch, once
``max_steps`` steps or ``max_minutes`` are spent; the :class:`StopWhenSpent` callback then sets
``engine.stop_training``.

**Evaluation** decodes every distinct English sentence of the test split greedily (KV cache;
beam search with ``beam > 1``) and scores the corpus character error rate against the closest
of its reference translations (:func:`~scratch_transformer.metrics.corpus_character_error_rate`)
and the exact-match rate.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratch_engine import CrossEntropyLoss, Engine, Module, distributed
from scratch_engine.callbacks import Callback
from scratch_engine.checkpoint import load_checkpoint
from scratch_engine.device import resolve_device, seed_everything
from scratch_engine.experiment import default_dtype, make_optimizer, write_metrics
from scratch_engine.precision import weights_dtype
from scratch_engine.schedules import InverseSqrtWarmup, WarmupCosine
from scratch_transformer.data import SPLITS, EngFra, Vocabulary, locate_pairs, normalize
from scratch_transformer.decoding import beam_search, greedy_decode
from scratch_transformer.masks import padding_mask
from scratch_transformer.metrics import corpus_character_error_rate, exact_match_rate
from scratch_transformer.model import Transformer

SCHEDULES = ("inverse-sqrt", "cosine", "constant")
CHECKPOINT_KEY = "translator"  # what this module adds to the engine's checkpoint
MODEL_KEYS = ("d_model", "heads", "layers", "d_ff", "dropout", "norm")  # the config that builds the model


class Translator(Module):
    r"""The engine's view of a :class:`Transformer`: ``forward(x)`` with ``x = (src_ids, tgt_in)``.

    Returns the logits ``(B, T_tgt, tgt_vocab)`` of ``model(src_ids, tgt_in, padding_mask(src_ids,
    pad_id))``: the source padding is hidden from the encoder's self-attention and from the
    decoder's cross-attention; the decoder's self-attention is causal (padding at the end of a
    target row is only ever seen by padded positions, which the loss ignores). ``backward(g)``
    passes straight through to the Transformer's and returns ``None`` (integer inputs).
    """

    def __init__(self, model: Transformer, pad_id: int = Vocabulary.PAD) -> None:
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, x: tuple[Tensor, Tensor]) -> Tensor:
        src, tgt_in = x
        return self.model(src, tgt_in, padding_mask(src, self.pad_id))

    def backward(self, grad_output: Tensor) -> None:
        return self.model.backward(grad_output)


# --------------------------------------------------------------------------- configuration


@dataclass
class TranslateConfig:
    """Every knob of ``scratch-transformer train eng-fra`` (the defaults are the CLI's)."""

    # model
    d_model: int = 128
    heads: int = 4
    layers: int = 2  # encoder layers = decoder layers
    d_ff: int = 512
    dropout: float = 0.1
    norm: str = "pre"  # "pre" or "post"
    # data
    max_src_len: int | None = 20  # English sentences of at most this many characters
    pairs: str | None = None  # any well-formed pairs file instead of the located eng-fra.txt
    data_dir: str | None = None
    download: bool | None = None
    # training
    batch_size: int = 64
    lr: float = 3e-3  # the peak, reached at the end of the warm-up (1e-3: CER 0.499, 2e-3: 0.450, 3e-3: 0.438)
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "cosine"  # warm-up, then cosine to 0 at max_steps (the paper's "inverse-sqrt" decays too early)
    warmup_steps: int = 300
    label_smoothing: float = 0.1
    clip_grad_norm: float | None = 1.0
    epochs: int = 1000  # passes over the training data, an upper bound (the budget below usually ends first)
    max_steps: int | None = 9000  # about 30 minutes on 2 CPU cores; the cosine ends here
    max_minutes: float | None = 30.0
    steps_per_epoch: int = 250  # steps between validations
    seed: int = 0
    device: str = "auto"
    distributed: bool = False  # data-parallel over torchrun's processes; batch_size is then per process
    dtype: str | None = None  # "float32", "float64", "bfloat16" (mixed, float32 masters); None: float64 for
    # a run with a torch.nn reference (a parity check of the backward), else float32
    # evaluation
    test_limit: int | None = None  # decode only the first N distinct test sentences (None: all)
    beam: int = 1  # 1: greedy decoding for the test CER

    def __post_init__(self) -> None:
        if self.norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', got {self.norm!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.d_model % self.heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")

    def model_config(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in MODEL_KEYS}


def build_model(config: dict[str, Any], src_vocab: int, tgt_vocab: int, max_len: int = 512) -> Translator:
    """A :class:`Translator` around a fresh Transformer of ``config`` (:meth:`TranslateConfig.model_config`)."""
    transformer = Transformer(
        src_vocab,
        tgt_vocab,
        config["d_model"],
        config["heads"],
        config["layers"],
        config["layers"],
        config["d_ff"],
        config["dropout"],
        max_len,
        norm_first=config["norm"] == "pre",
    )
    return Translator(transformer)


def make_scheduler(config: TranslateConfig, optimizer: Any, total_steps: int) -> Any:
    """The paper's schedule peaking at ``config.lr`` after the warm-up, warm-up + cosine, or none.

    The cosine decays to 0 at ``total_steps`` (``--max-steps``, else ``--epochs`` passes over the data).
    """
    if config.schedule == "inverse-sqrt":
        # peak factor * (d_model * W)^(-1/2) = lr
        factor = config.lr * math.sqrt(config.d_model * config.warmup_steps)
        return InverseSqrtWarmup(optimizer, config.d_model, config.warmup_steps, factor=factor)
    if config.schedule == "cosine":
        total_steps = max(total_steps, 1)  # the warm-up is cut to the run when the run is shorter
        return WarmupCosine(optimizer, warmup_steps=min(config.warmup_steps, total_steps), total_steps=total_steps)
    return None


# --------------------------------------------------------------------------- the step budget


class StepBudget:
    """Serve ``loader``'s batches as "epochs" of ``steps_per_epoch`` steps, within a budget.

    Iterating continues where the previous epoch stopped, starting a new pass over ``loader``
    whenever one ends. An epoch also ends early when ``max_steps`` batches have been served in
    total or ``max_minutes`` have passed since the first batch; :attr:`spent` then turns true.
    ``len`` is ``steps_per_epoch`` (the progress bar's total).

    In a data-parallel run every rank must stop at the same step (the gradient all-reduce
    is a collective): the ranks agree, every ``AGREE_EVERY`` steps, on whether the time is up.
    """

    AGREE_EVERY = 10

    def __init__(
        self,
        loader: Iterable[Any],
        steps_per_epoch: int,
        max_steps: int | None = None,
        max_minutes: float | None = None,
    ) -> None:
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
        self.loader = loader
        self.steps_per_epoch = steps_per_epoch
        self.max_steps = max_steps
        self.max_seconds = None if max_minutes is None else 60.0 * max_minutes
        self.steps = 0
        self.start: float | None = None
        self._batches: Iterator[Any] | None = None

    def __len__(self) -> int:
        return self.steps_per_epoch

    @property
    def seconds(self) -> float:
        return 0.0 if self.start is None else time.perf_counter() - self.start

    @property
    def spent(self) -> bool:
        if self.max_steps is not None and self.steps >= self.max_steps:
            return True
        if self.max_seconds is None:
            return False
        if not distributed.is_distributed():
            return self.seconds >= self.max_seconds
        if self.steps % self.AGREE_EVERY != 0:
            return False
        return not distributed.all_ranks_agree(self.seconds < self.max_seconds)  # up on any rank: up on all

    def _next_batch(self) -> Any:
        for _ in range(2):  # a fresh pass when the current one is over
            if self._batches is None:
                self._batches = iter(self.loader)
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = None
        raise ValueError("StepBudget: the loader yields no batches")

    def __iter__(self) -> Iterator[Any]:
        if self.start is None:
            self.start = time.perf_counter()
        for _ in range(self.steps_per_epoch):
            if self.spent:
                return
            batch = self._next_batch()
            self.steps += 1
            yield batch


class StopWhenSpent(Callback):
    """Set ``engine.stop_training`` at the end of the epoch in which the :class:`StepBudget` ran out."""

    def __init__(self, budget: StepBudget) -> None:
        self.budget = budget

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict[str, float]) -> None:
        if self.budget.spent:
            engine.stop_training = True


# --------------------------------------------------------------------------- translating


def _max_len(src_lengths: Sequence[int]) -> int:
    return 2 * max(src_lengths, default=1) + 10  # French is longer than English, rarely twice as long


def _decoding_progress(progress: bool | None, total: int, what: str) -> Callable[[int], None]:
    """``report(done)`` after each batch: a line on stderr, rewritten in place on a terminal.

    ``progress`` as the engine's: ``False`` silence, else a report (on the main process only).
    Decoding a whole test split takes a while after training: this says it is under way.
    """
    if progress is False or not distributed.is_main_process():
        return lambda done: None
    terminal, start = sys.stderr.isatty(), time.perf_counter()

    def report(done: int) -> None:
        line = f"{what}: {done:,}/{total:,} sentences, {time.perf_counter() - start:.0f} s"
        end = "\n" if done == total or not terminal else ""
        print(("\r" if terminal else "") + line, end=end, file=sys.stderr, flush=True)

    return report


def translate(
    model: Translator | Transformer,
    sentences: Sequence[str],
    src_vocab: Vocabulary,
    tgt_vocab: Vocabulary,
    *,
    beam: int = 1,
    batch_size: int = 256,
    max_len: int | None = None,
    warn_unknown: bool = True,
    progress: bool | None = False,
) -> list[str]:
    """French for each English sentence: greedy decoding with the KV cache (``beam=1``) or beam search.

    Each sentence is first normalised as the training pairs were (:func:`~scratch_transformer.data.normalize`:
    NFC, every whitespace run one space, stripped), so ``"I  am cold. "`` is ``"I am cold."``. An empty
    sentence is a ``ValueError``. Characters the source vocabulary lacks are read as ``<unk>``, with a
    ``UserWarning`` naming them (``warn_unknown=False``: silently, as for a test split, whose rare
    characters the training split may not have). Sentences are decoded in batches of similar length;
    the output is in the input order. ``progress``: report each batch on stderr (``False``: silence).
    """
    if isinstance(sentences, str):  # it would decode each character as a sentence
        raise TypeError("translate expects a list of sentences, got one str: pass [sentence]")
    texts = [normalize(sentence) for sentence in sentences]
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        raise ValueError(
            f"cannot translate an empty sentence: sentence {empty[0] + 1} of {len(texts)} is empty (or only whitespace)"
        )
    unknown = sorted({char for text in texts for char in text if char not in src_vocab.index})
    if warn_unknown and unknown:
        shown = ", ".join(map(repr, unknown[:20])) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        warnings.warn(
            f"characters outside the model's source vocabulary are translated as <unk>: {shown}", stacklevel=2
        )
    transformer = model.model if isinstance(model, Translator) else model
    return _translate_texts(transformer, texts, src_vocab, tgt_vocab, beam, batch_size, max_len, progress)


@torch.no_grad()
def _translate_texts(
    transformer: Transformer,
    texts: Sequence[str],
    src_vocab: Vocabulary,
    tgt_vocab: Vocabulary,
    beam: int,
    batch_size: int,
    max_len: int | None,
    progress: bool | None,
) -> list[str]:
    """:func:`translate` after its checks: normalised, non-empty ``texts``, decoded in batches of similar length."""
    device = next(iter(transformer.parameters())).data.device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[str] = [""] * len(texts)
    report = _decoding_progress(progress, len(texts), "decoding" if beam == 1 else f"decoding, beam {beam}")
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        encoded = [src_vocab.encode(texts[i]) for i in chunk]
        width = max(len(ids) for ids in encoded)
        if width > transformer.src_pos.max_len:
            raise ValueError(
                f"a sentence of {width} characters is longer than this model's {transformer.src_pos.max_len} positions"
            )
        src = torch.tensor([ids + [Vocabulary.PAD] * (width - len(ids)) for ids in encoded], device=device)
        mask = padding_mask(src, Vocabulary.PAD)
        limit = min(max_len or _max_len([len(ids) for ids in encoded]), transformer.tgt_pos.max_len - 1)
        if beam == 1:
            rows = greedy_decode(
                transformer, src, mask, Vocabulary.BOS, Vocabulary.EOS, limit, pad_id=Vocabulary.PAD
            ).tolist()
        else:
            rows = beam_search(transformer, src, mask, Vocabulary.BOS, Vocabulary.EOS, limit, beam_size=beam)
        for i, ids in zip(chunk, rows, strict=True):
            out[i] = tgt_vocab.decode(ids)
        report(start + len(chunk))
    return out


def evaluate_translations(
    model: Translator,
    data: EngFra,
    split: str = "test",
    limit: int | None = None,
    beam: int = 1,
    progress: bool | None = False,
) -> dict[str, Any]:
    """Decode each distinct English sentence of ``split``; corpus CER against the closest reference, exact match.

    ``progress``: report the decoding on stderr as it goes (``False``: silence; see :func:`translate`).
    """
    references = data.references(split)
    english = list(references)[:limit]
    # a character only the split has is part of the task: <unk>, scored by the CER, no warning
    hypotheses = translate(
        model, english, data.src_vocab, data.tgt_vocab, beam=beam, warn_unknown=False, progress=progress
    )
    refs = [references[e] for e in english]
    return {
        "cer": corpus_character_error_rate(hypotheses, refs),
        "exact_match": exact_match_rate(hypotheses, refs),
        "sentences": len(english),
        "english": english,
        "hypotheses": hypotheses,
        "references": refs,
    }


def attention_map(model: Translator, english: str, french: str, src_vocab: Vocabulary, tgt_vocab: Vocabulary) -> Tensor:
    """The last decoder layer's cross-attention ``(H, len(french) + 1, len(english))`` for one translated pair.

    Row ``i`` is what the decoder looked at to produce output character ``i`` (the last row produced ``<eos>``).
    """
    transformer = model.model
    device = next(iter(transformer.parameters())).data.device
    src = torch.tensor([src_vocab.encode(normalize(english)) or [Vocabulary.UNK]], device=device)
    tgt = torch.tensor([tgt_vocab.encode(french, bos=True)], device=device)
    return transformer.cross_attention_weights(src, tgt)[-1][0].cpu()


def plot_attention(weights: Tensor, english: str, french: str, path: str | Path, per_head: bool = True) -> Path:
    """A heat map of ``weights (H, T_out, T_in)``: one panel per head and their mean (``per_head``) or the mean only."""
    from scratch_engine.plots import new_figure, save_figure

    panels = [(f"head {h + 1}", weights[h]) for h in range(weights.shape[0])] if per_head else []
    panels.append(("mean over heads", weights.mean(dim=0)))
    columns = [*english]
    rows = [*french, "<eos>"]
    size = 0.22
    width = max(3.0, size * len(columns) + 1.5)
    height = max(3.0, size * len(rows) + 1.2)
    figure = new_figure(width * len(panels), height)
    for k, (title, w) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), k + 1)
        axes.imshow(w.float().numpy(), cmap="viridis", vmin=0.0, aspect="auto")
        axes.set_xticks(range(len(columns)), [c if c != " " else "␣" for c in columns], fontsize=7)
        axes.set_yticks(range(len(rows)), [c if c != " " else "␣" for c in rows], fontsize=7)
        axes.set_xlabel("English (source)")
        if k == 0:
            axes.set_ylabel("French (output)")
        axes.set_title(title, fontsize=9)
    # a literal "$" would start matplotlib's mathtext ("$5 or $6" renders as math or fails to draw)
    title = f"cross-attention, last decoder layer: {english} → {french}".replace("$", r"\$")
    figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)


# --------------------------------------------------------------------------- checkpoints


def save_translator(path: str | Path, engine: Engine, data: EngFra, config: TranslateConfig) -> Path:
    """``engine.save_checkpoint`` plus what translating needs: both vocabularies and the config."""
    if not isinstance(engine.model, Translator):
        raise TypeError(
            f"save_translator saves an Engine that trains a Translator, got a {type(engine.model).__name__}"
        )
    translator = {
        "src_vocab": data.src_vocab.to_dict(),
        "tgt_vocab": data.tgt_vocab.to_dict(),
        "config": asdict(config),
        "max_len": engine.model.model.src_pos.max_len,
    }
    return engine.save_checkpoint(path, extra={CHECKPOINT_KEY: translator})


def load_translator(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Translator, Vocabulary, Vocabulary, dict[str, Any]]:
    """The model (eval mode), the source and target vocabularies and the config of a ``train`` checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = load_checkpoint(path)
    extra = state.get("extra", {}).get(CHECKPOINT_KEY)
    if not isinstance(extra, dict):
        raise ValueError(f"{path} is not a scratch-transformer translation checkpoint (no {CHECKPOINT_KEY!r} entry)")
    missing = [key for key in ("src_vocab", "tgt_vocab", "config") if key not in extra]
    missing += [] if "model" in state else ["model"]
    if not missing and isinstance(extra["config"], dict):
        missing = [f"config.{key}" for key in MODEL_KEYS if key not in extra["config"]]
    if missing:
        raise ValueError(
            f"{path} is not a complete scratch-transformer checkpoint: missing {', '.join(map(repr, missing))}"
        )
    src_vocab, tgt_vocab = Vocabulary.from_dict(extra["src_vocab"]), Vocabulary.from_dict(extra["tgt_vocab"])
    config = extra["config"]
    model = build_model(config, len(src_vocab), len(tgt_vocab), extra.get("max_len", 512))
    model.load_state_dict(state["model"])
    model.to(device=resolve_device(device))
    model.eval()
    return model, src_vocab, tgt_vocab, config


def evaluate_checkpoint(
    path: str | Path,
    *,
    beam: int = 1,
    limit: int | None = None,
    device: str | torch.device = "cpu",
    data_dir: str | None = None,
    pairs: str | None = None,
    progress: bool | None = False,
) -> dict[str, Any]:
    """The test CER and exact match of a ``train`` checkpoint, decoded again (greedy or ``beam``).

    The test split is rebuilt from the pairs and filters saved with the checkpoint (``data_dir`` or
    ``pairs`` say where the file is now); its vocabularies must be the checkpoint's. ``progress``:
    report the decoding on stderr (``False``: silence).
    """
    model, src_vocab, tgt_vocab, saved = load_translator(path, device)
    config = config_from(saved)
    config = replace(config, data_dir=data_dir or config.data_dir, pairs=pairs or config.pairs)
    data = load_data(config)
    if data.src_vocab.to_dict() != src_vocab.to_dict() or data.tgt_vocab.to_dict() != tgt_vocab.to_dict():
        raise ValueError(f"the pairs found give other character vocabularies than {path} was trained on")
    test = evaluate_translations(model, data, "test", limit, beam, progress)
    return {key: test[key] for key in ("cer", "exact_match", "sentences")} | {
        "decoding": "greedy" if beam == 1 else f"beam {beam}"
    }


# --------------------------------------------------------------------------- the training run


def load_data(config: TranslateConfig) -> EngFra:
    """The pairs (``config.pairs`` or the located file), filtered by ``max_src_len`` and split.

    Every split must have pairs (training, validation, the test CER): a ``ValueError`` naming the
    file and the empty split says so before any training, not after it.
    """
    if config.pairs is not None and not Path(config.pairs).is_file():
        from scratch_engine.datasets import DataNotFoundError

        raise DataNotFoundError(f"no pairs file at {config.pairs}")
    path = Path(config.pairs) if config.pairs is not None else locate_pairs(config.data_dir, config.download)
    data = EngFra.load(path, max_src_len=config.max_src_len)
    sizes = {split: len(data.split(split)) for split in SPLITS}
    empty = [split for split, size in sizes.items() if size == 0]
    if empty:
        counts = ", ".join(f"{split} {size:,}" for split, size in sizes.items())
        dropped = (
            f"; {data.filtered_out:,} longer than --max-src-len {config.max_src_len} left out"
            if data.filtered_out
            else ""
        )
        raise ValueError(
            f"{path}: no {' or '.join(empty)} pairs ({counts}{dropped}). Pairs are split 85/5/10 by a hash of the "
            "English sentence: the file needs more distinct English sentences"
        )
    return data


def config_from(values: dict[str, Any]) -> TranslateConfig:
    """A :class:`TranslateConfig` from a dict (e.g. a checkpoint's), ignoring unknown keys."""
    names = {f.name for f in fields(TranslateConfig)}
    return TranslateConfig(**{k: v for k, v in values.items() if k in names})


def run(
    config: TranslateConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    *,
    reference: str | None = None,
    samples: int = 20,
    attention_maps: int = 3,
) -> dict[str, Any]:
    """Train, evaluate on the test split and (given ``out_dir``) write the run's files; returns the metrics.

    ``out_dir`` receives ``metrics.json``, ``loss.png`` (per "epoch" of ``steps_per_epoch`` steps),
    ``attention_<k>.png`` (cross-attention of the last decoder layer for a few test sentences),
    ``translations.txt`` (``samples`` test translations, spread over the lengths, with their references)
    and ``checkpoint.pt``. The returned metrics also hold those ``samples`` as ``(English, French)`` pairs.
    ``reference="torch"`` also trains the torch.nn twin (:mod:`scratch_transformer.reference`) on the
    same batches, from the same weights, with dropout 0, and writes ``reference.png``.
    A missing data file raises :class:`scratch_engine.datasets.DataNotFoundError` before any training.
    """
    config = config or TranslateConfig()
    if reference not in (None, "torch"):
        raise ValueError(f"reference must be None or 'torch', got {reference!r}")
    # the metrics and the checkpoint record the format the run used
    config = replace(config, dtype=default_dtype(config.dtype, reference is not None))
    data = load_data(config)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    if config.distributed:
        if reference is not None:
            raise ValueError("--reference torch compares one process with its twin: drop --distributed")
        device = distributed.setup(device=device)
    # positions the encodings cover: the data's, and room for translating longer sentences later
    longest = max(max(len(e), len(f)) for pairs in data.pairs.values() for e, f in pairs)
    max_len = max(512, 2 * longest + 16)
    torch_model = None
    if reference == "torch":
        from scratch_transformer.reference import torch_twin

        config = replace(config, dropout=0.0)  # the twin would draw other dropout masks: compare without
        model, torch_model = torch_twin(
            config, len(data.src_vocab), len(data.tgt_vocab), max_len, device, dtype=weights_dtype(config.dtype)
        )
    else:
        model = build_model(config.model_config(), len(data.src_vocab), len(data.tgt_vocab), max_len)
    model.to(device=device)
    loader = data.loader("train", config.batch_size, seed=config.seed)
    max_steps = config.max_steps
    epoch_cap = config.epochs * len(loader)
    max_steps = epoch_cap if max_steps is None else min(max_steps, epoch_cap)
    budget = StepBudget(loader, min(config.steps_per_epoch, max_steps), max_steps, config.max_minutes)
    optimizer = make_optimizer(config.optimizer, model, config.lr, config.weight_decay)
    scheduler = make_scheduler(config, optimizer, max_steps)
    loss = CrossEntropyLoss(ignore_index=Vocabulary.PAD, label_smoothing=config.label_smoothing)
    twin = None
    if torch_model is not None:
        from scratch_engine.reference import twin_for

        twin = twin_for(torch_model, optimizer, loss, scheduler, config.clip_grad_norm)
    engine = Engine(
        model,
        loss,
        optimizer,
        scheduler=scheduler,
        clip_grad_norm=config.clip_grad_norm,
        progress=progress,
        log_every=10,
        reference=twin,
        dtype=config.dtype,
    )
    val_loader = data.loader("val", 256)
    start = time.perf_counter()
    engine.fit(
        budget, math.ceil(max_steps / budget.steps_per_epoch), val_loader=val_loader, callbacks=[StopWhenSpent(budget)]
    )
    train_seconds = time.perf_counter() - start
    test = evaluate_translations(model, data, "test", config.test_limit, config.beam, progress)
    metrics: dict[str, Any] = {
        "task": "eng-fra",
        "val_loss": engine.history["val_loss"][-1],  # after the last step: every epoch, cut short or not, ends with one
        "test_cer": test["cer"],
        "test_exact_match": test["exact_match"],
        "test_sentences": test["sentences"],
        "decoding": "greedy" if config.beam == 1 else f"beam {config.beam}",
        "steps": engine.global_step,
        "epochs": engine.epoch,
        "train_seconds": round(train_seconds, 3),
        "parameters": model.num_parameters(),
        "final_train_loss": engine.history["loss"][-1],
        "train_pairs": len(data.split("train")),
        "src_vocab": len(data.src_vocab),
        "tgt_vocab": len(data.tgt_vocab),
        "config": asdict(config),
    }
    if twin is not None:
        metrics.update(twin.summary())
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        engine.history.plot(out / "loss.png", title=f"eng-fra: loss per {budget.steps_per_epoch} steps")
        if twin is not None:
            from scratch_engine.reference import plot_reference_curves

            plot_reference_curves(twin, out / "reference.png", title="eng-fra: scratch vs torch.nn, same batches")
        lines = [
            f"{test['english'][i]}\n  -> {test['hypotheses'][i]}\n  reference: {' | '.join(test['references'][i])}\n"
            for i in spread(test["sentences"], samples)
        ]
        if distributed.is_main_process():
            (out / "translations.txt").write_text("\n".join(lines), encoding="utf-8")
        for k, i in enumerate(spread(test["sentences"], attention_maps, first=test["sentences"] // 4)):
            english, french = test["english"][i], test["hypotheses"][i]
            weights = attention_map(model, english, french, data.src_vocab, data.tgt_vocab)
            plot_attention(weights, english, french, out / f"attention_{k + 1}.png")
        save_translator(out / "checkpoint.pt", engine, data, config)
        write_metrics(out, metrics, device=device)
    metrics["samples"] = [(test["english"][i], test["hypotheses"][i]) for i in spread(test["sentences"], samples)]
    return metrics


def spread(n: int, k: int, first: int = 0) -> list[int]:
    """``k`` indices spread evenly over ``first .. n - 1`` (the test sentences come shortest first)."""
    if n <= first or k < 1:
        return []
    step = max((n - first) / k, 1.0)
    return sorted({first + int(j * step) for j in range(k) if first + int(j * step) < n})
