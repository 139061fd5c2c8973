"""Steering: generate text with SAE features clamped (or added) at every token, side by side with the default.

Clamping follows Scaling Monosemanticity: at the SAE's layer, for every token of the prompt and of the
continuation, the residual ``h`` becomes ``decode(f') + (h - decode(f))`` where ``f = encode(h)`` and ``f'`` is
``f`` with the chosen features set to their clamp values. The SAE error term is kept, so nothing but the chosen
features changes. ``mode="add"`` instead adds ``value x`` the feature's decoder direction (Neuronpedia-style).
BOS is never edited (the SAE never saw it). Default and steered continuations come from one batched ``generate``
(rows ``[prompts; prompts]``; only the second half is edited), so they share everything but the intervention.

Strengths are multiples of each feature's max activation over the statistics corpus (``units="max"``, needs
``stats``), or raw activation values (``units="activation"``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import torch
from tqdm.auto import tqdm

from .._checks import whole_number
from ..cancel import CancelSignal
from ..models.handle import ModelHandle
from ..remote import FeatureEdit, steered_generate
from ._common import check_feature, check_finite, content_mask, decoder_directions, left_padded_batch, sae_layer
from .stats import FeatureStats

if TYPE_CHECKING:
    from ..sae import SAE

#: Clamp strength (multiple of max activation) used by default and by the steering panel and tutorial.
#: Measured on Gemma 3 270M with the demo SAEs (TopK, 2048 features, k 32, blocks 9 and 12), greedy decoding with
#: `DEFAULT_REPETITION_PENALTY`, on features `steering_search` picks for "Golden Gate":
#: - 1x barely changes the text ("... a California redwood forest").
#: - 2x steers while the text stays readable: "I went for a walk and saw" -> "the San Francisco Bay area's
#:   first-class Yosemite Grizzly Bear"; at block 9, "a bridge and I have seen it many times".
#: - 4x turns into fragments and capitalised word lists ("SFSFing The Baylings' new film, Grizz Bear Sutter").
#: - 10x, the paper's setting, repeats one token ("California SF SF SF SF ...").
#: Features that fire on a name's own tokens break down sooner (by 4x: "Maks Maks Maks ..."). The paper's 5-10x
#: was for a far larger model.
DEFAULT_CLAMP_MULTIPLE = 2.0
#: ``generate``'s repetition penalty used by `steer` (and the steering panel) unless told otherwise.
DEFAULT_REPETITION_PENALTY = 1.2
#: Past this multiple of max activation a strength is allowed but warned about: text is usually gibberish.
ABSURD_MULTIPLE = 20.0

Mode = Literal["clamp", "add"]
Units = Literal["max", "activation"]


@dataclass(eq=False)
class SteeringResult:
    """Continuations of ``prompts`` without and with the intervention.

    Attributes:
        prompts: the prompts.
        default: their continuations without intervention (empty strings when ``include_default=False``).
        steered: their continuations with it.
        clamps: feature -> the activation value clamped to (``mode="clamp"``) or added along the decoder
            direction (``mode="add"``), in activation units.
        mode: ``"clamp"``, ``"add"`` or ``"vector"``.
        judgement: with ``steer(..., terms=...)``, how each continuation was judged (`judge_steering`).
    """

    prompts: list[str]
    default: list[str]
    steered: list[str]
    clamps: dict[int, float]
    mode: str = "clamp"
    settings: dict[str, Any] = field(default_factory=dict)
    judgement: Any = None

    @property
    def hit_rate(self) -> float | None:
        """The fraction of prompts steered to the terms (mention, fluent, default did not); None if not judged."""
        return None if self.judgement is None else self.judgement.rate

    def __repr__(self) -> str:
        lines = [f"SteeringResult({self.mode} {self.clamps or self.settings.get('alpha')})"]
        if self.judgement is not None:
            lines[0] += (
                f"  hit rate {sum(self.judgement.success)}/{len(self.prompts)} on these prompts "
                f"(mentions {list(self.judgement.terms)}, fluent, default did not)"
            )
        for p, d, s in zip(self.prompts, self.default, self.steered):
            lines += [f"  {p!r}", f"    default: {d!r}", f"    steered: {s!r}"]
        return "\n".join(lines)


def _strengths(sae: SAE, features: Mapping[int, float] | int | Sequence[int]) -> dict[int, float]:
    pairs: Iterable[tuple[Any, float]]  # features are checked by check_feature below, whatever they are
    if isinstance(features, Mapping):
        pairs = features.items()
    elif isinstance(features, (int, torch.Tensor)) or hasattr(features, "__index__"):
        pairs = [(features, DEFAULT_CLAMP_MULTIPLE)]
    else:
        pairs = [(f, DEFAULT_CLAMP_MULTIPLE) for f in features]
    out = {check_feature(sae, f): check_finite(v, f"The strength of feature {f}") for f, v in pairs}
    if not out:
        raise ValueError("steer() got no features: pass {feature: multiple_of_max, ...}.")
    return out


def clamp_values(
    sae: SAE, features: Mapping[int, float] | int | Sequence[int], stats: FeatureStats | None, units: Units, mode: Mode
) -> dict[int, float]:
    """Activation values to clamp to (or add) per feature, from strengths in ``units``; warns on absurd ones."""
    strengths = _strengths(sae, features)
    if units not in ("max", "activation"):
        raise ValueError(f"units={units!r} is not understood: use 'max' (multiples of max activation) or 'activation'.")
    if stats is not None:
        stats.check_matches(sae)
    if units == "max" and stats is None:
        raise ValueError(
            "Strengths in units='max' are multiples of each feature's max activation, which comes from "
            "feature statistics: pass stats=feature_stats(...), or units='activation' for raw values."
        )
    values = {}
    for i, s in strengths.items():
        max_act = float(stats.max_act[i]) if stats is not None else math.nan
        if units == "max" and max_act <= 0:
            raise ValueError(
                f"Feature {i} never fired in the statistics corpus (max activation 0), so a multiple of "
                "its max means nothing: pass units='activation' and a value."
            )
        values[i] = s * max_act if units == "max" else s
        multiple = s if units == "max" else s / max_act
        if mode == "clamp" and values[i] < 0:
            warnings.warn(
                f"Clamping feature {i} to a negative activation ({values[i]:.3g}): SAE activations are never "
                "negative, so this pushes the residual somewhere the SAE never saw.",
                stacklevel=3,
            )
        if abs(multiple) > ABSURD_MULTIPLE:
            warnings.warn(
                f"Steering feature {i} at {multiple:.3g}x its max activation: past ~{ABSURD_MULTIPLE:g}x the "
                f"text is usually gibberish (default {DEFAULT_CLAMP_MULTIPLE}x).",
                stacklevel=3,
            )
    return values


def intervention_delta(
    sae: SAE, hidden: torch.Tensor, values: dict[int, float], mode: Mode, directions: torch.Tensor | None
) -> torch.Tensor:
    """What the intervention adds to residuals ``hidden [B, T, d]``: ``decode(f') - decode(f)`` or ``sum v d``.

    Exactly zero when the clamp values equal the natural activations, so the text is then unchanged.
    """
    index = torch.tensor(list(values))
    target = torch.tensor(list(values.values()), dtype=hidden.dtype)
    if mode == "add":
        assert directions is not None, "mode 'add' adds the features' decoder directions: its callers pass them"
        return (target[:, None] * directions.to(hidden.dtype)).sum(0).expand_as(hidden)
    f = sae.encode(hidden.to(sae.W_dec.dtype))
    clamped = f.clone()
    clamped[..., index] = target.to(f.dtype)
    return (sae.decode(clamped) - sae.decode(f)).to(hidden.dtype)


def steer(
    model: ModelHandle,
    sae: SAE,
    prompts: str | Sequence[str],
    features: Mapping[int, float] | int | Sequence[int],
    stats: FeatureStats | None = None,
    mode: Mode = "clamp",
    units: Units = "max",
    max_new_tokens: int = 30,
    temperature: float = 0.0,
    seed: int = 0,
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY,
    layer: int | str | None = None,
    include_default: bool = True,
    terms: str | Sequence[str] | None = None,
    fluency: Any = None,
    cancel: CancelSignal | None = None,
    check_provenance: bool = True,
) -> SteeringResult:
    """Continue ``prompts`` with ``features`` clamped (or added) at every token, next to the default continuation.

    Args:
        features: ``{feature: strength}``; a bare feature (or list) uses `DEFAULT_CLAMP_MULTIPLE`.
        stats: feature statistics of this SAE (for max activations; needed with ``units="max"``).
        mode: ``"clamp"`` sets the features' activations (error term kept); ``"add"`` adds
            ``strength x max x decoder direction`` to the residual whatever the feature was doing.
        units: ``"max"``: strengths are multiples of each feature's max activation; ``"activation"``: raw values.
        max_new_tokens: tokens generated per prompt (exactly this many; EOS does not stop early).
        temperature: 0 for greedy decoding, else sampling at this temperature with ``seed``.
        repetition_penalty: HF ``generate``'s penalty on tokens already in the text (1 = none). A steered
            small model falls into loops ("the bridge and the bridge and ...") long before it stops making sense;
            a mild penalty, as Neuronpedia's steering applies, keeps it writing sentences. Default and steered rows
            get the same penalty.
        layer: the block the SAE reads (default: ``sae.cfg.layer``).
        include_default: also generate the unsteered continuations (in the same batch).
        terms: what the steered text should say: when given, each continuation is judged (`judge_steering`) and
            the result carries ``judgement`` and ``hit_rate``. Needs ``include_default``.
        fluency: the fluency bar for that (a `calibrate_fluency` result or nats per token); default: calibrated
            once per model on the selection prompts (`default_fluency`).
        cancel: a `threading.Event` (see `saewidgets.cancel`): checked before every new token; once set, the
            generation stops and raises `saewidgets.cancel.Cancelled`.
        check_provenance: refuse an SAE trained on another model or layer (False: steer with it anyway).
    """
    layer = sae_layer(model, sae, layer, check_provenance)
    if mode not in ("clamp", "add"):
        raise ValueError(f"mode={mode!r} is not understood: use 'clamp' or 'add'.")
    _check_generation(max_new_tokens, temperature, repetition_penalty)
    prompts = _as_prompts(prompts)
    values = clamp_values(sae, features, stats, units, mode)
    directions = decoder_directions(sae, list(values)) if mode == "add" else None
    if model.remote:  # the request carries only the steered features' rows, never the whole SAE
        edit: Any = FeatureEdit.of(sae, values, mode)
    else:
        edit = partial(intervention_delta, sae, values=values, mode=mode, directions=directions)
    default, steered_texts = _generate(
        model,
        prompts,
        layer,
        edit,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        repetition_penalty=repetition_penalty,
        include_default=include_default,
        cancel=cancel,
    )
    settings = {
        "units": units,
        "layer": layer,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "seed": seed,
        "repetition_penalty": repetition_penalty,
        "strengths": _strengths(sae, features),
    }
    judgement = _judge(model, prompts, default, steered_texts, terms, fluency, include_default, max_new_tokens)
    return SteeringResult(prompts, default, steered_texts, values, mode, settings, judgement)


@dataclass(eq=False)
class AddVector:
    """The edit `steer_vector` makes: add ``delta [d]`` to every residual (a plain object, so a remote request
    can carry it)."""

    delta: torch.Tensor

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.delta.to(hidden.device, hidden.dtype).expand_as(hidden)


def steer_vector(
    model: ModelHandle,
    prompts: str | Sequence[str],
    vector: Any,
    alpha: float,
    max_new_tokens: int = 30,
    temperature: float = 0.0,
    seed: int = 0,
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY,
    include_default: bool = True,
    terms: str | Sequence[str] | None = None,
    fluency: Any = None,
    cancel: CancelSignal | None = None,
) -> SteeringResult:
    """Continue ``prompts`` with a steering vector added at every token, next to the default continuation.

    Args:
        vector: a `SteeringVector` (e.g. DiffMean, `steering_vector`); it is added after its own layer.
        alpha: strength in median residual norms: each residual gets ``alpha x vector.median_norm x direction``.
        Others as `steer` (``terms`` judges the continuations and fills ``hit_rate``).

    The result's ``clamps`` is empty and ``mode`` is ``"vector"``; ``settings`` records ``alpha``.
    """
    alpha = check_finite(alpha, "alpha")
    _check_generation(max_new_tokens, temperature, repetition_penalty)
    if getattr(vector, "model_name", None) and vector.model_name != model.name:
        warnings.warn(
            f"This steering vector was computed on {vector.model_name!r} residuals but the model is {model.name!r}.",
            stacklevel=2,
        )
    layer = model.resolve_layer(vector.layer)
    prompts = _as_prompts(prompts)
    default, steered_texts = _generate(
        model,
        prompts,
        layer,
        AddVector(vector.delta(alpha)),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        repetition_penalty=repetition_penalty,
        include_default=include_default,
        cancel=cancel,
    )
    settings = {
        "alpha": alpha,
        "layer": layer,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "seed": seed,
        "repetition_penalty": repetition_penalty,
    }
    judgement = _judge(model, prompts, default, steered_texts, terms, fluency, include_default, max_new_tokens)
    return SteeringResult(prompts, default, steered_texts, {}, "vector", settings, judgement)


@dataclass(eq=False)
class RowGroups:
    """Several edits in one batch: ``edits[i]`` edits rows ``[i * size, (i + 1) * size)``."""

    edits: list[Any]
    size: int

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.cat([edit(hidden[i * self.size : (i + 1) * self.size]) for i, edit in enumerate(self.edits)])


#: Rows per ``generate`` call when `steer_each` batches several interventions, at most.
MAX_BATCH_ROWS = 64
#: Bytes of one decoding step's float32 logits a `steer_each` call may hold (``rows x vocabulary x 4``; the logits
#: processors copy them): 32 rows of Gemma's 262k-token vocabulary, 64 (`MAX_BATCH_ROWS`) of GPT-2's.
GENERATION_LOGITS_BUDGET = 2**25


def rows_per_generate(model: ModelHandle) -> int:
    """Rows `steer_each` generates in one call: `MAX_BATCH_ROWS`, fewer where each step's logits would pass
    `GENERATION_LOGITS_BUDGET` (at least one)."""
    return max(1, min(MAX_BATCH_ROWS, GENERATION_LOGITS_BUDGET // (4 * model.vocab_size)))


def steer_each(
    model: ModelHandle,
    sae: SAE,
    prompts: str | Sequence[str],
    interventions: Sequence[Mapping[int, float]],
    stats: FeatureStats | None = None,
    mode: Mode = "clamp",
    units: Units = "max",
    max_new_tokens: int = 30,
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY,
    layer: int | str | None = None,
    check_provenance: bool = True,
    progress: bool | str = False,
) -> list[list[str]]:
    """The steered continuations of ``prompts`` under each of ``interventions`` (``{feature: strength}`` each, as
    `steer`), greedy, from as few batched ``generate`` calls as `rows_per_generate` allows (whole interventions per
    call, at least one): trying several features or strengths costs far less than one `steer` call each, and the
    memory stays bounded however many are tried. Returns one list of continuations per intervention.
    ``check_provenance=False`` steers with an SAE recorded for another model or layer, as in `steer`.
    ``progress``: a bar counting the interventions generated, when they take more than one call (a string names
    the bar; True: "steering")."""
    layer = sae_layer(model, sae, layer, check_provenance)
    if mode not in ("clamp", "add"):
        raise ValueError(f"mode={mode!r} is not understood: use 'clamp' or 'add'.")
    _check_generation(max_new_tokens, 0.0, repetition_penalty)
    prompts = _as_prompts(prompts)
    edits: list[Callable[[torch.Tensor], torch.Tensor]] = []
    for features in interventions:
        values = clamp_values(sae, features, stats, units, mode)
        if model.remote:
            edits.append(FeatureEdit.of(sae, values, mode))
        else:
            directions = decoder_directions(sae, list(values)) if mode == "add" else None
            edits.append(partial(intervention_delta, sae, values=values, mode=mode, directions=directions))
    per_call = max(1, rows_per_generate(model) // len(prompts))
    out: list[list[str]] = []
    with tqdm(
        total=len(edits),
        desc=progress if isinstance(progress, str) else "steering",
        unit="clamp",
        disable=not progress or len(edits) <= per_call,
    ) as bar:
        for start in range(0, len(edits), per_call):
            group = edits[start : start + per_call]
            _, texts = _generate_batch(
                model,
                prompts * len(group),
                layer,
                RowGroups(group, len(prompts)),
                max_new_tokens=max_new_tokens,
                temperature=0.0,
                seed=0,
                repetition_penalty=repetition_penalty,
                include_default=False,
            )
            out += [texts[i * len(prompts) : (i + 1) * len(prompts)] for i in range(len(group))]
            bar.update(len(group))
    return out


def generate(
    model: ModelHandle,
    prompts: str | Sequence[str],
    max_new_tokens: int = 30,
    temperature: float = 0.0,
    seed: int = 0,
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY,
    cancel: CancelSignal | None = None,
) -> list[str]:
    """The model's own continuations of ``prompts``, decoded exactly as `steer` decodes its default rows
    (``cancel`` as in `steer`)."""
    _check_generation(max_new_tokens, temperature, repetition_penalty)
    prompts = _as_prompts(prompts)
    _, texts = _generate(
        model,
        prompts,
        0,
        None,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        repetition_penalty=repetition_penalty,
        include_default=False,
        cancel=cancel,
    )
    return texts


def _judge(
    model: ModelHandle,
    prompts: list[str],
    default: list[str],
    steered: list[str],
    terms: Any,
    fluency: Any,
    include_default: bool,
    max_new_tokens: int,
) -> Any:
    """`judge_steering` of a steering run when ``terms`` were given, else None."""
    if terms is None:
        return None
    if not include_default:
        raise ValueError(
            "Judging steered text against terms compares it with the default continuation: "
            "pass include_default=True (or no terms)."
        )
    from .steering_judge import default_fluency, judge_steering

    fluency = default_fluency(model, max_new_tokens) if fluency is None else fluency
    return judge_steering(model, prompts, default, steered, terms, fluency)


def _check_generation(max_new_tokens: int, temperature: float, repetition_penalty: float) -> None:
    whole_number("max_new_tokens", max_new_tokens, 1)
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be 0 (greedy) or positive, got {temperature}.")
    if not (math.isfinite(repetition_penalty) and repetition_penalty > 0):
        raise ValueError(f"repetition_penalty must be positive (1 = none), got {repetition_penalty}.")


def _as_prompts(prompts: str | Sequence[str]) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("steer() got no prompts.")
    return prompts


def _generate(
    model: ModelHandle,
    prompts: list[str],
    layer: int,
    edit: Any,
    *,
    seed: int,
    include_default: bool,
    **options: Any,
) -> tuple[list[str], list[str]]:
    """`_generate_batch` over ``prompts`` in as few calls of at most `rows_per_generate` rows as there can be, of
    near-equal size: each step's logits are ``rows x vocabulary`` floats, copied several times by ``generate``
    (Gemma's 262k-token vocabulary: a 48-row call held ~365 MB above the loaded model, a 16-row call ~133 MB), so
    however many prompts are steered the memory stays bounded. Greedy continuations do not depend on the split
    (checked on Gemma); sampled ones use ``seed + i`` for the ``i``-th call. ``options``: `_generate_batch`'s."""
    per_call = max(1, rows_per_generate(model) // (2 if include_default else 1))
    calls = -(-len(prompts) // per_call)
    size = -(-len(prompts) // calls)
    default: list[str] = []
    edited: list[str] = []
    for i, start in enumerate(range(0, len(prompts), size)):
        part = _generate_batch(
            model,
            prompts[start : start + size],
            layer,
            edit,
            seed=seed + i,
            include_default=include_default,
            **options,
        )
        default += part[0]
        edited += part[1]
    return default, edited


def _generate_batch(
    model: ModelHandle,
    prompts: list[str],
    layer: int,
    edit: Any,
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    repetition_penalty: float,
    include_default: bool,
    cancel: CancelSignal | None = None,
) -> tuple[list[str], list[str]]:
    """Default and edited continuations of ``prompts`` from one batched ``generate`` (rows ``[prompts; prompts]``,
    only the second half edited; without ``include_default`` only the edited rows). ``edit=None``: no edit."""
    n = len(prompts)
    ids, attention = left_padded_batch(model, prompts * 2 if include_default else prompts, reserve=max_new_tokens)
    first = len(ids) if edit is None else (n if include_default else 0)
    prompt_mask = content_mask(model, ids, attention)[first:, :, None].to(model.device)
    sampling: dict[str, bool | float] = (
        {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    )
    if repetition_penalty != 1.0:
        sampling["repetition_penalty"] = repetition_penalty
    if temperature > 0:
        torch.manual_seed(seed)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else model.tokenizer.eos_token_id
    result = steered_generate(
        model,
        layer,
        edit if edit is not None else torch.zeros_like,
        ids,
        attention,
        max_new_tokens=max_new_tokens,
        first=first,
        prompt_mask=prompt_mask,
        pad_token_id=pad,
        cancel=cancel,
        **sampling,
    )
    texts = model.tokenizer.batch_decode(result[:, ids.shape[1] :], skip_special_tokens=True)
    return (texts[:n], texts[n:]) if include_default else ([""] * n, texts)
