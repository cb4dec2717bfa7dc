"""Character-level Shakespeare: train a ``CharLM``, compare the three architectures, sample from it.

    scratch-rnn train shakespeare --arch lstm --out runs/scratch-rnn/lstm
    scratch-rnn compare --max-steps 300 --reference torch
    scratch-rnn sample --checkpoint runs/scratch-rnn/lstm/checkpoint.pt --prompt "ROMEO:"

The text (Tiny Shakespeare, or any UTF-8 file with ``text``) is split once: the first 90%
trains, the last 10% validates. Training reads it as ``batch_size`` contiguous streams in
``seq_len`` chunks (:class:`~scratch_rnn.charlm.CharStreams`), the model's state carried
from chunk to chunk. The engine is epoch-based, so here an *epoch* is ``eval_every`` steps:
the run validates (and the engine resets the carried state) every ``eval_every`` steps, and
stops after ``max_steps`` steps, ``epochs`` passes over the text or, checked at those
validations, ``max_minutes`` minutes, whichever comes first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from scratch_engine import Callback, CrossEntropyLoss, Engine, distributed, experiment
from scratch_engine.checkpoint import load_checkpoint
from scratch_engine.datasets import locate
from scratch_engine.distributed import is_main_process
from scratch_engine.experiment import TrainConfig, make_optimizer, save, start
from scratch_engine.plots import new_figure, save_figure
from scratch_engine.precision import resolve_dtype
from scratch_rnn.charlm import ARCHITECTURES, CharLM, CharStreams, Vocabulary, sample, split_text

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class CharLMConfig(TrainConfig):
    """The default is the acceptance configuration: a 2 x 256 LSTM, one-hot input, batch 32 x 100, Adam 2e-3, clip 5."""

    epochs: int = 20  # passes over the training text: an upper bound, the step and time budgets usually stop first
    batch_size: int = 32
    lr: float = 2e-3
    arch: str = "lstm"
    hidden: int = 256
    layers: int = 2
    embedding: int = 0  # 0: one-hot input
    seq_len: int = 100
    clip: float | None = 5.0
    max_steps: int | None = None
    max_minutes: float | None = 20.0
    eval_every: int = 200  # steps between validations (an engine "epoch")
    text: str | None = None  # any text file instead of Tiny Shakespeare
    data_dir: str | None = None
    download: bool | None = None
    threads: int | None = None  # torch.set_num_threads; None leaves torch's default
    reference: str | None = None  # "torch": train the torch.nn twin on the same batches
    dtype: str | None = None  # "float32" or "float64"; None: float64 with a reference, else float32
    prompt: str = "ROMEO:"
    sample_length: int = 500
    temperature: float = 0.8
    top_k: int | None = None


def load_text(config: CharLMConfig) -> tuple[str, str]:
    """The text and where it came from: ``config.text``, else Tiny Shakespeare (located and verified)."""
    if config.text is not None:
        path = Path(config.text)
        if not path.is_file():
            raise FileNotFoundError(f"no text file at {path}")
    else:
        path = locate("tinyshakespeare", config.data_dir, config.download) / "input.txt"
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); --text needs a UTF-8 file"
        ) from error


class _Budget(Callback):
    """Record the step count at each validation; stop once ``max_minutes`` have passed."""

    def __init__(self, max_minutes: float | None) -> None:
        self.max_minutes = max_minutes
        self.steps: list[int] = []

    def on_train_begin(self, engine: Engine) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict[str, float]) -> None:
        self.steps.append(engine.global_step)
        if self.max_minutes is None:
            return
        time_left = time.perf_counter() - self.start < 60.0 * self.max_minutes
        if not distributed.all_ranks_agree(time_left):  # up on any rank: up on all
            engine.stop_training = True


class _Timed:
    """A loader that adds up the seconds spent iterating it (the forward passes included)."""

    def __init__(self, loader: CharStreams) -> None:
        self.loader, self.seconds = loader, 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        start = time.perf_counter()
        try:
            yield from self.loader
        finally:
            self.seconds += time.perf_counter() - start


def run_dtype(config: CharLMConfig) -> torch.dtype:
    """The engine's :func:`~scratch_engine.experiment.run_dtype` as a ``torch.dtype``: ``config.dtype``,
    by default float64 for a run with a reference, float32 otherwise.

    A parity run checks the hand-written backward, so it runs both models in float64: the
    vanilla RNN at the default size and learning rate is chaotic for a stretch of its early
    training, and there float32 rounding (scratch and torch add the same products in a
    different order) grows about 10^5-fold in 10 steps into a visible gap in the loss
    curves that says nothing about the gradients. In float64 that rounding starts about
    5e8 times smaller (the ratio of the machine epsilons). ``dtype="float32"`` runs the
    comparison in float32 all the same. ``"bfloat16"`` is mixed precision: the model keeps
    float32 master weights and the engine computes in a bfloat16 copy (no reference then).
    """
    dtype = resolve_dtype(experiment.run_dtype(config))
    assert dtype is not None  # run_dtype always names one
    return dtype


def build(config: CharLMConfig, vocab_size: int) -> tuple[CharLM, Any]:
    """The model and, with ``reference="torch"``, its torch.nn twin ``TorchCharLM`` (built first; the
    scratch model copies it; :func:`run` trains it with the engine's ``twin_for``).

    Both are initialised in float32 (so a float64 run starts from the float32 run's weights) and
    then cast to :func:`run_dtype`.
    """
    dtype = run_dtype(config)
    if dtype == torch.bfloat16:
        if config.reference is not None:
            raise ValueError("a torch.nn reference run compares in float64 or float32, not bfloat16")
        dtype = torch.float32  # the master weights; the Engine makes the bfloat16 copy
    if config.reference is None:
        return CharLM(vocab_size, config.arch, config.hidden, config.layers, config.embedding).to(dtype=dtype), None
    if config.reference != "torch":
        raise ValueError(f"reference must be 'torch' or None, got {config.reference!r}")
    from scratch_rnn.reference import TorchCharLM  # torch.nn only on request

    twin_model = TorchCharLM(vocab_size, config.arch, config.hidden, config.layers, config.embedding).to(dtype=dtype)
    return CharLM.from_torch(twin_model), twin_model  # from_torch copies the twin's dtype too


def _check_config(config: CharLMConfig) -> None:
    """The values the flags' types also check, for a config built in code: a ``ValueError`` naming the field."""
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {config.arch!r}; valid names: {', '.join(ARCHITECTURES)}")
    # clip=0 would scale every gradient to zero: training that silently never moves. None turns clipping off.
    if config.clip is not None and not (math.isfinite(config.clip) and config.clip > 0):
        raise ValueError(f"clip must be a positive finite number, or None for no clipping; got {config.clip}")
    if config.max_minutes is not None and not (math.isfinite(config.max_minutes) and config.max_minutes > 0):
        raise ValueError(
            f"max_minutes must be a positive finite number, or None for no time budget; got {config.max_minutes}"
        )


def _check_splits_fit(train_ids: torch.Tensor, val_ids: torch.Tensor, config: CharLMConfig) -> None:
    """A ``ValueError`` naming the split, its size and the sizes that fit, where :class:`CharStreams` would refuse it.

    The rule is :meth:`CharStreams.max_batch_size`'s (the training split reads at a random offset).
    """
    world = distributed.world_size()
    splits = [("training", "the first 90%", len(train_ids), True), ("validation", "the last 10%", len(val_ids), False)]

    def longest_chunk(size: int, offset: bool) -> int:  # with one stream per process
        return size // world // 2 if offset else size // world - 1

    for split, where, size, offset in splits:
        if CharStreams.max_batch_size(size, config.seq_len, offset, world) >= config.batch_size:
            continue
        # both splits must fit
        fits = min(CharStreams.max_batch_size(n, config.seq_len, o, world) for _, _, n, o in splits)
        longest = min(longest_chunk(n, o) for _, _, n, o in splits)
        if fits >= 1:
            hint = f"--batch-size {fits} or less fits with --seq-len {config.seq_len}"
        else:
            hint = f"with --batch-size 1, --seq-len {longest} or less fits" if longest >= 1 else "use a longer text"
        raise ValueError(
            f"the {split} split ({where} of the text, {size:,} characters) is too short for --batch-size "
            f"{config.batch_size} and --seq-len {config.seq_len}: {hint}"
        )


def run(
    config: CharLMConfig | None = None, out_dir: str | Path | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """Train; returns (and, given ``out_dir``, writes) metrics, ``loss.png``, ``sample.txt`` and the checkpoint."""
    config = config or CharLMConfig()
    _check_config(config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    text, source = load_text(config)
    device = start(config)
    vocab = Vocabulary.from_text(text)
    train_text, val_text = split_text(text)
    train_ids, val_ids = vocab.encode(train_text).to(device), vocab.encode(val_text).to(device)
    _check_splits_fit(train_ids, val_ids, config)
    probe = CharStreams(train_ids, config.batch_size, config.seq_len, random_offset=True, seed=config.seed)
    total = config.epochs * probe.chunks_per_pass
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    every = min(config.eval_every, total)
    train_loader = CharStreams(
        train_ids,
        config.batch_size,
        config.seq_len,
        steps_per_epoch=every,
        total_steps=total,
        random_offset=True,
        seed=config.seed,
    )
    val_loader = _Timed(CharStreams(val_ids, config.batch_size, config.seq_len))

    model, twin_model = build(config, len(vocab))
    model.to(device)
    optimizer = make_optimizer(config.optimizer, model, config.lr, config.weight_decay)
    loss = CrossEntropyLoss()
    twin = None
    if twin_model is not None:
        from scratch_engine.reference import twin_for  # torch.nn only on request

        twin = twin_for(twin_model.to(device), optimizer, loss, clip_grad_norm=config.clip)
    engine = Engine(
        model,
        loss,
        optimizer,
        clip_grad_norm=config.clip,
        progress=progress,
        reference=twin,
        dtype=torch.bfloat16 if run_dtype(config) == torch.bfloat16 else None,
    )
    budget = _Budget(config.max_minutes)
    start_time = time.perf_counter()
    engine.fit(train_loader, math.ceil(total / every), val_loader=val_loader, callbacks=[budget])
    seconds = time.perf_counter() - start_time
    history = engine.history
    val_losses = history["val_loss"]
    tokens = engine.global_step * config.batch_size * config.seq_len
    generator = torch.Generator().manual_seed(config.seed)
    prompt = config.prompt if set(config.prompt) <= set(vocab.chars) else text[0]
    config = replace(config, prompt=prompt)  # recorded in the checkpoint: `sample`'s default prompt
    text_sample = sample(model, vocab, prompt, config.sample_length, config.temperature, config.top_k, generator)
    metrics: dict[str, Any] = {
        "task": "shakespeare" if config.text is None else "text",
        "arch": config.arch,
        "val_loss": val_losses[-1],
        "val_bpc": val_losses[-1] / math.log(2),
        "best_val_loss": min(val_losses),
        "steps": engine.global_step,
        "train_seconds": round(seconds, 3),
        "validation_seconds": round(val_loader.seconds, 3),
        "tokens_per_second": tokens / max(seconds - val_loader.seconds, 1e-9),
        "parameters": model.num_parameters(),
        "dtype": str(run_dtype(config)).removeprefix("torch."),
        "final_train_loss": history["loss"][-1],
        "curve": {"step": budget.steps, "loss": history["loss"], "val_loss": val_losses},
        "vocab_size": len(vocab),
        "text": source,
        "train_characters": len(train_text),
        "val_characters": len(val_text),
        "sample": text_sample,
        "config": asdict(config),
    }
    if twin is not None:
        reference_val = history["reference_val_loss"]
        metrics.update(twin.summary())
        metrics["curve"]["reference_val_loss"] = reference_val
        metrics["reference_max_val_loss_gap"] = max(abs(a - b) for a, b in zip(val_losses, reference_val, strict=True))
        metrics["note"] = "tokens_per_second includes the torch twin's steps"
    if out_dir is not None:
        out_dir = Path(out_dir)
        plot_curves({config.arch: metrics}, out_dir / "loss.png", train=True)
        if is_main_process():
            (out_dir / "sample.txt").parent.mkdir(parents=True, exist_ok=True)
            (out_dir / "sample.txt").write_text(text_sample + "\n", encoding="utf-8")
        save_run(engine, vocab, config, out_dir / CHECKPOINT_NAME)
        if twin is not None:
            from scratch_engine.reference import plot_reference_curves

            plot_reference_curves(twin, out_dir / "reference.png", title=f"{config.arch}: scratch vs torch.nn")
    save(out_dir, metrics, device)
    return metrics


# --------------------------------------------------------------------------- checkpoints


def save_run(engine: Engine, vocab: Vocabulary, config: CharLMConfig, path: Path) -> Path:
    """``engine.save_checkpoint`` plus the vocabulary and config (plain lists and dicts: ``weights_only`` loads it)."""
    run_config = {key: value for key, value in asdict(config).items() if value is not None}
    return engine.save_checkpoint(path, extra={"vocab": vocab.to_list(), "config": run_config})


def load_model(path: str | Path) -> tuple[CharLM, Vocabulary, dict[str, Any]]:
    """The trained model, its vocabulary and its config from a checkpoint written by :func:`run`."""
    state = load_checkpoint(path)
    extra = state.get("extra", {})
    if not isinstance(extra, dict) or "vocab" not in extra or "config" not in extra:
        raise ValueError(f"{path} is not a scratch-rnn language-model checkpoint (no vocab or config)")
    config, weights = extra["config"], state.get("model")
    config = config if isinstance(config, dict) else {}
    weights = weights if isinstance(weights, dict) else {}
    missing = [key for key in ("arch", "hidden", "layers") if key not in config]
    if "head.weight" not in weights:
        missing.append("model")
    if missing:
        raise ValueError(f"{path} is not a complete scratch-rnn checkpoint (missing {', '.join(map(repr, missing))})")
    vocab = Vocabulary(extra["vocab"])
    model = CharLM(len(vocab), config["arch"], config["hidden"], config["layers"], config.get("embedding", 0))
    model.to(dtype=weights["head.weight"].dtype)  # a float64 (reference) run's weights stay float64
    model.load_state_dict(weights)
    return model, vocab, config


def default_prompt(config: dict[str, Any], vocab: Vocabulary) -> str:
    """``sample``'s prompt when none is given: the one the training run sampled with (``ROMEO:`` for
    Shakespeare, else the text's first character) where the vocabulary has its characters (an
    older checkpoint records ``ROMEO:`` for any text), else the vocabulary's first character."""
    prompt = config.get("prompt")
    return prompt if isinstance(prompt, str) and prompt and set(prompt) <= set(vocab.chars) else vocab.chars[0]


# --------------------------------------------------------------------------- comparison


def compare(
    config: CharLMConfig,
    out_dir: str | Path | None,
    progress: bool | None = None,
    archs: Sequence[str] = ("rnn", "lstm", "gru"),
) -> list[dict[str, Any]]:
    """Train each architecture with the same budget into ``out_dir/<arch>``; one plot of the validation curves."""
    results = {}
    for arch in archs:
        out = None if out_dir is None else Path(out_dir) / arch
        results[arch] = run(replace(config, arch=arch), out, progress)
    if out_dir is not None:
        plot_curves(results, Path(out_dir) / "compare.png", train=False)
    return [{"arch": arch, **{key: m.get(key) for key in COMPARE_KEYS if key in m}} for arch, m in results.items()]


COMPARE_KEYS = (
    "parameters",
    "dtype",
    "steps",
    "tokens_per_second",
    "best_val_loss",
    "val_loss",
    "train_seconds",
    "reference_max_relative_deviation",
    "reference_max_val_loss_gap",
)


def plot_curves(results: dict[str, dict[str, Any]], path: Path, *, train: bool) -> Path:
    """Validation loss per step for each run (torch twin dashed); with ``train`` also the training loss."""
    figure = new_figure(7.0, 4.5)
    axes = figure.add_subplot()
    for k, (arch, metrics) in enumerate(results.items()):
        curve = metrics["curve"]
        axes.plot(curve["step"], curve["val_loss"], color=f"C{k}", marker="o", label=f"{arch} validation")
        if train:
            axes.plot(
                curve["step"], curve["loss"], color=f"C{k}", alpha=0.5, label=f"{arch} training (mean since last)"
            )
        if "reference_val_loss" in curve:
            axes.plot(
                curve["step"], curve["reference_val_loss"], color=f"C{k}", linestyle="--", label=f"{arch} torch.nn twin"
            )
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per character)")
    axes.grid(alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the comparison."""
    header = ["arch", "dtype", "parameters", "steps", "tokens/s", "best val loss", "best val bpc"]
    reference = any("reference_max_val_loss_gap" in row for row in rows)
    if reference:
        header += ["max val gap vs torch", "max rel. train-loss gap"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [
            row["arch"],
            row.get("dtype", "float32"),
            f"{row['parameters']:,}",
            str(row["steps"]),
            f"{row['tokens_per_second']:,.0f}",
            f"{row['best_val_loss']:.4f}",
            f"{row['best_val_loss'] / math.log(2):.3f}",
        ]
        if reference:
            cells += [f"{row['reference_max_val_loss_gap']:.2e}", f"{row['reference_max_relative_deviation']:.2e}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- vanishing gradients


@torch.no_grad()
def gradient_norms(
    arch: str,
    steps: int = 200,
    hidden: int = 128,
    vocab_size: int = 65,
    batch: int = 16,
    seed: int = 0,
    gate_bias: float = 0.0,
) -> list[float]:
    r"""``||dL/dh_t||`` for ``t = 0..steps-1`` of a 1-layer network at initialisation, mean over the batch.

    The input is random one-hot characters; the loss depends on the last hidden state only,
    :math:`L = \langle u, h_{T-1}\rangle` with a fixed random unit vector :math:`u` per
    sequence, so :math:`\delta h_{T-1} = u` and backprop through time gives
    :math:`\delta h_t` for every earlier :math:`t` (for the LSTM, through both :math:`h` and
    the cell state :math:`c`). Returns the norms normalised so that the last one is 1.

    ``gate_bias`` is added to the bias of the gate that keeps the old state: the LSTM's
    forget gate :math:`f` and the GRU's update gate :math:`z` (the vanilla RNN has none), so
    ``gate_bias=3`` starts them at :math:`\sigma(3) \approx 0.95`, "remember".
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = ARCHITECTURES[arch](vocab_size, hidden).to(dtype=torch.float64)  # float64: no underflow for ~300 steps
    weights = dict(layer.named_parameters())
    if arch in ("lstm", "gru"):  # rows H..2H: f in (i, f, g, o), z in (r, z, n)
        weights["bias_ih_l0"].data[hidden : 2 * hidden] += gate_bias
    ids = torch.randint(0, vocab_size, (steps, batch), generator=generator)
    x = torch.zeros(steps, batch, vocab_size, dtype=torch.float64).scatter_(2, ids.unsqueeze(2), 1.0)
    layer(x)
    cache = layer._caches[0]
    w_hh = weights["weight_hh_l0"].data
    u = torch.randn(batch, hidden, generator=generator, dtype=torch.float64)
    zeros = torch.zeros(batch, hidden, dtype=torch.float64)
    d_s = (u / u.norm(dim=1, keepdim=True), *(zeros,) * (layer.cell.state_size - 1))
    norms = [0.0] * steps
    for t in reversed(range(steps)):
        norms[t] = float(d_s[0].norm(dim=1).mean())
        _, _, d_s = layer.cell.step_backward(d_s, cache.steps[t], w_hh)
    return [n / norms[-1] for n in norms]


def plot_gradient_norms(norms: dict[str, list[float]], path: Path) -> Path:
    """One line per entry of ``norms`` (label -> relative norms by ``t``), against the distance from the loss."""
    figure = new_figure(7.0, 4.2)
    axes = figure.add_subplot()
    for label, values in norms.items():
        distance = [len(values) - 1 - t for t in range(len(values))]
        floor = [max(v, 1e-300) for v in values]  # log scale: an underflow to 0 stays drawable
        colour = f"C{list(ARCHITECTURES).index(label.split(',')[0])}" if label.split(",")[0] in ARCHITECTURES else None
        axes.semilogy(distance, floor, label=label, color=colour, linestyle="-" if "," not in label else "--")
    axes.set_xlabel("time steps back from the loss, T-1-t")
    axes.set_ylabel(r"$\|\partial L/\partial h_t\|$ (relative)")
    axes.set_title("gradient reaching earlier hidden states, at initialisation")

    axes.grid(alpha=0.3, which="both")
    axes.legend()
    return save_figure(figure, path)
