"""``saewidgets demo`` from start to finish: compute (or load) the pipeline, print what it found, write the page,
and optionally open JupyterLab on the quickstart with the same SAE."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .examples import STEERING_PROMPTS, highlight_features, steering_examples
from .page import write_explorer
from .pipeline import DemoArtifacts, demo_artifacts
from .settings import SETTINGS_ENV, DemoSettings


def run_demo(settings: DemoSettings, out_dir: str | Path, *, refresh: bool = False, steer: bool = True,
             n_prompts: int = 2, lab: bool = False) -> int:
    """Train (or reuse) the demo SAE, print its metrics, named features and steering, and write the Explorer page
    to ``out_dir/explorer.html``; the exit status of the command."""
    start = time.time()
    art = demo_artifacts(settings, refresh=refresh)
    print(f"\nSAE: {art.sae.cfg.n_features:,} {art.sae.cfg.architecture} features on {art.model.name} "
          f"{art.activations.site} ({len(art.activations):,} tokens)  [cache: {art.folder}]")
    print("held-out metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in art.metrics.items() if isinstance(v, float)))

    highlights = highlight_features(art)
    for name, feature in highlights.items():
        print(f"  feature {feature:>5}  {name}")
    examples = steering_examples(art, STEERING_PROMPTS[:n_prompts], progress=True) if steer else []
    if steer and not examples:
        print("\nsteering: no feature of this SAE steered its trial prompts to the Golden Gate Bridge (see the warning "
              "above); a DiffMean steering vector (steering_vector) is the baseline to try instead.")
    for ex in examples:
        print(f"\nsteering feature {ex.feature} ({ex.name}) at {ex.multiple:g}x max: measured hit rate "
              f"{ex.hit_rate or 0:.0%} on {ex.n_evaluation_prompts} held-out prompts ({ex.steer_rate or 0:.0%} on "
              f"the trial prompts it was chosen on; a hit mentions the concept in fluent text where the default "
              f"did not; output score {ex.output_score or 0:.2f} nats). On the demo's prompts:")
        for prompt, default, steered in zip(ex.prompts, ex.default, ex.steered):
            print(f"  {prompt!r}\n    default: {default!r}\n    steered: {steered!r}")
    out = write_explorer(art, Path(out_dir), highlights=highlights, steering=examples)
    print(f"\nExplorer written to {out.resolve()}  (open it in any browser; it works offline)")
    print(f"done in {time.time() - start:.0f} s")
    return open_lab(art) if lab else 0


def open_lab(art: DemoArtifacts) -> int:
    """Open JupyterLab on the quickstart tutorial of a source checkout; the notebook reuses ``art``'s SAE."""
    tutorials = Path(__file__).resolve().parents[2] / "tutorials"
    notebook = tutorials / "01_quickstart.ipynb"
    if not notebook.exists():
        print("--lab opens tutorials/01_quickstart.ipynb from a source checkout of saewidgets; "
              "none was found next to this installation. Clone the repository and run it from there.",
              file=sys.stderr)
        return 2
    env = dict(os.environ, **{SETTINGS_ENV: json.dumps(asdict(art.settings))})  # the notebook reuses this SAE
    command = [sys.executable, "-m", "jupyter", "lab", str(notebook)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    print("starting:", " ".join(command))
    return subprocess.call(command, env=env)
