"""Neuronpedia files: export dashboards and labels in the format Neuronpedia imports, import its explanations.

Export (`export_neuronpedia`) writes a folder, atomically::

    batch-0.json, batch-1.json, ...   dashboards, ``features_per_batch`` features each (SAEDashboard's format)
    explanations.json                 labels, as Neuronpedia's explanation export (only with ``labels``)
    saewidgets.json                   {"format": "saewidgets-neuronpedia", "version": 1, "fingerprint", "model_id",
                                       "source", "n_features", "n_batches", "features_per_batch"}

A ``batch-N.json`` is SAEDashboard's ``NeuronpediaDashboardBatch``::

    {"model_id": str, "layer": int, "sae_set": str, "sae_id_suffix": null,
     "features": [{
        "feature_index": int,
        "frac_nonzero": float,                              # firing density
        "pos_str": [str], "pos_values": [float],            # most promoted tokens, logits per unit activation
        "neg_str": [str], "neg_values": [float],            # most suppressed
        "freq_hist_data_bar_values": [float],               # activation histogram: bin centres
        "freq_hist_data_bar_heights": [float],              #   and counts (non-zero activations)
        "logits_hist_data_bar_values": [], "logits_hist_data_bar_heights": [],   # not computed by saewidgets
        "activations": [{                                   # top contexts, then band samples, highest first
            "bin_min": float, "bin_max": float,             # top contexts: -1 and the max; bands: their bounds
            "bin_contains": float,                          # share of firing tokens in the band (-1 for top)
            "tokens": [str], "values": [float],             # the context and the activation on each token
            "qualifying_token_index": int}],                # index of the activating token
        "n_prompts_total": int, "n_tokens_in_prompt": int, "dataset": str,
        "vector": [float],                                  # decoder direction (only when an SAE is given)
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
        "correlated_neurons_indices": [], "correlated_neurons_l1": [], "correlated_neurons_pearson": [],
        "correlated_features_indices": [], "correlated_features_l1": [], "correlated_features_pearson": [],
        "decoder_weights_dist": []}]}                       # (these tables are not computed: left empty)

``explanations.json`` is a list of Neuronpedia explanation records::

    [{"modelId": str, "layer": str (the source, e.g. "12-res-saewidgets"), "index": str, "description": str,
      "explanationModelName": str, "typeName": str ("saewidgets-pattern" / "saewidgets-llm"),
      "createdAt": ISO-8601 str}]

Import (`import_neuronpedia_explanations`) reads those records from that file, from Neuronpedia's
``/api/explanation/export`` reply (the same list), from its bulk exports (``.jsonl`` / ``.jsonl.gz``, one record a
line) or from a ``/api/feature`` reply (a feature with an ``explanations`` list).
"""

from __future__ import annotations

import gzip
import json
import math
import os
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._atomic_write import atomic_dir
from ..logits import LogitEffects
from ..results import ContextExample
from ..stats import FeatureStats
from .labels import Explanation, Labels

if TYPE_CHECKING:
    from ...sae import SAE

_FORMAT = "saewidgets-neuronpedia"
_VERSION = 1


def _source_names(sae: SAE | None, stats: FeatureStats, model_id: str | None, source: str | None) -> tuple[str, str]:
    """Neuronpedia's model id and source (its "layer" id): given, else from the SAE's ``neuronpedia_id``
    ("model/source"), else from the statistics."""
    np_id = getattr(getattr(sae, "cfg", None), "neuronpedia_id", None) if sae is not None else None
    if np_id and "/" in np_id:
        theirs_model, theirs_source = np_id.split("/", 1)
        model_id, source = model_id or theirs_model, source or theirs_source
    return model_id or stats.model_name, source or f"{stats.layer}-res-saewidgets"


def export_neuronpedia(
    stats: FeatureStats,
    path: str | os.PathLike,
    *,
    labels: Labels | None = None,
    logit_effects: LogitEffects | None = None,
    sae: SAE | None = None,
    model_id: str | None = None,
    source: str | None = None,
    dataset: str = "",
    n_prompts_total: int = 0,
    features: list[int] | None = None,
    features_per_batch: int = 128,
) -> Path:
    """Write dashboards (and ``labels``) of ``features`` (default: all) to folder ``path`` (schema above).

    ``model_id`` and ``source`` name the SAE on Neuronpedia (default: from ``sae.cfg.neuronpedia_id`` when set,
    else the statistics' model name and ``"<layer>-res-saewidgets"``). With ``sae`` each feature also carries its
    decoder direction (``vector``).
    """
    for other, what in ((labels, "labels"), (logit_effects, "logit effects")):
        if other is not None and other.fingerprint != stats.fingerprint:
            raise ValueError(f"The {what} describe SAE {other.fingerprint} but the statistics {stats.fingerprint}.")
    if sae is not None:
        stats.check_matches(sae)
    if features_per_batch < 1:
        raise ValueError(f"features_per_batch must be at least 1, got {features_per_batch}.")
    chosen = list(range(stats.n_features)) if features is None else [stats.check_feature(f) for f in features]
    if not chosen:
        raise ValueError("export_neuronpedia() got an empty feature list.")
    model_id, source = _source_names(sae, stats, model_id, source)
    layer = int(source.split("-")[0]) if source.split("-")[0].isdigit() else stats.layer
    window = stats.context[0] + 1 + stats.context[1]
    path = Path(path)
    batches = [chosen[s : s + features_per_batch] for s in range(0, len(chosen), features_per_batch)]
    with atomic_dir(path) as tmp:
        for n, batch in enumerate(batches):
            rows = [_feature(stats, i, logit_effects, sae, dataset, n_prompts_total, window) for i in batch]
            blob = {
                "model_id": model_id,
                "layer": layer,
                "sae_set": source.split("-", 1)[-1],
                "sae_id_suffix": None,
                "features": rows,
            }
            (tmp / f"batch-{n}.json").write_text(json.dumps(blob))
        if labels is not None:
            records = [
                {
                    "modelId": model_id,
                    "layer": source,
                    "index": str(e.feature),
                    "description": e.text,
                    "explanationModelName": e.model,
                    "typeName": f"saewidgets-{e.kind}",
                    "createdAt": e.created,
                }
                for e in labels
                if e.feature in set(chosen)
            ]
            (tmp / "explanations.json").write_text(json.dumps(records, indent=1))
        manifest = {
            "format": _FORMAT,
            "version": _VERSION,
            "fingerprint": stats.fingerprint,
            "model_id": model_id,
            "source": source,
            "n_features": stats.n_features,
            "n_batches": len(batches),
            "features_per_batch": features_per_batch,
        }
        (tmp / "saewidgets.json").write_text(json.dumps(manifest, indent=1))
    return path


def _feature(
    stats: FeatureStats,
    i: int,
    effects: LogitEffects | None,
    sae: SAE | None,
    dataset: str,
    n_prompts_total: int,
    window: int,
) -> dict[str, Any]:
    hist = stats.histogram(i)
    counts, edges = hist.counts, hist.edges
    total = sum(counts) or 1
    max_act = float(stats.max_act[i])

    def share(lo: float, hi: float) -> float:
        return sum(c for c, (a, b) in zip(counts, pairwise(edges)) if lo <= (a + b) / 2 < hi) / total

    activations = [_activation(e, -1.0, max_act, -1.0) for e in stats.top_examples(i)]
    for b, band in zip(reversed(range(stats.n_bands)), stats.quantile_examples(i)):
        lo, hi = b / stats.n_bands * max_act, (b + 1) / stats.n_bands * max_act
        contains = share(lo, hi if b < stats.n_bands - 1 else math.inf)
        activations += [_activation(e, lo, hi, contains) for e in band.examples]
    promoted = effects.promoted(i) if effects is not None else []
    suppressed = effects.suppressed(i) if effects is not None else []
    out = {
        "feature_index": i,
        "frac_nonzero": float(stats.density[i]),
        "pos_str": [r.token for r in promoted],
        "pos_values": [r.value for r in promoted],
        "neg_str": [r.token for r in suppressed],
        "neg_values": [r.value for r in suppressed],
        "freq_hist_data_bar_values": [(a + b) / 2 for a, b in pairwise(edges)],
        "freq_hist_data_bar_heights": [float(c) for c in counts],
        "logits_hist_data_bar_values": [],
        "logits_hist_data_bar_heights": [],
        "activations": activations,
        "n_prompts_total": n_prompts_total,
        "n_tokens_in_prompt": window,
        "dataset": dataset,
        "vector": [],
        "neuron_alignment_indices": [],
        "neuron_alignment_values": [],
        "neuron_alignment_l1": [],
        "correlated_neurons_indices": [],
        "correlated_neurons_l1": [],
        "correlated_neurons_pearson": [],
        "correlated_features_indices": [],
        "correlated_features_l1": [],
        "correlated_features_pearson": [],
        "decoder_weights_dist": [],
    }
    if sae is not None:
        out["vector"] = [float(v) for v in sae.W_dec[i].detach().float().cpu()]
    return out


def _activation(e: ContextExample, lo: float, hi: float, contains: float) -> dict[str, Any]:
    return {
        "bin_min": lo,
        "bin_max": hi,
        "bin_contains": contains,
        "tokens": e.tokens,
        "values": e.acts,
        "qualifying_token_index": e.center,
    }


def read_neuronpedia_dashboards(path: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """The dashboards in an export folder (or one ``batch-N.json``) as feature cards (`feature_card`'s schema,
    less ``mean_act`` and ``neighbours``, which Neuronpedia's format does not carry)."""
    path = Path(path)
    files = sorted(path.glob("batch-*.json"), key=lambda p: int(p.stem.split("-")[1])) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path} holds no Neuronpedia dashboards (batch-N.json files).")
    cards = {}
    for file in files:
        try:
            batch = json.loads(file.read_text())
            for feature in batch["features"]:
                cards[int(feature["feature_index"])] = _card(feature)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{file} is not a Neuronpedia dashboard batch ({err!r}).") from err
    return cards


def _card(f: dict[str, Any]) -> dict[str, Any]:
    def example(a: dict[str, Any]) -> dict[str, Any]:
        return {
            "tokens": a["tokens"],
            "acts": a["values"],
            "center": a["qualifying_token_index"],
            "value": a["values"][a["qualifying_token_index"]],
        }

    top = [example(a) for a in f["activations"] if a["bin_min"] == -1]
    bands: dict[tuple[float, float], list] = {}
    for a in f["activations"]:
        if a["bin_min"] != -1:
            bands.setdefault((a["bin_min"], a["bin_max"]), []).append(example(a))
    centres, heights = f["freq_hist_data_bar_values"], f["freq_hist_data_bar_heights"]
    width = centres[1] - centres[0] if len(centres) > 1 else 2 * centres[0] if centres else 0.0
    edges = [c - width / 2 for c in centres] + ([centres[-1] + width / 2] if centres else [])
    return {
        "feature": int(f["feature_index"]),
        "density": f["frac_nonzero"],
        "max_act": max([e["value"] for e in top], default=0.0),
        "top": top,
        "quantiles": [{"bin": list(k), "examples": v} for k, v in bands.items()],
        "histogram": {"counts": [int(h) for h in heights], "edges": edges},
        "promoted": [{"token": t, "value": v} for t, v in zip(f["pos_str"], f["pos_values"])],
        "suppressed": [{"token": t, "value": v} for t, v in zip(f["neg_str"], f["neg_values"])],
    }


def _explanation_records(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8")
    try:
        blob = json.loads(text)
    except ValueError:
        blob = [json.loads(line) for line in text.splitlines() if line.strip()]  # JSON lines
    if isinstance(blob, dict) and "explanations" in blob:  # one feature from /api/feature
        return [
            {"index": blob.get("index"), "modelId": blob.get("modelId"), "layer": blob.get("layer"), **e}
            for e in blob["explanations"]
        ]
    if isinstance(blob, dict):
        blob = [blob]
    if not isinstance(blob, list):
        raise TypeError("expected a list of explanation records")
    return blob


def import_neuronpedia_explanations(
    path: str | os.PathLike, stats: FeatureStats, *, model_id: str | None = None, source: str | None = None
) -> Labels:
    """Explanations from a Neuronpedia export file (formats in the module docstring), as `Labels` of the SAE that
    ``stats`` describe: kind "llm" (Neuronpedia's are written by language models; a re-imported saewidgets pattern
    label stays "pattern"), ``explainer`` "neuronpedia:<typeName>", ``model`` its explanation model.

    ``model_id`` / ``source`` keep only records of that Neuronpedia model and source (a bulk export may hold
    several). When a feature has several explanations, the first in the file is kept.
    """
    path = Path(path)
    try:
        records = _explanation_records(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"There is no Neuronpedia export at {path}.") from None
    except (OSError, ValueError, TypeError, UnicodeDecodeError, EOFError) as err:
        raise ValueError(
            f"{path} is not a Neuronpedia explanations export (JSON list, JSON lines, optionally "
            f"gzipped, or a feature with 'explanations'): {err}"
        ) from err
    explanations: dict[int, Explanation] = {}
    for n, r in enumerate(records):
        if not isinstance(r, dict) or r.get("index") is None or not isinstance(r.get("description"), str):
            raise ValueError(f"Record {n} of {path} has no feature 'index' or no 'description': {str(r)[:200]}")
        if (model_id and r.get("modelId") != model_id) or (source and r.get("layer") != source):
            continue
        feature = stats.check_feature(int(r["index"]))
        type_name = str(r.get("typeName") or "")
        kind = "pattern" if type_name == "saewidgets-pattern" else "llm"
        explanations.setdefault(
            feature,
            Explanation(
                feature=feature,
                text=r["description"].strip(),
                kind=kind,
                explainer=f"neuronpedia:{type_name}" if type_name else "neuronpedia",
                model=str(r.get("explanationModelName") or ""),
                prompt_hash="",
                created=str(r.get("createdAt") or ""),
            ),
        )
    if records and not explanations:
        raise ValueError(
            f"None of the {len(records)} records in {path} is for model_id={model_id!r}, "
            f"source={source!r}: check those names."
        )
    return Labels(stats.fingerprint, explanations.values())
