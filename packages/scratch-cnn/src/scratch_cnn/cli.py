"""Command line: ``scratch-cnn``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from scratch_cnn import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scratch-cnn", description="The convolutional network, from scratch.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train the default example(s) and write plots and metrics.json")
    demo.add_argument("--out", default="runs/scratch-cnn", help="output directory (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        print(f"scratch-cnn {__version__}: no example is implemented yet, nothing written to {args.out}")
    return 0
