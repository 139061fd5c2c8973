"""Small synthetic analysis results with the shapes of ``saewidgets.analysis``' outputs.

For tests and browser checks (a test fixture: it lives with the tests, not in the package): they let every view
(and the Explorer) run without a model. ``hostile=True`` mixes in token strings that would inject markup or script
if any view failed to escape them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

HOSTILE_TOKENS = [
    '<img src=x onerror="window.__pwned=1">',
    "</script><script>window.__pwned=1</script>",
    "<script>window.__pwned=1</script>",
    "&lt;b&gt;",
    "\u2028",
    "\"'`",
    "<!--",
]
WORDS = [
    "the",
    " bridge",
    " golden",
    " gate",
    " fog",
    " San",
    " Francisco",
    " water",
    ",",
    ".",
    "\n",
    " a",
    " red",
    " cable",
    " tower",
    " sea",
    " of",
    " in",
    " and",
    " city",
]


@dataclass
class FakeGeometry:
    """Like ``FeatureGeometry``: ``coords`` [F, 2], ``clusters`` [F], ``neighbours(i, n)`` by decoder cosine."""

    coords: np.ndarray
    clusters: np.ndarray
    directions: np.ndarray

    def neighbours(self, i: int, n: int = 10) -> list[tuple[int, float]]:
        cos = self.directions @ self.directions[i]
        cos[i] = -np.inf
        top = np.argsort(-cos)[:n]
        return [(int(j), float(cos[j])) for j in top]


@dataclass
class FakeStats:
    """Like ``FeatureStats``: ``density`` and ``max_act`` per feature."""

    density: np.ndarray
    max_act: np.ndarray


@dataclass
class FakeTokenActivations:
    """Like ``TokenActivations``."""

    tokens: list[str]
    acts: np.ndarray
    features: list[int]


@dataclass
class FakeAttribution:
    """Like ``Attribution``: ``tokens``, ``target``, ``top(n)``."""

    tokens: list[str]
    target: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def top(self, n: int = 10) -> list[dict[str, Any]]:
        return self.rows[:n]


@dataclass
class FakeSteeringResult:
    """Like ``SteeringResult``."""

    prompts: list[str]
    default: list[str]
    steered: list[str]
    clamps: dict[int, float]


def tokens(n: int, seed: int = 0, hostile: bool = False) -> list[str]:
    """``n`` token strings (some hostile if asked)."""
    rng = np.random.default_rng(seed)
    vocab = WORDS + (HOSTILE_TOKENS if hostile else [])
    out = [vocab[k] for k in rng.integers(0, len(vocab), size=n)]
    if hostile:
        out[: len(HOSTILE_TOKENS)] = HOSTILE_TOKENS[: min(n, len(HOSTILE_TOKENS))]
    return out


def geometry(n_features: int = 300, d: int = 16, n_clusters: int = 8, seed: int = 0) -> FakeGeometry:
    """Clustered 2-D coordinates with matching unit "decoder directions"."""
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, n_clusters, size=n_features).astype(np.int32)
    centres = rng.normal(size=(n_clusters, d))
    dirs = centres[clusters] + 0.6 * rng.normal(size=(n_features, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    centres2 = rng.uniform(-10, 10, size=(n_clusters, 2))
    coords = (centres2[clusters] + rng.normal(size=(n_features, 2))).astype(np.float32)
    return FakeGeometry(coords=coords, clusters=clusters, directions=dirs.astype(np.float32))


def stats(n_features: int = 300, seed: int = 0) -> FakeStats:
    rng = np.random.default_rng(seed)
    density = (10 ** rng.uniform(-5, -1, size=n_features)).astype(np.float32)
    density[::37] = 0.0  # some dead features
    return FakeStats(density=density, max_act=rng.uniform(1, 20, size=n_features).astype(np.float32))


def card(
    i: int, geo: FakeGeometry | None = None, st: FakeStats | None = None, hostile: bool = False, n_top: int = 6
) -> dict[str, Any]:
    """A feature card shaped like ``saewidgets.analysis.feature_card``'s."""
    rng = np.random.default_rng(1000 + i)
    max_act = float(st.max_act[i]) if st is not None else float(rng.uniform(1, 20))

    def example(scale: float) -> dict[str, Any]:
        toks = tokens(16, seed=int(rng.integers(1 << 30)), hostile=hostile)
        acts = np.maximum(0, rng.normal(0, 0.2, size=16)) * max_act * scale
        acts[8] = max_act * scale
        return {"tokens": toks, "acts": acts.round(3).tolist(), "center": 8, "value": float(acts[8])}

    top = [example(1.0 - 0.05 * k) for k in range(n_top)]
    bands = [
        {"label": f"{lo:.2f}-{lo + 0.2:.2f} of max", "examples": [example(lo + 0.1) for _ in range(2)]}
        for lo in (0.8, 0.6, 0.4, 0.2, 0.0)
    ]
    edges = np.linspace(0, max_act, 21)
    counts = (1000 * np.exp(-np.linspace(0, 6, 20))).astype(int)
    logit_tokens = tokens(10, seed=i, hostile=hostile)
    neighbours = geo.neighbours(i, 10) if geo is not None else []
    return {
        "feature": int(i),
        "density": float(st.density[i]) if st is not None else 0.01,
        "max_act": max_act,
        "mean_act": max_act / 3,
        "top": top,
        "quantiles": bands,
        "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
        "promoted": [{"token": t, "value": float(2 - 0.1 * k)} for k, t in enumerate(logit_tokens[:5])],
        "suppressed": [{"token": t, "value": float(-2 + 0.1 * k)} for k, t in enumerate(logit_tokens[5:])],
        "neighbours": [{"feature": j, "cosine": c} for j, c in neighbours],
    }


def token_activations(text_tokens: list[str], features: list[int]) -> FakeTokenActivations:
    """Deterministic per-feature activations over ``text_tokens``."""
    T = len(text_tokens)
    acts = np.zeros((T, len(features)), dtype=np.float32)
    for k, f in enumerate(features):
        rng = np.random.default_rng(f)
        acts[:, k] = np.maximum(0, rng.normal(0, 1, size=T)) * (1 + f % 5)
    return FakeTokenActivations(tokens=list(text_tokens), acts=acts, features=list(features))


def attribution(prompt_tokens: list[str], target: str, n_features: int = 300) -> FakeAttribution:
    """Attribution rows for ``target`` (deterministic in the target string; None: a default target)."""
    target = " the" if target is None else target
    rng = np.random.default_rng(sum(map(ord, target)))
    feats = rng.choice(n_features, size=12, replace=False)
    vals = np.sort(rng.normal(0, 1, size=12))[::-1]
    rows = [
        {
            "feature": int(f),
            "attribution": float(v),
            "ablation": float(v * 0.8),
            "positions": [
                {"position": int(p), "token": prompt_tokens[p], "attribution": float(v) / 2}
                for p in rng.choice(len(prompt_tokens), size=2, replace=False)
            ],
        }
        for f, v in zip(feats, vals)
    ]
    rows.sort(key=lambda r: -abs(r["attribution"]))
    return FakeAttribution(tokens=list(prompt_tokens), target=target, rows=rows)


def steer(prompt: str, feature: int, multiple: float) -> FakeSteeringResult:
    """A fake generation: the steered text names the feature and multiple, so a test can see it change."""
    return FakeSteeringResult(
        prompts=[prompt],
        default=[f"{prompt} a suspension bridge in San Francisco."],
        steered=[f"{prompt} [feature {feature} at {multiple:g}x] fog fog fog."],
        clamps={feature: multiple},
    )


def explorer(n_features: int = 300, hostile: bool = False, background: bool = True, **kwargs: Any) -> Any:
    """An Explorer over synthetic data (no model): cards, steering, attribution and heatmap all fake.
    ``kwargs`` override any Explorer keyword (e.g. ``steer_fn=`` a callback of your own)."""
    from saewidgets.widgets.explorer import Explorer

    geo, st = geometry(n_features), stats(n_features)
    prompt_toks = tokens(12, seed=5, hostile=hostile)
    text_toks = tokens(200, seed=6, hostile=hostile)
    options: dict[str, Any] = {
        "card_fn": lambda i: card(i, geo, st, hostile=hostile),
        "steer_fn": steer,
        "attribute_fn": lambda prompt, target: attribution(prompt_toks, target, n_features),
        "activations_fn": lambda text, feats: token_activations(text_toks, feats),
        "search_fn": lambda q: [i for i in range(n_features) if str(i).startswith(q[:1])][:5] if q else [],
        "background": background,
        "text": "synthetic text",
    }
    options.update(kwargs)
    ex = Explorer(None, None, st, geo, **options)
    ex.attribution.set_attribution(attribution(prompt_toks, prompt_toks[-1], n_features))
    return ex


def family_map(hostile: bool = False, selected: Any = None, embed: Any = None) -> Any:
    """A FamilyMap over a planted family (no training, no UMAP): 8 parent directions, each split into 4 children
    (the 32-feature SAE), each child into 2 (64 features); coordinates place children around their parent.
    Cards are synthetic; ``embed=(size, feature)`` embeds that subtree's cards for a static page."""
    import torch

    from saewidgets.analysis.splitting import JointGeometry, match_features
    from saewidgets.sae import SAE, SAEConfig
    from saewidgets.sae.family import SAEFamily
    from saewidgets.widgets import FamilyMap

    g = torch.Generator().manual_seed(0)
    unit = torch.nn.functional.normalize
    parents = unit(torch.randn(8, 64, generator=g), dim=1)
    children = unit(parents.repeat_interleave(4, 0) + 0.6 * unit(torch.randn(32, 64, generator=g), dim=1), dim=1)
    grand = unit(children.repeat_interleave(2, 0) + 0.4 * unit(torch.randn(64, 64, generator=g), dim=1), dim=1)
    saes = []
    for W in (parents, children, grand):
        sae = SAE(SAEConfig(d_in=64, n_features=len(W), architecture="topk", k=2, layer=3))
        with torch.no_grad():
            sae.W_dec.copy_(W)
        saes.append(sae)
    family = SAEFamily(saes)
    rng = np.random.default_rng(0)
    centre = rng.normal(0, 10, size=(8, 2))
    coords = np.concatenate(
        [centre, centre.repeat(4, 0) + rng.normal(0, 1, (32, 2)), centre.repeat(8, 0) + rng.normal(0, 1.5, (64, 2))]
    ).astype(np.float32)
    geometry = JointGeometry(
        coords, np.repeat([8, 32, 64], [8, 32, 64]), np.concatenate([np.arange(n) for n in (8, 32, 64)])
    )
    card_fns = {
        n: (lambda i, n=n: {**card(i, hostile=hostile), "feature": i, "mean_act": float(n)}) for n in (8, 32, 64)
    }
    view = FamilyMap(geometry, match_features(family), card_fns=card_fns, selected=selected)
    if embed is not None:
        view.embed_subtree(*embed)
    return view
