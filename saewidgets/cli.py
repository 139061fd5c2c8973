"""The ``saewidgets`` command: ``demo`` (the main job), ``train`` (an SAE from the command line)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

#: Layer names ``--layer`` accepts (`saewidgets.model.NAMED_DEPTHS` resolves them; kept here so parsing the
#: command line does not import torch).
LAYER_NAMES = ("middle", "late")


def layer_arg(value: str) -> int | str:
    """``--layer``: a block index (negative counts from the end) or one of `LAYER_NAMES`."""
    if value in LAYER_NAMES:
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a block index or one of {', '.join(LAYER_NAMES)}") from None


def _add_sae_options(p: argparse.ArgumentParser, defaults) -> None:
    """Options that override fields of the `DemoSettings` the command starts from (unset: keep its value)."""
    p.add_argument("--model", help="HF id or local folder (default: the embedded Gemma 3 270M)")
    p.add_argument("--layer", type=layer_arg, help=f"block index, 'middle' or 'late' (default {defaults.layer})")
    p.add_argument("--n-tokens", type=int, help="tokens of the corpus to harvest (default: all)")
    p.add_argument("--arch", choices=["relu", "topk", "batchtopk", "jumprelu"], help=f"default {defaults.arch}")
    p.add_argument("--n-features", type=int, help=f"dictionary size (default {defaults.n_features})")
    p.add_argument("--k", type=int, help=f"active latents per token, topk/batchtopk (default {defaults.k})")
    p.add_argument("--n-steps", type=int, help=f"optimizer steps (default {defaults.n_steps})")
    p.add_argument("--batch-size", type=int, help=f"tokens per step (default {defaults.batch_size})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {defaults.lr})")
    p.add_argument("--seed", type=int, help=f"default {defaults.seed}")


_SETTING_OPTIONS = ("model", "layer", "n_tokens", "arch", "n_features", "k", "n_steps", "batch_size", "lr", "seed")


def _settings(args: argparse.Namespace, base):
    """``base`` with every option the user gave on the command line."""
    from dataclasses import replace

    given = {name: getattr(args, name) for name in _SETTING_OPTIONS if getattr(args, name) is not None}
    return replace(base, **given)


def cmd_demo(args: argparse.Namespace) -> int:
    """Train (or reuse) the demo SAE, then write a self-contained HTML explorer."""
    from .demo.run import run_demo
    from .demo.settings import FULL, QUICK

    settings = _settings(args, QUICK if args.quick else FULL)
    return run_demo(settings, args.out, refresh=args.refresh, steer=not args.no_steer, n_prompts=args.n_prompts,
                    lab=args.lab)


def cmd_train(args: argparse.Namespace) -> int:
    """Harvest a corpus, train an SAE, save it and print its held-out metrics."""
    if args.distributed:
        return _train_distributed(args)
    from . import harvest, load_model
    from .corpus import demo_corpus, load_corpus
    from .demo.settings import FULL
    from .sae import evaluate_sae, save_sae, train_sae

    s = _settings(args, FULL)
    model = load_model(s.model)
    corpus = demo_corpus() if args.corpus == "demo" else load_corpus(args.corpus)
    acts = harvest(model, corpus, s.layer, n_tokens=s.n_tokens, context_len=s.context_len)
    train, held_out = acts.split(s.held_out_fraction, seed=s.seed)
    options = dict(arch=s.arch, n_features=s.n_features, n_steps=s.n_steps, batch_size=s.batch_size,
                   lr=s.lr, seed=s.seed, checkpoint_dir=args.checkpoint_dir)
    if s.arch in ("topk", "batchtopk"):
        options["k"] = s.k
    if args.l1 is not None:
        options["l1"] = args.l1
    sae = train_sae(train, **options)
    out = save_sae(sae, args.out, format=args.format)
    print(f"saved to {out}")
    print(evaluate_sae(sae, held_out, model=model, texts=corpus.texts[:8] if hasattr(corpus, "texts") else None))
    return 0


def _train_distributed(args: argparse.Namespace) -> int:
    """Data-parallel training: hand the same options to ``torchrun ... -m saewidgets.train`` on this machine."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.distributed}",
               "-m", "saewidgets.train", "--corpus", args.corpus, "--out", args.out,
               "--store", args.store or str(Path(args.out) / "store")]
    for name in _SETTING_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    if args.l1 is not None:
        command += ["--l1", str(args.l1)]
    print("running:", " ".join(command), flush=True)
    return subprocess.call(command)


def build_parser() -> argparse.ArgumentParser:
    from .demo.settings import FULL, QUICK

    parser = argparse.ArgumentParser(prog="saewidgets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train (or reuse) an SAE on the embedded model and write an HTML explorer")
    _add_sae_options(demo, FULL)
    demo.add_argument("--quick", action="store_true", help=f"smaller, faster run ({QUICK.n_features} features)")
    demo.add_argument("--out", default="saewidgets-demo", help="folder for explorer.html (default: ./saewidgets-demo)")
    demo.add_argument("--refresh", action="store_true", help="ignore the cache and recompute everything")
    demo.add_argument("--no-steer", action="store_true", help="skip the steering examples")
    demo.add_argument("--n-prompts", type=int, default=2, help="steering prompts to run (default 2)")
    demo.add_argument("--lab", action="store_true", help="then open JupyterLab on the quickstart tutorial")
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="train an SAE on a corpus and print its metrics")
    _add_sae_options(train, FULL)
    train.add_argument("--corpus", default="demo", help="'demo', a .txt/.jsonl file, a folder, or an HF dataset")
    train.add_argument("--l1", type=float, default=None, help="sparsity coefficient (relu, jumprelu)")
    train.add_argument("--checkpoint-dir", default=None, help="write checkpoints here (resumes if present)")
    train.add_argument("--format", choices=["native", "saelens"], default="native")
    train.add_argument("--out", required=True, help="folder to save the SAE in")
    train.add_argument("--distributed", type=int, metavar="N", help="data-parallel over N processes (torchrun)")
    train.add_argument("--store", help="with --distributed: the disk-backed activation store folder")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: cached steps are kept; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
