"""The ``saewidgets`` command: ``demo`` (the main job), ``train`` (an SAE from the command line), ``tutorials``
(copy the notebooks into a folder).

Options have no defaults of their own: they are derived from the settings dataclasses (`DemoSettings` for
``demo``; `TrainingRun` and `TrainConfig` for ``train``), from each field's type, default and docstring. A mistake
prints one line saying what to change; ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import sys
import textwrap
import types
import typing
from dataclasses import MISSING, fields
from typing import Any, Literal, Sequence

#: Layer names ``--layer`` accepts (`saewidgets.models.NAMED_DEPTHS` resolves them; a test keeps the two in step).
LAYER_NAMES = ("middle", "late")


def layer_arg(value: str) -> int | str:
    """``--layer``: a block index (negative counts from the end) or one of `LAYER_NAMES`."""
    if value in LAYER_NAMES:
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a block index or one of {', '.join(LAYER_NAMES)}") from None


# -- options derived from dataclasses ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass ``cls`` (the string literal after its annotation), one line each."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (a frozen application): options keep their names and defaults
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _value_type(hint: Any) -> tuple[Any, tuple[Any, ...] | None]:
    """(converter, choices) for a field's type hint: ``int | None`` -> int, ``Literal["a", "b"]`` -> choices."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is Literal:
        return type(typing.get_args(hint)[0]), typing.get_args(hint)
    if hint in (int, float, str, bool):
        return hint, None
    return str, None


#: Fields whose command-line value is parsed by a function of their own.
_CONVERTERS = {"layer": layer_arg}


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *, defaults: Any = None) -> None:
    """One ``--field-name`` option per field of dataclass ``cls``, typed and documented by the field.

    Without ``defaults`` each option's default is the field's (a field without one is a required option); with
    ``defaults`` (an instance of ``cls``) every option defaults to None, meaning "keep ``defaults``' value", and the
    help shows that value.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        shown = getattr(defaults, f.name) if defaults is not None else f.default
        kwargs: dict[str, Any] = {"dest": f.name, "help": docs.get(f.name, "")}
        converter, choices = _value_type(hints[f.name])
        if converter is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _CONVERTERS.get(f.name, converter)
            kwargs["metavar"] = f.name.upper() if choices is None else None
            if choices is not None:
                kwargs["choices"] = choices
        if defaults is not None:
            kwargs["default"] = None
        elif f.default is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        if shown is not MISSING:
            kwargs["help"] += f" (default: {shown})"
        kwargs["help"] = kwargs["help"].replace("%", "%%")  # argparse formats help strings with %
        parser.add_argument(flag, **{k: v for k, v in kwargs.items() if v is not None or k == "default"})


def from_options(cls: type, args: argparse.Namespace, base: Any = None) -> Any:
    """The instance of ``cls`` the parsed options describe (``base`` with every option that was given)."""
    given = {f.name: getattr(args, f.name) for f in fields(cls)}
    if base is None:
        return cls(**given)
    from dataclasses import replace

    return replace(base, **{name: value for name, value in given.items() if value is not None})


def to_options(instance: Any) -> list[str]:
    """Command-line options that make `from_options` rebuild ``instance`` (fields left at their default omitted)."""
    argv: list[str] = []
    for f in fields(instance):
        value = getattr(instance, f.name)
        if f.default is not MISSING and value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            argv += [flag, str(value)]
    return argv


# -- saewidgets demo -------------------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace, base: Any) -> Any:
    """``base`` (a `DemoSettings`) with every option the user gave on the command line."""
    return from_options(type(base), args, base)


def cmd_demo(args: argparse.Namespace) -> int:
    """Train (or reuse) the demo SAE, then write a self-contained HTML explorer."""
    from .demo.run import run_demo
    from .demo.settings import FULL, QUICK

    settings = _settings(args, QUICK if args.quick else FULL)
    return run_demo(
        settings,
        args.out,
        refresh=args.refresh,
        steer=not args.no_steer,
        n_prompts=args.n_prompts,
        lab=args.lab,
        quick=args.quick,
    )


def cmd_tutorials(args: argparse.Namespace) -> int:
    """Copy the tutorial notebooks into a folder of your own (notebooks already there are kept)."""
    from pathlib import Path

    from .demo.lab import copy_tutorials

    notebooks = copy_tutorials(args.dir, exercises=args.exercises)
    print(f"{len(notebooks)} tutorials in {Path(args.dir).resolve()}: " + ", ".join(p.name for p in notebooks))
    return 0


# -- saewidgets train ------------------------------------------------------------------------------------------------


def train_configs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The (`TrainingRun`, `TrainConfig`) that parsed ``train`` options describe (validated)."""
    from .sae.train_config import TrainConfig
    from .training_run import TrainingRun

    return from_options(TrainingRun, args), from_options(TrainConfig, args)


def cmd_train(args: argparse.Namespace) -> int:
    """Harvest a corpus, train an SAE, save it and print its held-out metrics: here, or on N torchrun ranks."""
    from .training_run import check_run, run_training

    run, config = train_configs(args)
    if args.distributed is None:
        return run_training(run, config)
    if args.distributed < 1:
        raise ValueError(
            f"--distributed {args.distributed}: pass the number of processes to start (1 or more), or "
            "leave the option out to train in this process."
        )
    check_run(run, config)
    return _launch(args.distributed, [*to_options(run), *to_options(config), *(["--debug"] if args.debug else [])])


def _launch(n_processes: int, options: list[str]) -> int:
    """``torchrun --standalone --nproc-per-node N -m saewidgets.training_run OPTIONS`` on this machine (torchrun
    as `saewidgets._torchrun` starts it: without its traceback when a signal stops it).

    torchrun runs in a session of its own, and every SIGINT or SIGTERM this command gets is passed on to it, once:
    a Ctrl-C at the terminal and a ``kill -INT`` of this command alike reach torchrun, which passes the signal to
    the ranks (each in a session of its own, so a terminal's Ctrl-C never reached them directly). The first SIGINT
    lets the ranks end their step, checkpoint and save; a second stops them at once (torchrun terminates them). The
    command returns when torchrun has ended, so its ranks never outlive it. Before, a ``kill -INT`` of this command
    alone left torchrun training, and a SIGTERM left it running with no parent."""
    import signal
    import subprocess
    import threading

    command = [
        sys.executable,
        "-m",
        "saewidgets._torchrun",
        "--standalone",
        f"--nproc-per-node={n_processes}",
        "-m",
        "saewidgets.training_run",
        *options,
    ]
    print("running:", " ".join(command), flush=True)
    torchrun = subprocess.Popen(command, start_new_session=True)
    received: list[int] = []

    def pass_on(signum: int, frame: object) -> None:
        received.append(signum)
        torchrun.send_signal(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # only the main thread may handle signals
        previous = {signum: signal.signal(signum, pass_on) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        returncode = torchrun.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        print(
            "\ninterrupted: every rank has ended; run the same command again to resume from its checkpoint.",
            file=sys.stderr,
        )
        return 128 + received[0]
    return returncode


# -- the parser and the entry point ---------------------------------------------------------------------------------


def train_parser(
    prog: str = "saewidgets train", *, distributed: bool = True, parser: argparse.ArgumentParser | None = None
) -> argparse.ArgumentParser:
    """The ``train`` options: `TrainingRun`'s and `TrainConfig`'s fields (and ``--distributed N``)."""
    from .sae.train_config import TrainConfig
    from .training_run import TrainingRun

    parser = parser or argparse.ArgumentParser(prog=prog, description=__doc__)
    add_options(parser.add_argument_group("data and files"), TrainingRun)
    add_options(parser.add_argument_group("training (saewidgets.sae.TrainConfig)"), TrainConfig)
    if distributed:
        parser.add_argument(
            "--distributed",
            type=int,
            metavar="N",
            help="launch N processes with torchrun on this machine, data-parallel (or latent-sharded)",
        )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.set_defaults(func=cmd_train, distributed=None)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .demo.settings import FULL, QUICK, DemoSettings

    parser = argparse.ArgumentParser(prog="saewidgets", description=__doc__)
    parser.add_argument("--version", action="version", version=f"saewidgets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train (or reuse) an SAE on the embedded model and write an HTML explorer")
    add_options(demo.add_argument_group("demo settings (saewidgets.demo.DemoSettings)"), DemoSettings, defaults=FULL)
    demo.add_argument("--quick", action="store_true", help=f"smaller, faster run ({QUICK.n_features} features)")
    demo.add_argument("--out", default="saewidgets-demo", help="folder for explorer.html (default: ./saewidgets-demo)")
    demo.add_argument("--refresh", action="store_true", help="ignore the cache and recompute everything")
    demo.add_argument("--no-steer", action="store_true", help="skip the steering examples")
    demo.add_argument("--n-prompts", type=int, default=2, help="steering prompts to run (default 2)")
    demo.add_argument(
        "--lab", action="store_true", help="then open JupyterLab on the quickstart tutorial, live on this SAE"
    )
    demo.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    demo.set_defaults(func=cmd_demo)

    tutorials = sub.add_parser("tutorials", help="copy the tutorial notebooks into a folder")
    tutorials.add_argument("dir", help="folder to copy them into (created; notebooks already there are kept)")
    tutorials.add_argument(
        "--exercises", action="store_true", help="blank each exercise's solution, for you to write (the checks stay)"
    )
    tutorials.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    tutorials.set_defaults(func=cmd_tutorials)

    train_parser(parser=sub.add_parser("train", help="train an SAE on a corpus and print its held-out metrics"))
    return parser


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command: a mistake prints one line (the traceback with ``--debug``)."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: cached steps are kept; run the same command again to resume.", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 -- every failure reaches the user as one line unless --debug
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{parser.prog}: error: {message}  (--debug shows the traceback)", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
