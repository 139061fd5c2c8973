"""The demo's self-contained Explorer page: the SAE's views plus one example of each computation the page cannot run."""

from __future__ import annotations

from pathlib import Path

from ..analysis.results import SteeringExample
from .pipeline import DemoArtifacts

#: The page's attribution example (what the prompt's next token owes to each feature) and its heatmap text.
ATTRIBUTION_PROMPT, ATTRIBUTION_TARGET = "The Eiffel Tower is in the city of", " Paris"
HEATMAP_TEXT = (
    "On a foggy morning we walked across the Golden Gate Bridge from San Francisco to Sausalito, "
    "then took the ferry back past Alcatraz. Later that week we flew to Paris and climbed the Eiffel Tower."
)


def write_explorer(
    art: DemoArtifacts, out_dir: Path, *, highlights: dict[str, int], steering: list[SteeringExample]
) -> Path:
    """Write the self-contained Explorer page for the demo's SAE to ``out_dir/explorer.html``.

    The page cannot run the model, so it carries one example of each live computation: the steering examples,
    an attribution of " Paris" after "The Eiffel Tower is in the city of", and a heatmap of a short travel text.
    """
    from ..analysis import attribute
    from ..widgets import Explorer

    fallback = highlights.get("Golden Gate Bridge", next(iter(highlights.values()), 0))
    selected = steering[0].feature if steering else fallback
    explorer = Explorer(
        art.model,
        art.sae,
        art.stats,
        geometry=art.geometry,
        logit_effects=art.logit_effects,
        labels=art.labels,
        selected=selected,
        prompt=ATTRIBUTION_PROMPT,
        text=HEATMAP_TEXT,
        background=False,
    )
    if steering:
        explorer.show_steering(steering[0])
    explorer.attribution.set_attribution(attribute(art.model, art.sae, ATTRIBUTION_PROMPT, target=ATTRIBUTION_TARGET))
    explorer.refresh_heatmap()
    return explorer.save_html(Path(out_dir) / "explorer.html", highlights=highlights)
