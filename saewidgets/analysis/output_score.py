"""Which features steer toward a concept: rank candidates by what clamping them does to the model's output.

A feature can be about a concept in two ways. An *input* feature fires on the concept's own tokens (" Gate" in
"Golden Gate"). Clamping it tells the model "this token is Gate", which mostly breaks the text. An *output* feature
makes the model say the concept, and clamping it steers. Arad, Mueller & Belinkov (EMNLP 2025, "SAEs Are Good for
Steering - If You Select the Right Features") show these are mostly different features, that top activating
contexts find input features, and that ranking candidates by an *output score* makes SAE steering 2-3x better.

On the demo SAE this is the difference between the Golden Gate demo failing and working. The features whose top
contexts are most consistently about the bridge fire on the name's tokens and drift off topic when clamped. A
feature that fires on the words around the name ("driving over the ...") ranks fourth by contexts, yet when clamped
it makes "I went for a walk and saw" continue with "a bridge and I have seen it many times."

`output_scores` measures the effect directly, as the paper does: clamp each candidate at ``multiple`` x its max
activation on a few neutral prompts, in one batched forward pass (no generation). The score is how much the
next-token probability of the concept's terms rises, in nats of log probability averaged over the prompts' tokens.

A rise from one in a million to one in ten thousand is a big score and still no mention, and a feature that says
"Golden" in "Golden Age" raises the same first token as "Golden Gate". So `steering_search` checks what the score
only predicts: candidates are the features whose top contexts contain the query (`search_contexts`, with and
without the name's own tokens); the best few by output score are clamped while the model writes on the same
neutral prompts, and ranked by how many continuations mention one of the terms, stay fluent and were not about
the concept without the clamp (`judge_steering`; fluency calibrated on the same prompts' default continuations).

A feature that says a concept need not fire in text about it, so the context search can miss it: on the quick demo
SAE no feature whose top contexts contain "honest" steered toward honesty, while the feature whose decoder direction
most promotes " lying" through the unembedding did. `promoting_features` ranks every feature that way (weights
only, no forward pass), and `steering_search` adds the best ``promoters`` (10 by default) to the candidates.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from .._checks import whole_number
from ..models.handle import ModelHandle
from ._common import check_features, content_mask, left_padded_batch, prompt_ids, sae_layer
from ._trace import next_token_logprobs_with_delta, residuals, token_logprob_with_delta
from .logits import direction_logit_z
from .search import context_hit, search_contexts
from .stats import FeatureStats
from .steering import DEFAULT_CLAMP_MULTIPLE, clamp_values, generate, intervention_delta, steer_each
from .steering_judge import as_terms, calibrate_fluency, judge_steering
from .steering_sets import CONFIRMATION_PROMPTS, SELECTION_PROMPTS

if TYPE_CHECKING:
    from ..sae import SAE
    from .results import ContextHit

#: Neutral prompts the output score and the trial generations are measured on: the first six selection prompts
#: (`SELECTION_PROMPTS`), never an evaluation prompt, so a feature is chosen on text other than the text it is
#: judged on.
SCORING_PROMPTS: tuple[str, ...] = SELECTION_PROMPTS[:6]
#: Candidate features clamped per forward pass (each adds one row per scoring prompt).
FEATURES_PER_PASS = 4
#: Candidates `steering_search` adds by what they make the model say (`promoting_features`), beside the context
#: search's. Set to 10 before any measurement; made the default because, on the validation prompts, it never lost a
#: concept against context candidates alone on four SAEs (benchmarks/README.md, "Promoters").
DEFAULT_PROMOTERS = 10
#: Candidates `steering_search` tries again on `CONFIRMATION_PROMPTS` (at every strength) before it ranks: six trial
#: prompts cannot tell a feature that steers 7 of 8 other prompts from one that steers 6 (benchmarks/README.md,
#: "Confirmation").
DEFAULT_CONFIRM = 3
#: The most features `steering_search` clamps together as one candidate: the best 2 and 3 that steered alone are
#: tried together too. Chosen by a rule fixed before the runs (validation prompts decide, tie-break prompts next),
#: on four SAEs x six concepts: +5 of 192 validation trials, +8 of 288 tie-break, over one feature
#: (benchmarks/README.md, "Families on the recipe's own candidates").
DEFAULT_FAMILY = 3
#: `steering_search(..., whole_terms=True)` re-scores this many times ``shortlist`` first-token leaders.
WHOLE_TERM_LEADERS = 3
#: Rows per forward pass when scoring whole terms (one row per prompt and spelling of a term, per feature; a feature
#: with more rows takes several passes): each row holds its ``[tokens, vocab]`` logits (Gemma's vocabulary is 262k)
#: while the pass runs.
TERM_ROWS_PER_PASS = 48


def concept_token_ids(model: ModelHandle, terms: str | Sequence[str]) -> list[int]:
    """Token ids whose prediction means the model is starting to write one of ``terms``.

    For each term this is the first token of its usual spellings: as written, in lower case and capitalised, with
    and without a leading space ("Bridge", " Bridge", "bridge", " bridge").
    """
    tokenizer = model.tokenizer
    found: set[int] = set()
    for term in as_terms(terms):
        for spelling in {term, term.lower(), term[0].upper() + term[1:]}:
            for text in (spelling, " " + spelling):
                ids = tokenizer.encode(text, add_special_tokens=False)
                if ids:
                    found.add(int(ids[0]))
    return sorted(found)


@torch.no_grad()
def promoting_features(
    model: ModelHandle,
    sae: SAE,
    terms: str | Sequence[str],
    n: int = DEFAULT_PROMOTERS,
    stats: FeatureStats | None = None,
) -> list[tuple[int, float]]:
    """The ``n`` features whose decoder directions most promote one of ``terms``' first tokens
    (`concept_token_ids`) through the final norm and the unembedding (the direct logit effect,
    `saewidgets.analysis.logits.direction_logits`), with that promotion as a z-score over the vocabulary
    (`direction_logit_z`).

    A z-score, not a raw logit: a feature whose direction raises every token a little is not a feature that says
    the concept. This reads the weights only (no forward pass, no ``[features, vocab]`` logits), so it ranks all
    features of a wide SAE in a second; it ignores the blocks after the SAE's layer, which `output_scores` and
    trial generations then account for. With ``stats``, features that never fired there are left out (a clamp at
    a multiple of a max activation of 0 means nothing). Best first, as ``(feature, z-score)``.
    """
    n = whole_number("n", n, 1)
    ids = concept_token_ids(model, terms)
    if not ids:
        raise ValueError(f"None of the terms {list(as_terms(terms))} is made of tokens of this model's vocabulary.")
    score = direction_logit_z(model, sae.W_dec.detach(), ids).max(1).values
    if stats is not None:
        score[torch.as_tensor(stats.max_act) <= 0] = -torch.inf
    top = [f for f in torch.argsort(score, descending=True)[:n].tolist() if score[f] > -torch.inf]
    return [(f, float(score[f])) for f in top]


@torch.no_grad()
def output_scores(
    model: ModelHandle,
    sae: SAE,
    stats: FeatureStats,
    features: Sequence[int],
    terms: str | Sequence[str],
    multiple: float = DEFAULT_CLAMP_MULTIPLE,
    prompts: Sequence[str] = SCORING_PROMPTS,
    layer: int | str | None = None,
    progress: bool = True,
    check_provenance: bool = True,
    whole_terms: bool = False,
) -> torch.Tensor:
    """Output score of each of ``features`` for the concept named by ``terms``: ``[len(features)]`` nats.

    Each feature is clamped at ``multiple`` x its max activation (error term kept, as in `steer`) at every token
    of ``prompts``; the score is the mean, over the prompts' tokens, of the rise in the log probability that the
    next token starts one of ``terms`` (`concept_token_ids`). Positive: clamping pushes the model toward the
    concept. The clamp strength should be the one steering will use.

    ``whole_terms=True`` scores whole terms instead of first tokens (`term_scores`): the rise in the log
    probability that the text right after each prompt is one of ``terms`` in full, " Golden Gate" rather than
    " Golden" (which "Golden Age" and "Golden Temple" share). It costs one row per prompt and spelling.
    """
    features = check_features(sae, features)
    if not features:
        return torch.zeros(0)
    stats.check_matches(sae)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("output_scores() needs at least one neutral prompt.")
    layer = sae_layer(model, sae, layer, check_provenance)
    if whole_terms:
        return _whole_term_scores(model, sae, stats, features, terms, multiple, prompts, layer, progress)
    token_ids = concept_token_ids(model, terms)
    ids, attention = left_padded_batch(model, prompts)
    mask = content_mask(model, ids, attention)
    hidden = residuals(model, ids, layer, attention)
    weight = mask.float() / mask.sum(-1, keepdim=True).clamp(min=1) / len(prompts)
    baseline = token_logprob_with_delta(model, ids, attention, layer, torch.zeros_like(hidden), token_ids)

    scores = []
    for chunk, delta in _clamp_deltas(sae, stats, features, multiple, hidden, mask, FEATURES_PER_PASS, progress):
        logprob = token_logprob_with_delta(model, ids, attention, layer, delta, token_ids)
        gain = (logprob - baseline.repeat(len(chunk), 1)) * weight.repeat(len(chunk), 1)
        scores.append(gain.view(len(chunk), -1).sum(-1))
    return torch.cat(scores)


def term_spellings(terms: str | Sequence[str]) -> list[str]:
    """How each of ``terms`` is written as the next words of a text: with a leading space, as given and
    capitalised (" Golden Gate", " music", " Music")."""
    return sorted({" " + spelling for term in as_terms(terms) for spelling in (term, term[0].upper() + term[1:])})


def term_rows(
    model: ModelHandle, prompts: Sequence[str], terms: str | Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each prompt followed by each `term_spellings` of ``terms``, left-padded: ids and attention ``[P * S, T]``
    (prompt-major), and ``[P * S, T - 1]`` True where the next-token log probability is one of the term's tokens."""
    spellings = term_spellings(terms)
    rows, spans = [], []
    for prompt in prompts:
        head = prompt_ids(model, prompt)[0].tolist()
        for spelling in spellings:
            tail = model.tokenizer.encode(spelling, add_special_tokens=False)
            rows.append(head + tail)
            spans.append(len(tail))
    width = max(len(r) for r in rows)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros_like(ids)
    target = torch.zeros((len(rows), width - 1), dtype=torch.bool)
    for i, (r, n) in enumerate(zip(rows, spans)):
        ids[i, width - len(r) :], attention[i, width - len(r) :] = torch.tensor(r), 1
        target[i, width - 1 - n :] = True
    return ids, attention, target


def _whole_term_scores(
    model: ModelHandle,
    sae: SAE,
    stats: FeatureStats,
    features: list[int],
    terms: str | Sequence[str],
    multiple: float,
    prompts: list[str],
    layer: int,
    progress: bool,
) -> torch.Tensor:
    """`output_scores` with ``whole_terms=True``: per feature, the mean over prompts of the rise in
    ``log sum_spelling p(spelling | prompt)``, each spelling's probability the product over its tokens (the
    clamp on at every token, the term's included, as when generating)."""
    n_spellings = len(term_spellings(terms))
    ids, attention, target = term_rows(model, prompts, terms)
    mask = content_mask(model, ids, attention)
    hidden = residuals(model, ids, layer, attention)

    def term_logprob(logprob: torch.Tensor) -> torch.Tensor:  # [F * P * S, T - 1] -> [F]
        per_row = torch.where(target.repeat(len(logprob) // len(target), 1), logprob, 0.0).sum(-1)  # padding: NaN
        return per_row.view(-1, len(prompts), n_spellings).logsumexp(-1).mean(-1)

    def logprobs(delta: torch.Tensor) -> torch.Tensor:  # [F * P * S, T - 1], at most TERM_ROWS_PER_PASS rows a pass
        repeat = len(delta) // len(ids)
        rows, mask_rows = ids.repeat(repeat, 1), attention.repeat(repeat, 1)
        step = TERM_ROWS_PER_PASS
        return torch.cat(
            [
                next_token_logprobs_with_delta(
                    model, rows[i : i + step], mask_rows[i : i + step], layer, delta[i : i + step]
                )
                for i in range(0, len(delta), step)
            ]
        )

    baseline = term_logprob(logprobs(torch.zeros_like(hidden)))
    per_pass = max(1, TERM_ROWS_PER_PASS // len(ids))
    scores = []
    for _, delta in _clamp_deltas(sae, stats, features, multiple, hidden, mask, per_pass, progress):
        scores.append(term_logprob(logprobs(delta)) - baseline)
    return torch.cat(scores)


def _clamp_deltas(
    sae: SAE,
    stats: FeatureStats,
    features: list[int],
    multiple: float,
    hidden: torch.Tensor,
    mask: torch.Tensor,
    per_pass: int,
    progress: bool,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """``per_pass`` features at a time, with what clamping each at ``multiple`` x its max adds to ``hidden
    [P, T, d]`` where ``mask [P, T]`` (real tokens but BOS): ``[len(chunk) * P, T, d]``, feature-major."""
    sae_hidden, sae_mask = hidden.to(sae.W_dec.device), mask[..., None].to(sae.W_dec.device)
    chunks = range(0, len(features), per_pass)
    for start in tqdm(chunks, desc="output scores", unit="pass", disable=not progress or len(chunks) < 2):
        chunk = features[start : start + per_pass]
        values = clamp_values(sae, dict.fromkeys(chunk, multiple), stats, "max", "clamp")
        yield (
            chunk,
            torch.cat([intervention_delta(sae, sae_hidden, {f: values[f]}, "clamp", None) * sae_mask for f in chunk]),
        )


@dataclass(frozen=True)
class SteeringCandidate:
    """A feature `steering_search` tried, and how its trials went.

    Attributes:
        feature: the SAE feature.
        multiple: the clamp strength (multiple of its max activation) its trials did best at.
        hit_rate: the fraction of trial prompts on which clamping it at ``multiple`` succeeded by `judge_steering`:
            the continuation mentions a term, stays fluent, and the default continuation did not mention one.
            Measured on the search's own (selection) prompts, both rounds for a candidate it confirmed, so it is
            optimistic for other prompts.
        n_trials: how many trial prompts that fraction is over (more than the first round's for a confirmed one).
        output_score: the rise in log probability of the terms' first tokens when clamped (nats, `output_scores`).
        steered: its trial continuation of the first prompt.
        fraction, max_act, density, example: from the context search (`search_contexts`, or `context_hit` for a
            feature added by ``promoters``: fraction 0 when none of its top contexts contains the query).
        family: with ``steering_search(..., family=k)``, the features clamped together (``feature`` first, the
            best alone), each at ``multiple``; empty for one feature.
    """

    feature: int
    multiple: float
    hit_rate: float
    n_trials: int
    output_score: float
    steered: str
    fraction: float
    max_act: float
    density: float
    example: str
    family: tuple[int, ...] = ()

    @property
    def clamps(self) -> dict[int, float]:
        """What to pass to `steer`: ``{feature: multiple}`` for every feature it clamped in its trials."""
        return {f: self.multiple for f in (self.family or (self.feature,))}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "family": list(self.family)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SteeringCandidate:
        """The candidate `to_dict` wrote (a cached search read back)."""
        return cls(**{**data, "family": tuple(data.get("family", ()))})


def steering_candidates(
    model: ModelHandle,
    sae: SAE,
    stats: FeatureStats,
    query: str,
    terms: str | Sequence[str],
    candidates: int = 50,
    promoters: int = DEFAULT_PROMOTERS,
) -> dict[int, ContextHit]:
    """The features `steering_search` scores, each with its context search record (`context_hit`): the best
    ``candidates`` context hits for ``query`` with and without ``beyond_query``, then the ``promoters`` features whose
    decoder directions most promote ``terms`` (`promoting_features`; fraction 0 where no top context has the query).

    A remote model's weights stay on NDIF, so it gets the context hits only, with a warning."""
    promoters = whole_number("promoters", promoters, 0)
    if promoters and model.remote:
        warnings.warn(
            "Promoters are ranked from the unembedding's weights, which a remote model keeps on NDIF: searching "
            "the context hits only (pass promoters=0 to say so, or load the model locally to add them).",
            stacklevel=3,
        )
        promoters = 0
    hits: dict[int, ContextHit] = {}
    for beyond_query in (False, True):
        for hit in search_contexts(stats, query, n=candidates, beyond_query=beyond_query):
            hits.setdefault(hit.feature, hit)
    if promoters:
        for feature, _ in promoting_features(model, sae, terms, promoters, stats):
            hits.setdefault(feature, context_hit(stats, feature, query))
    return hits


def steering_search(
    model: ModelHandle,
    sae: SAE,
    stats: FeatureStats,
    query: str,
    n: int = 5,
    terms: str | Sequence[str] | None = None,
    candidates: int = 50,
    shortlist: int = 6,
    multiples: Sequence[float] = (DEFAULT_CLAMP_MULTIPLE,),
    prompts: Sequence[str] = SCORING_PROMPTS,
    max_new_tokens: int = 20,
    progress: bool = True,
    check_provenance: bool = True,
    whole_terms: bool = False,
    family: int = DEFAULT_FAMILY,
    promoters: int = DEFAULT_PROMOTERS,
    confirm: int = DEFAULT_CONFIRM,
    confirm_prompts: Sequence[str] = CONFIRMATION_PROMPTS,
) -> list[SteeringCandidate]:
    """The features that steered toward ``query`` in trials, best first, each with the strength that worked best.

    Candidates are the features whose top contexts contain ``query`` and the ``promoters`` features whose decoder
    directions most promote the terms (`promoting_features`); the ``shortlist`` best by output score are
    clamped while the model continues ``prompts``, at each of ``multiples``, and judged by `judge_steering`
    against the unclamped continuations (fluency calibrated on those); the best 2 and 3 that succeeded alone are
    also tried clamped together (``family``), each group as one candidate. The ``confirm`` best that succeeded are
    then tried again, at each multiple, on ``confirm_prompts``, and ranked by their trials on both. Only features
    whose trials succeeded at least once are returned: a feature whose trials all failed is not presented as a way
    to steer. When none succeeded, a warning says so (with the best output score and what its trial wrote) and the
    list is empty.
    Steer with what a candidate ran: ``steer(model, sae, prompt, hit.clamps, stats=stats)``.

    Args:
        query: phrase searched for in the top contexts (as `search_contexts`), e.g. "Golden Gate".
        n: how many features to return (at most ``shortlist``).
        terms: what the steered text should say; any one counts (default: ``query``), e.g.
            ``["Golden Gate", "San Francisco", "Marin"]``. Give the concept, not just its name's first word:
            "Golden" alone is also "Golden Age".
        candidates: how many context hits to score, from each of `search_contexts` with and without
            ``beyond_query`` (steering features often fire around a name rather than on it).
        shortlist: how many of the best by output score are then tried by generating (the slow step).
        multiples: clamp strengths (multiples of max activation) to try each shortlisted feature at. The output
            score is measured at the largest. Several calibrate the strength too: how far is right depends on the
            SAE and on how its max activations were measured (a bigger corpus finds bigger maxima, so the same
            multiple pushes harder).
        prompts: neutral prompts to try on: selection prompts (`SELECTION_PROMPTS`), never the ones you judge on.
        max_new_tokens: length of each trial continuation.
        check_provenance: refuse an SAE recorded for another model or layer (False: search with it anyway).
        whole_terms: pick the shortlist by the whole terms' log probability (`output_scores` ``whole_terms``)
            rather than their first tokens': the ``WHOLE_TERM_LEADERS x shortlist`` best by first tokens are
            re-scored (a forward pass per feature over every prompt and spelling of a term, so not all of them),
            and ``output_score`` is then the whole-term score.
        family: also try the best 2, ..., ``family`` features that succeeded alone clamped together (each at each
            of ``multiples``): a concept an SAE splits over several features may need them all. A family is
            returned as one candidate (``family``, ``clamps``), ranked with the single features by its trials (a
            single feature first on a tie). 1: single features only.
        promoters: also take as candidates the ``promoters`` features whose decoder directions most promote the
            terms' first tokens (`promoting_features`), whatever their top contexts: a feature that makes the
            model *say* "lying" need not fire in text about honesty, so the context search can miss it. 0: the
            context search's candidates only (and what a remote model gets, with a warning: its weights are on
            NDIF).
        confirm: how many of the candidates that succeeded to try again on ``confirm_prompts`` (0: rank by the
            first trials alone). Each costs one generation per multiple and prompt; their ``hit_rate`` and
            ``n_trials`` then count both rounds, and they rank before the candidates tried once.
        confirm_prompts: the second round's prompts: selection prompts other than ``prompts``
            (`CONFIRMATION_PROMPTS`), never the ones you judge on.

    Returns `SteeringCandidate` s, those tried twice first, each sorted by ``hit_rate``, then fewer features, then
    ``output_score`` (the gentler multiple on a tie). Empty when there is no candidate (no top context contains
    ``query`` and no promoter) or no trial succeeded (with a warning).
    """
    if not query.strip():
        raise ValueError("steering_search() needs a non-empty query, e.g. 'Golden Gate'.")
    sae_layer(model, sae, None, check_provenance)  # a mismatched SAE is refused before any search or generation
    terms = as_terms(terms if terms is not None else query)
    multiples = sorted({float(m) for m in multiples})
    if not multiples:
        raise ValueError("steering_search() needs at least one clamp multiple to try, e.g. multiples=(2.0,).")
    family = whole_number("family", family, 1)
    confirm = whole_number("confirm", confirm, 0)
    prompts, confirm_prompts = list(prompts), list(confirm_prompts)
    if confirm and not confirm_prompts:
        raise ValueError(
            "steering_search() needs confirm_prompts to try its best candidates again on (CONFIRMATION_PROMPTS), "
            "or confirm=0 to rank by the first trials alone."
        )
    hits = steering_candidates(model, sae, stats, query, terms, candidates, promoters)
    if not hits:
        warnings.warn(
            f"No feature has {query!r} in its top contexts, so there is nothing to try: search for a "
            "phrase the corpus uses (search_contexts), "
            + ("" if promoters else f"add candidates by what they make the model say (promoters={DEFAULT_PROMOTERS}), ")
            + "or use a steering vector (steering_vector).",
            stacklevel=2,
        )
        return []
    features = list(hits)
    default = generate(model, prompts, max_new_tokens=max_new_tokens)
    fluency = calibrate_fluency(model, prompts, max_new_tokens=max_new_tokens, default=default)
    scores = output_scores(
        model, sae, stats, features, terms, multiples[-1], prompts, progress=progress, check_provenance=check_provenance
    )
    ranked = sorted(zip(scores.tolist(), features), key=lambda pair: -pair[0])
    if whole_terms:  # a whole term is no likelier than its first token: re-rank the first-token leaders only
        leaders = [feature for _, feature in ranked[: WHOLE_TERM_LEADERS * shortlist]]
        whole = output_scores(
            model,
            sae,
            stats,
            leaders,
            terms,
            multiples[-1],
            prompts,
            progress=progress,
            check_provenance=check_provenance,
            whole_terms=True,
        )
        ranked = sorted(zip(whole.tolist(), leaders), key=lambda pair: -pair[0])
    ranked = ranked[:shortlist]

    # per group of features clamped together: successes at each multiple, prompts tried, and the continuation of
    # the first trial prompt at each multiple
    trialled: dict[tuple[int, ...], tuple[list[int], int, list[str]]] = {}

    def trials(groups: list[tuple[int, ...]], on: list[str], default_on: list[str], desc: str) -> None:
        """Clamp each group of features together at each multiple on ``on``; add the successes to `trialled`."""
        runs = steer_each(
            model,
            sae,
            on,
            [{f: m for f in group} for group in groups for m in multiples],
            stats=stats,
            max_new_tokens=max_new_tokens,
            check_provenance=check_provenance,
            progress=progress and desc,
        )
        for g, group in enumerate(groups):
            steered = runs[g * len(multiples) : (g + 1) * len(multiples)]
            wins = [sum(judge_steering(model, on, default_on, texts, terms, fluency).success) for texts in steered]
            before, n, first = trialled.get(group, ([0] * len(multiples), 0, [texts[0] for texts in steered]))
            trialled[group] = ([a + b for a, b in zip(before, wins)], n + len(on), first)

    def candidate(group: tuple[int, ...]) -> SteeringCandidate:
        """``group`` at the multiple its trials did best at (the gentler on a tie)."""
        wins, n, first = trialled[group]
        best = max(range(len(multiples)), key=lambda i: (wins[i], -multiples[i]))
        context = hits[group[0]]
        return SteeringCandidate(
            group[0],
            multiples[best],
            wins[best] / n,
            n,
            score_of[group[0]],
            first[best],
            context.fraction,
            context.max_act,
            context.density,
            context.example,
            group if len(group) > 1 else (),
        )

    def succeeded() -> list[SteeringCandidate]:
        """Every group whose trials succeeded at least once: tried twice first, then by rate, size, output score."""
        tried = [candidate(group) for group in trialled]
        return sorted(
            (c for c in tried if c.hit_rate > 0),
            key=lambda c: (c.n_trials == len(prompts), -c.hit_rate, len(c.family), -c.output_score),
        )

    score_of = {feature: score for score, feature in ranked}
    trials([(feature,) for _, feature in ranked], prompts, default, "steering trials")
    alone = succeeded()
    groups = [tuple(c.feature for c in alone[:k]) for k in range(2, min(family, len(alone)) + 1)]
    if groups:
        trials(groups, prompts, default, "family trials")
    worked = succeeded()
    if worked and confirm:
        trials(
            [c.family or (c.feature,) for c in worked[:confirm]],
            confirm_prompts,
            generate(model, confirm_prompts, max_new_tokens=max_new_tokens),
            "confirmation trials",
        )
        worked = succeeded()
    if not worked:
        top = candidate(next(iter(trialled)))
        warnings.warn(
            f"No feature steered toward {query!r}: the {len(trialled)} best by output score were clamped at "
            f"{', '.join(f'{m:g}x' for m in multiples)} on {len(prompts)} prompts and no continuation "
            f"mentioned {terms} fluently where the default did not (feature {top.feature}, output score "
            f"{top.output_score:.2f}, wrote {top.steered!r}). Try more multiples, more candidates, or a "
            "steering vector (steering_vector).",
            stacklevel=2,
        )
    return worked[:n]
