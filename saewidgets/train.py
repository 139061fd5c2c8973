"""``python -m saewidgets.train`` / ``torchrun --nproc-per-node N -m saewidgets.train``: harvest into a disk store
and train an SAE data-parallel across the ranks.

    torchrun --nproc-per-node 2 -m saewidgets.train --model tiny-gpt2 --corpus demo --store acts/ --out my_sae/

Each rank harvests its share of the store's shards (skipping shards an earlier, interrupted run committed), then
all ranks train on the whole store with gradients all-reduced (`saewidgets.sae.distributed`), or with the latents
split across the ranks (``--shard-latents``, `saewidgets.sae.sharded`); rank 0 writes
checkpoints to ``OUT/checkpoints`` and the finished SAE to ``OUT/sae`` (`load_sae` reads it). Run the same
command again after a crash or a killed rank: the harvest and the training both resume where they stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .cli import layer_arg


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m saewidgets.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="HF id, local folder, 'tiny-gpt2'/'tiny-gemma' (default: the embedded Gemma 3 270M)")
    p.add_argument("--corpus", default="demo", help="'demo', a .txt/.jsonl file, a folder, or an HF dataset")
    p.add_argument("--layer", default="middle", type=layer_arg,
                   help="block index, 'middle' or 'late'")
    p.add_argument("--n-tokens", type=int, default=None, help="tokens of the corpus to harvest (default: all)")
    p.add_argument("--context-len", type=int, default=128, help="tokens per model input, BOS included")
    p.add_argument("--store", required=True, help="activation store folder (shared by all ranks; resumed if present)")
    p.add_argument("--shard-tokens", type=int, default=2**18, help="rows per store shard")
    p.add_argument("--out", required=True, help="run folder: the SAE goes to OUT/sae, checkpoints to OUT/checkpoints")
    p.add_argument("--arch", choices=["relu", "topk", "batchtopk", "jumprelu"], default="topk")
    p.add_argument("--n-features", type=int, default=4096)
    p.add_argument("--k", type=int, default=32, help="active latents per token (topk, batchtopk)")
    p.add_argument("--l1", type=float, default=None, help="L1 coefficient (relu)")
    p.add_argument("--n-steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=4096, help="global tokens per step (divisible by the ranks)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--shard-latents", action="store_true",
                   help="split the latents across the ranks (TopK SAEs too wide for one device) instead of the batch")
    p.add_argument("--restart", action="store_true", help="ignore an existing store and checkpoint and start over")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch.distributed as dist

    from .corpus import demo_corpus, load_corpus
    from .models import load_model
    from .sae import save_sae
    from .sae.distributed import init_process_group, train_sae_distributed
    from .sae.sharded import train_sae_latent_sharded
    from .store import harvest_to_store

    rank, world, device = init_process_group()
    try:
        model = load_model(args.model, device=device)
        corpus = demo_corpus() if args.corpus == "demo" else load_corpus(args.corpus)
        store = harvest_to_store(model, corpus, args.store, args.layer, n_tokens=args.n_tokens,
                                 context_len=args.context_len, shard_tokens=args.shard_tokens,
                                 resume=not args.restart, progress=rank == 0)
        common = dict(lr=args.lr, batch_size=args.batch_size, n_steps=args.n_steps, seed=args.seed,
                      checkpoint_dir=Path(args.out) / "checkpoints", checkpoint_every=args.checkpoint_every,
                      resume=not args.restart, device=device, **({"l1": args.l1} if args.l1 is not None else {}))
        if args.shard_latents:
            if args.arch != "topk":
                raise SystemExit("--shard-latents trains TopK SAEs only: pass --arch topk.")
            sae = train_sae_latent_sharded(store, args.n_features, args.k, **common)
        else:
            k = args.k if args.arch in ("topk", "batchtopk") else None
            sae = train_sae_distributed(store, args.arch, args.n_features, k, progress=rank == 0, **common)
        if rank == 0:
            print(f"saved to {save_sae(sae, Path(args.out) / 'sae')}  ({world} rank{'s' if world > 1 else ''})")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
