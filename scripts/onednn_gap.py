"""Where the CNN's and the LSTM's gaps to torch.nn lie: the same torch.nn step with oneDNN on and off.

    python scripts/onednn_gap.py                  # 2 threads: LeNet, LSTM, GRU, tanh RNN (the nox -s bench cases)
    python scripts/onednn_gap.py --threads 1 --rounds 15

On the CPU, torch.nn hands a float32 ``nn.Conv2d`` and the whole sequence of an ``nn.LSTM``/``GRU``/``RNN`` to
oneDNN (``mkldnn_convolution``, ``mkldnn_rnn_layer`` in the profiler): one library call that keeps its work in
cache (a direct convolution, the gates of a whole sequence fused with their arithmetic). With oneDNN switched off
(``torch.backends.mkldnn.flags(enabled=False)``) torch runs its own ATen kernels instead, steps written, like ours,
as separate tensor operations. This script times each package's benchmark step (``scratch_cnn.bench``,
``scratch_rnn.bench``: the same models, batches and optimizers) three ways, in alternating rounds in one process,
medians: ours, torch.nn as it comes, torch.nn without oneDNN. Measurement only; #22 asks for at most 1.0x torch.nn.
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from scratch_cnn import bench as cnn_bench
from scratch_engine.tools.benchmark import alternate
from scratch_rnn import bench as rnn_bench
from scratch_rnn.charlm import CharLM
from scratch_rnn.reference import TorchCharLM

Step = Callable[[], Any]


def without_onednn(step: Step) -> Step:
    def run() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on TF32 for Intel GPUs, which this CPU run does not use
            with torch.backends.mkldnn.flags(enabled=False):
                return step()

    return run


def lenet_steps() -> tuple[Step, Step]:
    config = cnn_bench.BenchConfig()
    reference = cnn_bench.torch_model(config.seed)
    mine = cnn_bench.scratch_copy(reference)
    x = torch.randn(config.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (config.batch_size,))
    return cnn_bench.scratch_step(mine, x, y), cnn_bench.torch_step(reference, x, y)


def recurrent_steps(arch: str) -> tuple[Step, Step]:
    config = rnn_bench.BenchConfig()
    torch.manual_seed(config.seed)
    reference = TorchCharLM(config.vocab, arch, config.hidden, config.layers)
    mine = CharLM.from_torch(reference)
    ids = torch.randint(0, config.vocab, (config.batch_size, config.seq_len + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    return rnn_bench.scratch_step(mine, x, y), rnn_bench.torch_step(reference, x, y)


CASES: dict[str, Callable[[], tuple[Step, Step]]] = {
    "cnn lenet": lenet_steps,
    "rnn lstm": lambda: recurrent_steps("lstm"),
    "rnn gru": lambda: recurrent_steps("gru"),
    "rnn rnn": lambda: recurrent_steps("rnn"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds per case (default 9)")
    parser.add_argument("--steps", type=int, default=2, help="training steps timed in a row per side (default 2)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="which steps to time")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"one training step, {args.threads} threads, medians of {args.rounds} alternating rounds x {args.steps}:")
    for name in args.cases:
        ours, theirs = CASES[name]()
        sides = {"ours": ours, "torch.nn": theirs, "torch.nn, oneDNN off": without_onednn(theirs)}
        alternate(sides, 1, args.steps, torch.device("cpu"))  # warm-up
        times = alternate(sides, args.rounds, args.steps, torch.device("cpu"))
        ms = {side: statistics.median(values) for side, values in times.items()}
        print(
            f"  {name:10s} ours {ms['ours']:7.2f} ms   torch.nn {ms['torch.nn']:7.2f} ms "
            f"({ms['ours'] / ms['torch.nn']:.2f}x)   torch.nn without oneDNN {ms['torch.nn, oneDNN off']:7.2f} ms "
            f"({ms['ours'] / ms['torch.nn, oneDNN off']:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
