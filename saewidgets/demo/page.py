"""The demo's self-contained Explorer page: the SAE's views plus one example of each computation the page cannot run."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._atomic_write import atomic_write_bytes
from ..analysis.results import SteeringExample
from .pipeline import DemoArtifacts

if TYPE_CHECKING:
    from ..analysis import Attribution, TokenActivations

#: The page's attribution example (what the prompt's next token owes to each feature) and its heatmap text.
ATTRIBUTION_PROMPT, ATTRIBUTION_TARGET = "The Eiffel Tower is in the city of", " Paris"
HEATMAP_TEXT = (
    "On a foggy morning we walked across the Golden Gate Bridge from San Francisco to Sausalito, "
    "then took the ferry back past Alcatraz. Later that week we flew to Paris and climbed the Eiffel Tower."
)


@dataclass
class PageExamples:
    """The page's model work, done before it is built so that the model can be freed first: the attribution of
    `ATTRIBUTION_TARGET` after `ATTRIBUTION_PROMPT`, and every feature's activations on `HEATMAP_TEXT` (the
    heatmap shows the selected feature's neighbours, which the feature map decides later)."""

    attribution: Attribution
    heatmap: TokenActivations

    def activations(self, text: str, features: Sequence[int]) -> TokenActivations:
        """The heatmap's activations of ``features`` on ``text`` (the Explorer's ``activations_fn``), sliced from
        every feature's; only `HEATMAP_TEXT` was run."""
        from ..analysis import TokenActivations

        if text != HEATMAP_TEXT:
            raise ValueError(f"the demo page ran only its own heatmap text {HEATMAP_TEXT!r}, not {text!r}")
        chosen = [int(f) for f in features]
        return TokenActivations(self.heatmap.tokens, self.heatmap.acts[:, chosen], chosen)


def page_examples(art: DemoArtifacts) -> PageExamples:
    """The page's examples: run on ``art.model`` (three traces of the attribution prompt, one of the heatmap text)
    and kept in ``art.folder``, or read from there when this SAE's were kept, so that a cached run loads no model."""
    from ..analysis import attribute, token_activations

    key = {
        "sae": art.sae.fingerprint(),
        "model": art.settings.model,
        "attribution": [ATTRIBUTION_PROMPT, ATTRIBUTION_TARGET],
        "heatmap": HEATMAP_TEXT,
    }
    path = Path(art.folder) / "page_examples.npz"
    examples = _read_examples(path, key)
    if examples is None:
        examples = PageExamples(
            attribute(art.model, art.sae, ATTRIBUTION_PROMPT, target=ATTRIBUTION_TARGET),
            token_activations(art.model, art.sae, HEATMAP_TEXT, range(art.sae.cfg.n_features)),
        )
        _write_examples(path, key, examples)
    return examples


def _write_examples(path: Path, key: dict[str, Any], examples: PageExamples) -> None:
    attribution, heatmap = examples.attribution, examples.heatmap
    meta = {
        "key": key,
        "tokens": attribution.tokens,
        "target": attribution.target,
        "target_ids": list(attribution.target_ids),
        "metric": attribution.metric,
        "ablations": [[feature, value] for feature, value in attribution.ablations.items()],
        "heatmap_tokens": heatmap.tokens,
        "heatmap_features": heatmap.features,
    }
    buffer = io.BytesIO()
    np.savez(
        buffer,
        meta=np.array(json.dumps(meta)),
        scores=attribution.scores.detach().cpu().numpy(),
        error_attribution=attribution.error_attribution.detach().cpu().numpy(),
        heatmap=heatmap.acts,
    )
    atomic_write_bytes(path, buffer.getvalue())


def _read_examples(path: Path, key: dict[str, Any]) -> PageExamples | None:
    """The examples `_write_examples` kept at ``path`` for ``key``; None where there are none, they are another
    SAE's, or the file is unreadable (they are run again and the file replaced)."""
    import torch

    from ..analysis import Attribution, TokenActivations

    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as kept:
            meta = json.loads(str(kept["meta"]))
            if meta["key"] != key:
                return None
            attribution = Attribution(
                tokens=meta["tokens"],
                target=meta["target"],
                target_ids=tuple(meta["target_ids"]),
                metric=meta["metric"],
                scores=torch.from_numpy(kept["scores"]),
                error_attribution=torch.from_numpy(kept["error_attribution"]),
                ablations={int(feature): value for feature, value in meta["ablations"]},
            )
            heatmap = TokenActivations(meta["heatmap_tokens"], kept["heatmap"], meta["heatmap_features"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None
    return PageExamples(attribution, heatmap)


def write_explorer(
    art: DemoArtifacts,
    out_dir: Path,
    *,
    highlights: dict[str, int],
    steering: list[SteeringExample],
    examples: PageExamples | None = None,
) -> Path:
    """Write the self-contained Explorer page for the demo's SAE to ``out_dir/explorer.html``.

    The page cannot run the model, so it carries one example of each live computation: the steering examples,
    an attribution of " Paris" after "The Eiffel Tower is in the city of", and a heatmap of a short travel text
    (``examples``: `page_examples`, run here on ``art.model`` when not given). No model is needed once
    ``examples`` are given, and the feature map (``art.geometry``) is computed here if it was not yet.
    """
    from ..widgets import Explorer

    if examples is None:
        examples = page_examples(art)
    fallback = highlights.get("Golden Gate Bridge", next(iter(highlights.values()), 0))
    selected = steering[0].feature if steering else fallback
    explorer = Explorer(
        None,
        art.sae,
        art.stats,
        geometry=art.geometry,
        logit_effects=art.logit_effects,
        labels=art.labels,
        selected=selected,
        prompt=ATTRIBUTION_PROMPT,
        text=HEATMAP_TEXT,
        activations_fn=examples.activations,
        background=False,
    )
    if steering:
        explorer.show_steering(steering[0])
    explorer.attribution.set_attribution(examples.attribution)
    explorer.refresh_heatmap()
    return explorer.save_html(Path(out_dir) / "explorer.html", highlights=highlights)
