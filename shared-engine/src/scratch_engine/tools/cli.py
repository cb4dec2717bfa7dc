"""What every package's command line shares: ``train <task>`` from its tasks, ``demo``, one-line errors.

A package lists its :class:`~scratch_engine.tools.runner.Task` objects; :func:`add_train_command`
gives each one a subcommand whose flags are its config's fields
(:func:`~scratch_engine.tools.config.add_config_arguments`) plus ``--out``, ``--quiet`` and
``--resume``, and :func:`train` runs it with :func:`~scratch_engine.tools.runner.run`.
:func:`run_command` is a package's ``main``: a problem of the user's (missing data, a bad file,
a diverged run, an interrupted one) is one line on stderr and an exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

from scratch_engine.engine import NonFiniteLossError
from scratch_engine.tools import distributed
from scratch_engine.tools.config import Number, field_metadata, field_type
from scratch_engine.tools.datasets import ChecksumError, DataNotFoundError
from scratch_engine.tools.device import resolve_device
from scratch_engine.tools.runner import CHECKPOINT, RunError, RunInterruptedError, Task, run, unfinished

Config = TypeVar("Config")

# A problem with the user's data, files, settings or launch, not a bug: one line, exit status 1.
USER_ERRORS: tuple[type[Exception], ...] = (
    DataNotFoundError,
    ChecksumError,
    ImportError,  # a missing extra (torchvision)
    OSError,  # a file that cannot be read or written
    NonFiniteLossError,
    distributed.LaunchError,
    RunError,  # a --resume that does not fit the checkpoint, an unfinished run in --out
)


def add_config_arguments(parser: argparse.ArgumentParser, defaults: Any) -> argparse.ArgumentParser:
    """A flag for every field of the dataclass instance ``defaults`` (its values are the defaults shown).

    ``batch_size`` -> ``--batch-size``; a bool is a switch (``--x`` / ``--no-x``); a tuple takes one
    or more values; a field that allows ``None`` takes ``none``. Returns ``parser``.
    """
    groups: dict[str, Any] = {}
    for item in fields(defaults):
        meta = field_metadata(type(defaults), item.name)
        title = meta.get("group", "options")
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        kind, optional, many = field_type(type(defaults), item.name)
        default = getattr(defaults, item.name)
        flags = meta.get("flags")
        if flags == ():  # a setting the command itself fixes
            continue
        flags = flags or ("--" + item.name.replace("_", "-"),)
        help_text = f"{meta.get('help', '')} (%(default)s)"
        if kind is bool:
            group.add_argument(
                *flags, dest=item.name, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
            continue
        parse = meta.get("check") or (Number(float) if kind is float else kind)
        if meta.get("choices"):
            parse = _choice(meta["choices"])
        group.add_argument(
            *flags,
            dest=item.name,
            type=_none_or(parse) if optional else parse,
            nargs="+" if many else None,
            default=list(default) if many else default,
            help=help_text,
            metavar="{" + ",".join(meta["choices"]) + "}" if meta.get("choices") else None,
        )
    return parser


def config_from_args(defaults: Config, args: argparse.Namespace, **changes: Any) -> Config:
    """``defaults`` (a dataclass) with every field that a flag of the same name set; ``changes`` last."""
    given = vars(args)
    values = {}
    for item in fields(defaults):  # type: ignore[arg-type]
        if item.name in given:
            value = given[item.name]
            values[item.name] = tuple(value) if isinstance(value, list) else value
    return replace(defaults, **(values | changes))  # type: ignore[type-var]


def add_train_command(commands: Any, tasks: Mapping[str, Task[Any]], default_out: Path) -> argparse.ArgumentParser:
    """``train <task>`` for each of ``tasks``: its config's flags, ``--out``, ``--quiet`` and ``--resume``."""
    train = commands.add_parser("train", help="train one task", description="Train one task into --out.")
    names = "{" + ",".join(tasks) + "}"
    subcommands = train.add_subparsers(dest="task", required=True, metavar=names)
    for name, task in tasks.items():
        parser = subcommands.add_parser(
            name, help=task.help, description=f"Train {name}: {task.help}.", allow_abbrev=False
        )
        add_config_arguments(parser, task.config)
        add_run_arguments(parser, default_out / name)
    return train


def add_run_arguments(parser: argparse.ArgumentParser, default_out: Path | None) -> None:
    """``--out``, ``--quiet`` and ``--resume [PATH]``: where a run goes and how it shows itself."""
    group = parser.add_argument_group("output")
    group.add_argument(
        "--out",
        type=Path,
        default=default_out,
        help="folder for checkpoint.pt, metrics.json and the plots (%(default)s)",
    )
    group.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    group.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="PATH",
        help="continue the run saved in --out (or in the checkpoint PATH) where it stopped",
    )


def train(task: Task[Any], args: argparse.Namespace, progress: bool) -> dict[str, Any]:
    """Run ``task`` with the config its flags set; the metrics."""
    config = config_from_args(task.config, args)
    resume = args.resume if isinstance(args.resume, bool) else Path(args.resume)
    return run(task, config, args.out, progress, resume=resume)


def main(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    tasks: Mapping[str, Task[Any]],
    summary: Callable[[str, dict[str, Any], Path], str],
    commands: Mapping[str, Callable[[argparse.Namespace, bool], int]] | None = None,
    expected: tuple[type[Exception], ...] = (),
) -> int:
    """A package's ``main``: ``train <task>`` runs the task (:func:`train`) and prints ``summary(task, metrics,
    out)``; any other subcommand runs ``commands[name](args, progress)``. Errors as :func:`run_command`."""

    def command(args: argparse.Namespace, progress: bool) -> int:
        if args.command != "train":
            return (commands or {})[args.command](args, progress)
        metrics = train(tasks[args.task], args, progress)
        if distributed.is_main_process():  # one summary for a torchrun launch, not one per process
            print(summary(args.task, metrics, args.out))
        return 0

    return run_command(parser, argv, command, expected)


def run_command(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    command: Callable[[argparse.Namespace, bool], int],
    expected: tuple[type[Exception], ...] = (),
) -> int:
    """A package's ``main``: parse ``argv``, check ``--device`` and ``--out``, return ``command(args, progress)``.

    ``progress`` is ``False`` under ``--quiet``. A user's problem (missing or corrupt data, a missing
    extra, a file that cannot be read or written, a diverged run, ``--distributed`` outside
    torchrun) and any ``expected`` error is printed as one line, ``<prog>: error: ...``, exit status
    1. A run stopped by Ctrl-C or SIGTERM says where it is saved and how to resume it, exit status
    128 + the signal's number.
    """
    args = parse_arguments(parser, argv)
    check_device(parser, args)
    check_out(parser, args)
    try:
        return command(args, not getattr(args, "quiet", False))
    except RunInterruptedError as stop:
        if distributed.is_main_process():
            hint = (
                "" if stop.checkpoint is None else f"; resume it with: {resume_command(parser.prog.split()[0], argv)}"
            )
            print(f"{parser.prog}: {stop}{hint}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except (*USER_ERRORS, *expected) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that a flag no (sub)command knows is reported first, by the subcommand
    it was given to, with the closest flag it has: ``scratch-rnn sample: error: unrecognized arguments:
    --checkpont (did you mean --checkpoint?)`` rather than the top-level usage or a missing ``--checkpoint``."""
    words = list(sys.argv[1:] if argv is None else argv)
    leaf = parser
    for word in words:  # follow the subcommand words down to the parser that gets the flags
        commands = [a for a in leaf._actions if isinstance(a, argparse._SubParsersAction)]
        if not commands or word not in commands[0].choices:
            break
        leaf = commands[0].choices[word]
    required = [action for action in leaf._actions if action.required and action.option_strings]
    for action in required:  # so that a misspelt required flag is named as misspelt, not as missing
        action.required = False
    try:
        _, unknown = parser.parse_known_args(words)
    finally:
        for action in required:
            action.required = True
    if unknown:
        known = [flag for action in leaf._actions for flag in action.option_strings]
        close = difflib.get_close_matches(unknown[0], known, n=1) if unknown[0].startswith("--") else []
        leaf.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" (did you mean {close[0]}?)" if close else ""))
    return parser.parse_args(words)


def resume_command(prog: str, argv: Sequence[str] | None) -> str:
    """The command line that continues an interrupted run: this one, with ``--resume``."""
    words = list(sys.argv[1:] if argv is None else argv)
    if "--resume" not in words:
        words.append("--resume")
    return shlex.join([prog, *words])


def check_out(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Argparse's usage error now, not after a whole run, if ``--out`` cannot become a writable folder or holds a
    folder where a result file goes (``metrics.json``, ``checkpoint.pt``).

    Nothing is left behind: the probe folder made to prove that ``--out`` can be written is removed at once.
    """
    out = getattr(args, "out", None)
    if out is None:
        return
    existing = Path(out)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        parser.error(f"argument --out: {out} cannot be a folder: {existing} is a file")
    try:  # os.access says yes to root on /proc and to read-only mounts: try it
        os.rmdir(tempfile.mkdtemp(prefix=".scratch-probe-", dir=existing))
    except OSError as error:
        parser.error(f"argument --out: {out} cannot be written: {existing}: {error.strerror}")
    for name in ("metrics.json", CHECKPOINT):
        if (Path(out) / name).is_dir():
            parser.error(f"argument --out: {Path(out) / name} is a folder, where the run writes its {name}")


def check_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject an unknown or unavailable ``--device`` with argparse's usage error, before any work."""
    if getattr(args, "device", None) is not None:
        try:
            resolve_device(args.device)
        except ValueError as error:
            parser.error(str(error))


def add_demo_command(commands: Any, *, help: str, description: str, out: Path) -> argparse.ArgumentParser:
    """The ``demo`` subcommand every package has (``nox -s demo`` calls it): ``--out --device --quiet --full``."""
    demo = commands.add_parser("demo", help=help, description=description)
    demo.add_argument("--out", type=Path, default=out, help="output folder (default: %(default)s)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    demo.add_argument(
        "--full", action="store_true", help="train with the full budgets of `train` instead of the demo's modest ones"
    )
    return demo


def demo_task(
    task: Task[Any], changes: Mapping[str, Any], out: Path, progress: bool, hint: str
) -> dict[str, Any] | None:
    """One task of a ``demo``: ``task`` with its config ``changes``, into ``out/<task>``; ``None`` without its data.

    A demo fetches the data it lacks (verified), unless downloads are off (``SCRATCH_DOWNLOAD=0``, as in CI).
    A task whose data is still missing or corrupt is skipped with one line on stderr, why and how to get it
    (``hint``), and the demo goes on with the others; :func:`demo_status` then makes it fail.
    """
    print(f"== {task.name}", file=sys.stderr, flush=True)
    config = replace(task.config, **changes)
    if any(item.name == "download" for item in fields(config)):
        config = replace(config, download=None)  # None: allowed unless SCRATCH_DOWNLOAD=0
    try:  # an interrupted demo carries on where it stopped
        return run(task, config, out / task.name, progress, resume=unfinished(out / task.name / CHECKPOINT))
    except (DataNotFoundError, ChecksumError, ImportError) as error:
        advice = "" if isinstance(error, DataNotFoundError) else f"; {hint}"  # that one says how to get the data
        print(f"{task.name}: skipped: {error}{advice}", file=sys.stderr, flush=True)
        return None


def demo_status(prog: str, skipped: Sequence[str]) -> int:
    """A demo's exit status: 0 when every task trained, else 1 with one line naming the skipped ones."""
    if not skipped:
        return 0
    print(f"{prog} demo: incomplete: {', '.join(skipped)} skipped for missing data (see above)", file=sys.stderr)
    return 1


def _none_or(parse: Any) -> Any:
    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")
    return parse_or_none


def _choice(choices: tuple[str, ...]) -> Any:
    def choice(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)}, got {text}")
        return text

    return choice
