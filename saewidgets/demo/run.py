"""``saewidgets demo`` from start to finish: compute (or load) the pipeline, print what it found, write the page,
and optionally open JupyterLab on the quickstart with the same SAE."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..analysis.results import describe_features
from ..models._memory import release_freed_memory, return_large_blocks
from .examples import STEERING_PROMPTS, highlight_features, missing_highlights, steering_examples
from .lab import jupyterlab_missing, open_lab
from .page import page_examples, write_explorer
from .pipeline import demo_artifacts, demo_sae
from .settings import DemoSettings


def run_demo(
    settings: DemoSettings,
    out_dir: str | Path,
    *,
    refresh: bool = False,
    steer: bool = True,
    n_prompts: int = 2,
    lab: bool = False,
    quick: bool = False,
) -> int:
    """Train (or reuse) the demo SAE, print its metrics, named features and steering, and write the Explorer page
    to ``out_dir/explorer.html``; with ``lab``, then open JupyterLab on the quickstart (see `lab.open_lab`;
    ``quick`` says the settings are the quick run's, the one run where memory is scarce). Returns the exit status of
    the command."""
    if lab and jupyterlab_missing():  # say so now, not after minutes of training
        print(jupyterlab_missing(), file=sys.stderr)
        return 2
    start = time.time()
    first = demo_sae(settings, refresh=refresh)
    if quick:
        # The quick demo is what Binder runs, with ~2 GB. Its vocabulary stages from here allocate logit blocks of
        # many sizes, which would grow a fragmented heap: these go back to the system when freed (the pipeline trims
        # the heap before its next stage). Not before: harvest and training free blocks of the same few sizes each
        # batch, which glibc's own threshold reuses from the heap. The full demo keeps glibc's threshold throughout:
        # its 3 GB goal does not need the fixed one, which cost its stages after training ~26 s in the kernel on a
        # cached SAE and ~2 s in a first run (benchmarks/README.md, "The mmap threshold in the full demo").
        return_large_blocks()
    art = demo_artifacts(settings, refresh=refresh, sae_stages=first)
    del first  # art holds the same; the model must be freed with art's before the feature map (see below)
    print(
        f"\nSAE: {art.sae.cfg.n_features:,} {art.sae.cfg.architecture} features on {art.sae.cfg.model_name} "
        f"{art.activations.site} ({len(art.activations):,} tokens)  [cache: {art.folder}]"
    )
    print("held-out metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in art.metrics.items() if isinstance(v, float)))

    highlights = highlight_features(art)
    print("bookmarked concept features (top contexts peak on the concept's words, logits promote them):")
    for name, feature in highlights.items():
        print(f"  feature {feature:>5}  {name}")
    for name in missing_highlights(highlights):
        print(f"  no bookmark  {name}: no feature whose top contexts contain it passed both checks")
    release_freed_memory()  # what the pipeline's last stage freed, before steering's generations
    examples = steering_examples(art, STEERING_PROMPTS[:n_prompts], progress=True) if steer else []
    if steer and not examples:
        print(
            "\nsteering: no feature of this SAE steered its trial prompts to the Golden Gate Bridge (see the warning "
            "above); a DiffMean steering vector (steering_vector) is the baseline to try instead."
        )
    for ex in examples:
        print(
            f"\nsteering {describe_features(ex.features)} ({ex.name}) at {ex.multiple:g}x max: measured hit rate "
            f"{ex.hit_rate or 0:.0%} on {ex.n_evaluation_prompts} held-out prompts ({ex.steer_rate or 0:.0%} on "
            f"the trial prompts it was chosen on; a hit mentions the concept in fluent text where the default "
            f"did not; output score {ex.output_score or 0:.2f} nats). On the demo's prompts:"
        )
        for prompt, default, steered in zip(ex.prompts, ex.default, ex.steered):
            print(f"  {prompt!r}\n    default: {default!r}\n    steered: {steered!r}")
    release_freed_memory()  # what steering's generations freed, before the page's traces
    page = page_examples(art)
    # The model's work is done: free it (~600 MB for Gemma) before the feature map imports UMAP (~275 MB) and the
    # page is built, so that the two never sit in memory together (Binder has ~2 GB).
    art.release_model()
    release_freed_memory()
    geometry = art.geometry
    print(f"\nfeature map: {geometry.n_features:,} decoder directions in {int(geometry.clusters.max()) + 1} clusters")
    out = write_explorer(art, Path(out_dir), highlights=highlights, steering=examples, examples=page)
    print(f"\nExplorer written to {out.resolve()}  (open it in any browser; it works offline)")
    print(f"done in {time.time() - start:.0f} s")
    if not lab:
        return 0
    del art  # the kernel loads its own copy from the cache
    return open_lab(settings, out_dir, quick=quick)
