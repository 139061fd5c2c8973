"""`explain_features`: one explanation per feature, run in parallel, cached, resumable.

Each finished explanation is appended at once to a journal (one JSON line, flushed and fsynced) under
``cache_dir/labels/<sae fingerprint>/<explainer cache key>.jsonl``. A later call with the same SAE and explainer
reads the journal and only asks for the features still missing, so a cancelled or killed run keeps what it finished
and resumes. A line cut short by a kill is ignored. The journal is created with the first finished explanation:
a run that fails before any (wrong key, unreachable endpoint) leaves nothing on disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

from ...progress import progress_bar
from ..logits import LogitEffects
from ..stats import FeatureStats
from .explainer import CostEstimate, Explainer, hash_text
from .labels import Explanation, Labels
from .records import FeatureRecord, feature_record


def _features(stats: FeatureStats, features: Iterable[int] | None, explainer: Explainer) -> list[int]:
    if features is None:
        if explainer.kind == "pattern":
            return list(range(stats.n_features))  # dead features get a label too ("never fires")
        return [i for i in range(stats.n_features) if float(stats.max_act[i]) > 0]
    chosen = list(dict.fromkeys(stats.check_feature(f) for f in features))
    if not chosen:
        raise ValueError(
            "explain_features() got an empty feature list: pass features=None for every feature, "
            "or some feature indices."
        )
    return chosen


def journal_path(cache_dir: str | os.PathLike, fingerprint: str, explainer: Explainer) -> Path:
    """Where `explain_features` keeps ``explainer``'s explanations of the SAE ``fingerprint``."""
    return Path(cache_dir) / "labels" / fingerprint / f"{explainer.name}-{explainer.cache_key()}.jsonl"


def read_journal(path: Path) -> dict[int, Explanation]:
    """The complete explanations in a journal (a last line cut short by a kill is skipped)."""
    done: dict[int, Explanation] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            e = Explanation.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue
        done[e.feature] = e
    return done


class _Journal:
    """Append-only file of finished explanations, created on the first one. With ``durable`` each line is fsynced
    (language-model answers cost money and time); pattern labels are cheap to remake, so they are only flushed."""

    def __init__(self, path: Path | None, durable: bool = True):
        self.path, self.durable = path, durable
        self._file: TextIO | None = None

    def append(self, e: Explanation) -> None:
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cut_short = False  # a last line cut short by a kill: end it, so the next record starts clean
            if self.path.exists() and self.path.stat().st_size:
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    cut_short = f.read(1) != b"\n"
            self._file = open(self.path, "a")  # noqa: SIM115 (stays open for the run; closed by close())
            if cut_short:
                self._file.write("\n")
        self._file.write(json.dumps(asdict(e)) + "\n")
        self._file.flush()
        if self.durable:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def cached_labels(cache_dir: str | os.PathLike, fingerprint: str) -> Labels:
    """Every explanation any explainer left in ``cache_dir`` for the SAE ``fingerprint``, merged: LLM labels over
    pattern labels, and among LLM runs the most recent one last (so it wins)."""
    folder = Path(cache_dir) / "labels" / fingerprint
    labels = Labels(fingerprint)
    runs = [(read_journal(p), p.stat().st_mtime) for p in folder.glob("*.jsonl")] if folder.is_dir() else []
    for done, _ in sorted(runs, key=lambda r: (any(e.kind == "llm" for e in r[0].values()), r[1])):
        labels = labels.merged(Labels(fingerprint, done.values()))
    return labels


def estimate_cost(
    stats: FeatureStats,
    explainer: Explainer,
    features: Iterable[int] | None = None,
    logit_effects: LogitEffects | None = None,
) -> CostEstimate:
    """What `explain_features` with these arguments would send (cached features included)."""
    chosen = _features(stats, features, explainer)
    return explainer.estimate([feature_record(stats, i, logit_effects) for i in chosen])


def explain_features(
    stats: FeatureStats,
    explainer: Explainer,
    features: Iterable[int] | None = None,
    *,
    logit_effects: LogitEffects | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_tokens: int | None = None,
    progress: bool = True,
) -> Labels:
    """An explanation for each of ``features`` (default: every feature that fires; pattern labels: all).

    Args:
        stats: the SAE's `FeatureStats` (contexts shown to the explainer).
        explainer: `PatternExplainer`, `ChatExplainer` or `LocalExplainer`.
        logit_effects: the SAE's `LogitEffects` (promoted tokens, shown to pattern labels and prompts).
        cache_dir: keep results there (see the module docstring); a later call resumes from them.
        max_tokens: refuse to start when the estimated tokens to send and receive exceed this.

    Returns the `Labels` of the SAE (``stats.fingerprint``), every explanation recording how it was made.
    """
    chosen = _features(stats, features, explainer)
    path = journal_path(cache_dir, stats.fingerprint, explainer) if cache_dir is not None else None
    done = {i: e for i, e in (read_journal(path) if path else {}).items() if i in set(chosen)}
    todo = [feature_record(stats, i, logit_effects) for i in chosen if i not in done]
    if todo and explainer.kind == "llm":
        cost = explainer.estimate(todo)
        if max_tokens is not None and cost.total_tokens > max_tokens:
            raise ValueError(
                f"Explaining {len(todo):,} features would use {cost} (over max_tokens={max_tokens:,}): "
                "pass fewer features or a larger max_tokens."
            )
        if progress:
            tqdm.write(f"{explainer!r}: {cost}" + (f"; {len(done):,} already cached" if done else ""))
    journal = _Journal(path, durable=explainer.kind == "llm")
    try:
        with progress_bar(
            len(chosen),
            initial=len(done),
            desc=f"explain ({explainer.name})",
            unit="feature",
            disable=not progress,
        ) as bar:
            for e in _run(explainer, todo):
                done[e.feature] = e
                journal.append(e)
                bar.update(1)
    finally:
        journal.close()
    return Labels(stats.fingerprint, (done[i] for i in chosen if i in done))


def _explain_one(explainer: Explainer, record: FeatureRecord) -> Explanation:
    prompt = explainer.prompt(record)
    text = explainer.explain(record)
    return Explanation(
        feature=record.feature,
        text=text,
        kind=explainer.kind,
        explainer=explainer.name,
        model=explainer.model,
        prompt_hash=hash_text(prompt.system + prompt.user + prompt.completion),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _run(explainer: Explainer, records: list[FeatureRecord]) -> Any:
    """Yield explanations as they finish, at most ``explainer.max_concurrency`` in flight. The first failure (or
    Ctrl-C) cancels what has not started; finished explanations have been yielded already."""
    if explainer.max_concurrency <= 1:
        for record in records:
            yield _explain_one(explainer, record)
        return
    pool = ThreadPoolExecutor(max_workers=explainer.max_concurrency, thread_name_prefix="explain")
    pending = iter(records)
    in_flight: set = set()
    try:
        while True:
            while len(in_flight) < explainer.max_concurrency:
                r = next(pending, None)
                if r is None:
                    break
                in_flight.add(pool.submit(_explain_one, explainer, r))
            if not in_flight:
                return
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            errors = [error for f in finished if (error := f.exception()) is not None]
            yield from (f.result() for f in finished if f.exception() is None)
            if errors:  # keep what the other requests already in flight finish, then report the failure
                for future in in_flight:
                    future.cancel()
                rest, in_flight = wait(in_flight).done, set()
                yield from (f.result() for f in rest if not f.cancelled() and f.exception() is None)
                raise errors[0]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
