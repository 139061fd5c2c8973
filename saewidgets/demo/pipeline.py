"""The demo pipeline: model -> harvest -> SAE -> statistics (`demo_sae`, the part steering needs) -> metrics ->
logit effects -> pattern labels, each cached; the feature map (`DemoArtifacts.geometry`) on first use. The model
itself is loaded on first use too (`LazyModel`), so a run whose stages are all cached never loads it.

`demo_artifacts` is what ``saewidgets demo``, the tutorials, the Binder start-up and the integration tests share:
the first call does the work (minutes on two CPU cores) and writes every result under the saewidgets cache, keyed
by the settings; later calls with the same settings load them in seconds.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._atomic_write import atomic_write_bytes
from .._cache import cache_dir
from ..cancel import CancelSignal, check_cancel
from ..models._memory import release_freed_memory
from .settings import DemoSettings, settings_from_env

if TYPE_CHECKING:
    from ..activations import Activations
    from ..analysis import FeatureGeometry, FeatureStats, LogitEffects
    from ..analysis.explain import Labels
    from ..corpus import Corpus
    from ..models.handle import ModelHandle
    from ..sae import SAE


class LazyModel:
    """The demo's model, loaded on first use (`get`) and shared by a `DemoSAE` and the `DemoArtifacts` made from it.

    Only uncached stages and live computations (steering, attribution) need the model; a run whose every result is
    in the cache never loads it. For Gemma 3 270M loading costs ~6 s of a ~30 s cached ``saewidgets demo``
    (transformers' model and tokenizer imports ~3.7 s, the tokenizer's JSON ~2 s) and ~500 MB resident.
    """

    def __init__(self, name: str | None, model: ModelHandle | None = None):
        self.name, self._model = name, model  # name: what `load_model` takes (None: the embedded default)

    def get(self) -> ModelHandle:
        """The model, loaded now (``load_model(name)``) if it was not yet or was released."""
        if self._model is None:
            from .. import load_model

            self._model = load_model(self.name)
        return self._model

    def release(self) -> None:
        """Drop the reference to the model; the next `get` loads it again."""
        self._model = None


class _UsesModel:
    """`model` of a dataclass holding a `LazyModel` in ``model_source``."""

    model_source: LazyModel

    @property
    def model(self) -> ModelHandle:
        """The `ModelHandle` of ``settings.model``, loaded on first use (see `LazyModel`)."""
        return self.model_source.get()


@dataclass
class DemoArtifacts(_UsesModel):
    """Everything the demo computed, ready for the Explorer (``model``: loaded on first use)."""

    settings: DemoSettings
    folder: Path
    model_source: LazyModel
    corpus: Corpus
    activations: Activations
    held_out: Activations
    sae: SAE
    metrics: dict[str, Any]
    stats: FeatureStats
    logit_effects: LogitEffects
    labels: Labels
    """Every feature's label (`saewidgets.analysis.explain.Labels`), cached beside the statistics: its pattern
    label, replaced by an LLM explanation where one was made with ``cache_dir=art.folder``."""

    @functools.cached_property
    def geometry(self) -> FeatureGeometry:
        """The feature map of the SAE's decoder directions (`feature_geometry`, cached in ``folder``), computed on
        first use: UMAP's libraries (umap-learn, numba, pynndescent) hold ~275 MB once imported, so ``saewidgets
        demo`` asks for the map only after its model work is done and the model is freed (Binder has ~2 GB)."""
        from ..analysis import feature_geometry

        return feature_geometry(self.sae, cache_dir=self.folder)

    def release_model(self) -> None:
        """Drop the reference to the model (~600 MB resident for Gemma 3 270M) that this object shares with the
        `DemoSAE` it was made from, for a caller whose model work is done; using `model` again loads it again."""
        self.model_source.release()


@dataclass
class DemoSAE(_UsesModel):
    """The demo's first stages: the harvest, the SAE trained on it and its feature statistics (what steering
    needs; ``model``: loaded on first use)."""

    settings: DemoSettings
    folder: Path
    model_source: LazyModel
    activations: Activations
    held_out: Activations
    sae: SAE
    stats: FeatureStats


#: The settings a harvest depends on; the others decide only the SAE and what follows it.
HARVEST_FIELDS = ("model", "layer", "n_tokens", "context_len", "corpus", "precision")


def cached_harvest(settings: DemoSettings, others: Sequence[DemoSettings]) -> Path | None:
    """The cached harvest folder of the first of ``others`` that harvests exactly what ``settings`` would (same
    `HARVEST_FIELDS`), or None: an SAE that differs from a cached run only in its width (or steps, k, ...) need not
    run the model over the corpus again."""
    for other in others:
        folder = cache_dir("demo") / other.key() / "activations"
        same = all(getattr(other, name) == getattr(settings, name) for name in HARVEST_FIELDS)
        if same and (folder / "activations.json").exists():
            return folder
    return None


def demo_sae(
    settings: DemoSettings | None = None,
    *,
    model: ModelHandle | None = None,
    progress: bool = True,
    refresh: bool = False,
    cancel: CancelSignal | None = None,
    harvest_from: Sequence[DemoSettings] = (),
    corpus: Corpus | None = None,
    **overrides: Any,
) -> DemoSAE:
    """Harvest, train and compute feature statistics as `demo_artifacts` does (same arguments, same cache), and
    stop there: no held-out LM loss, logit effects, map or labels. For SAEs that only need to be steered or read,
    e.g. the steering benchmark's SAEs at other blocks (``demo_sae(QUICK, layer=6)``); `demo_artifacts` with the
    same settings later reuses all three. ``harvest_from``: cached runs whose harvest is copied instead of
    harvesting again where it is the same (`cached_harvest`), e.g. ``demo_sae(FULL, n_features=2048,
    harvest_from=[FULL])``. ``corpus``: other text than the demo corpus, named in the settings (``DemoSettings(
    corpus=corpus.name)``)."""
    from ..activations import Activations, harvest
    from ..analysis import FeatureStats, feature_stats
    from ..sae import load_sae, save_sae, train_sae

    settings = replace(settings or settings_from_env(), **overrides)
    corpus = corpus_of(settings, corpus)

    folder = cache_dir("demo", settings.key())
    model_source = LazyModel(settings.model, model)
    acts_dir = folder / "activations"
    source = None if refresh else cached_harvest(settings, harvest_from)
    if acts_dir.exists() and not refresh:
        acts = Activations.load(acts_dir)
    elif source is not None:
        Activations.load(source).save(acts_dir)
        acts = Activations.load(acts_dir)
    else:
        model = model_source.get()
        acts = harvest(
            model,
            corpus,
            model.resolve_layer(settings.layer),
            n_tokens=settings.n_tokens,
            context_len=settings.context_len,
            progress=progress,
            cancel=cancel,
            precision=settings.precision,
        )
        acts.save(acts_dir)
        acts = Activations.load(acts_dir)
    release_freed_memory()  # the heap the harvest's batches freed, before the split copies the rows
    train, held_out = acts.split(settings.held_out_fraction, seed=settings.seed)
    acts.drop_resident_pages()  # the split read every row into its copies; training reads only those

    _stage(cancel, "training")
    sae_dir = folder / "sae"
    if sae_dir.exists() and not refresh:
        sae = load_sae(sae_dir)
    else:
        sae = train_sae(
            train,
            arch=settings.arch,
            n_features=settings.n_features,
            k=settings.k,
            n_steps=settings.n_steps,
            batch_size=settings.batch_size,
            lr=settings.lr,
            seed=settings.seed,
            precision=settings.precision,
            checkpoint_dir=folder / "checkpoints",
            progress=progress,
            callback=lambda step, info: check_cancel(cancel, "the demo pipeline (training)"),
        )
        if sae.cfg.provenance["steps"] < settings.n_steps:  # stopped by Ctrl-C: resume from the checkpoint next time
            raise KeyboardInterrupt
        save_sae(sae, sae_dir)
    del train  # an in-memory copy of 90% of the harvest: freed before the statistics, not kept to the end

    _stage(cancel, "statistics")
    stats_dir = folder / "stats"
    if stats_dir.exists() and not refresh:
        stats = FeatureStats.load(stats_dir, sae=sae)
    else:
        stats = feature_stats(model_source.get(), sae, acts, progress=progress, cancel=cancel)
        stats.save(stats_dir)
    acts.drop_resident_pages()  # read again by the statistics; no later stage reads the mapped harvest
    return DemoSAE(settings, folder, model_source, acts, held_out, sae, stats)


def corpus_of(settings: DemoSettings, corpus: Corpus | None = None) -> Corpus:
    """The text ``settings`` harvest: the demo corpus, or ``corpus`` where ``settings.corpus`` names it (a clear
    error where they disagree: results are cached by the settings, so a corpus they do not name would be mixed up
    with another's)."""
    from ..corpus import Corpus, demo_corpus

    if corpus is None:
        if settings.corpus != "demo":
            raise ValueError(
                f"these settings harvest the corpus {settings.corpus!r}: pass that Corpus as corpus=, or use "
                'DemoSettings(corpus="demo") for the bundled demo corpus'
            )
        return demo_corpus()
    if not isinstance(corpus, Corpus):
        raise TypeError(
            f"corpus= takes a Corpus (e.g. load_corpus(...)), not {type(corpus).__name__}; name it in the settings "
            "with DemoSettings(corpus=...)"
        )
    if corpus.name != settings.corpus:
        raise ValueError(
            f"the corpus given is named {corpus.name!r} but the settings name {settings.corpus!r}: use "
            f"DemoSettings(corpus={corpus.name!r}) (dataclasses.replace(settings, corpus={corpus.name!r})) so that "
            "its results are cached apart from other text's"
        )
    return corpus


def demo_artifacts(
    settings: DemoSettings | None = None,
    *,
    model: ModelHandle | None = None,
    progress: bool = True,
    refresh: bool = False,
    cancel: CancelSignal | None = None,
    corpus: Corpus | None = None,
    sae_stages: DemoSAE | None = None,
    **overrides: Any,
) -> DemoArtifacts:
    """Compute (or load from the cache) every result the demo shows (the feature map when ``.geometry`` is first
    read).

    Args:
        settings: `FULL`, `QUICK` or your own `DemoSettings` (default: `settings_from_env()`).
        model: an already-loaded `ModelHandle` for ``settings.model`` (saves loading it again).
        refresh: ignore the cache and recompute everything.
        cancel: a `threading.Event` (see `saewidgets.cancel`), checked between stages and inside the long ones
            (harvest and statistics batches, training steps); once set, `saewidgets.cancel.Cancelled` is raised.
            Stages already finished stay cached; the stopped one writes nothing (training keeps its resumable
            checkpoint), so the next call resumes where this one stopped.
        corpus: text to harvest instead of the demo corpus; the settings must name it (``corpus=corpus.name``).
        sae_stages: what `demo_sae` returned for these settings, where the caller ran the first stages itself
            (``saewidgets demo`` changes the allocator between them and the rest); they are not run again.
        overrides: fields of `DemoSettings` to change, e.g. ``n_features=8192``.
    """
    from ..analysis import LogitEffects, logit_effects
    from ..analysis.explain import PatternExplainer, cached_labels, explain_features
    from ..sae import evaluate_sae

    if sae_stages is None:
        first = demo_sae(
            settings, model=model, progress=progress, refresh=refresh, cancel=cancel, corpus=corpus, **overrides
        )
    elif sae_stages.settings != replace(settings or settings_from_env(), **overrides):
        raise ValueError(
            "sae_stages= comes from demo_sae with other settings than these: pass the same settings (and "
            "overrides) to both, or leave sae_stages out"
        )
    else:
        first = sae_stages
    settings, folder = first.settings, first.folder
    corpus = corpus_of(settings, corpus)
    acts, held_out, sae, stats = first.activations, first.held_out, first.sae, first.stats

    _stage(cancel, "metrics")
    metrics_path = folder / "metrics.json"
    if metrics_path.exists() and not refresh:
        metrics = json.loads(metrics_path.read_text())
    else:
        held_texts = _held_out_texts(corpus, held_out, limit=16)
        metrics = evaluate_sae(sae, held_out, model=first.model, texts=held_texts, progress=progress).to_dict()
        atomic_write_bytes(metrics_path, json.dumps(metrics, indent=1).encode())

    _stage(cancel, "logit effects")
    effects_dir = folder / "logit_effects"  # cached by the run's folder, as the stages before: no model to key it
    if effects_dir.exists() and not refresh:
        effects = LogitEffects.load(effects_dir)
    else:
        effects = logit_effects(first.model, sae, progress=progress)
        effects.save(effects_dir)
    _stage(cancel, "labels")
    explain_features(stats, PatternExplainer(), logit_effects=effects, cache_dir=folder, progress=progress)
    labels = cached_labels(folder, stats.fingerprint)  # with any LLM explanations made with cache_dir=art.folder
    return DemoArtifacts(
        settings, folder, first.model_source, corpus, acts, held_out, sae, metrics, stats, effects, labels
    )


def _stage(cancel: CancelSignal | None, name: str) -> None:
    """Between stages: stop here if cancelled, and hand the heap the last stage freed back to the system (Binder's
    ~2 GB counts what the allocator keeps, not only what is in use)."""
    check_cancel(cancel, f"the demo pipeline ({name})")
    release_freed_memory()


def _held_out_texts(corpus: Any, held_out: Any, limit: int) -> list[str]:
    """The texts of (up to ``limit``) held-out documents, for the spliced-in LM loss."""
    import numpy as np

    docs = [int(d) for d in np.unique(held_out.doc_ids)[:limit]]
    texts = list(getattr(corpus, "texts", corpus))
    return [texts[d] for d in docs]
