"""Typed results: small frozen dataclasses that go to JSON with ``to_dict()`` (for files and the static page).

Each also reads like the dict it replaces (``hit["feature"]``, ``hit.get("example")``, ``dict(hit)``), so code
written against the dict results keeps working; new code uses the attributes, which editors and type checkers see.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import Field, dataclass, fields
from typing import Any, ClassVar, Protocol


class Record(Mapping[str, Any]):
    """Base of the result dataclasses: ``to_dict()``, and read-only mapping access to the fields by name."""

    #: Set by ``@dataclass`` on each subclass; declared here so type checkers know a `Record` is a dataclass.
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, nested results as dicts too (``json.dumps`` takes it)."""
        return {name: _plain(getattr(self, name)) for name in self._names()}

    def __getitem__(self, name: str) -> Any:
        if name not in self._names():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> tuple[str, ...]:
        return _field_names(type(self))


@functools.cache
def _field_names(cls: type[Record]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


_ATOMIC = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    """``value`` with every `Record` in it as its dict, and new lists, tuples and dicts around them (as
    ``dataclasses.asdict`` copies; the leaves are immutable numbers and strings, shared). A static page converts
    millions of values, so a list of plain values is copied without a Python call per item."""
    kind = type(value)
    if kind in _ATOMIC:  # before the `Record` check: a Mapping ABC's isinstance is slow, and most values are leaves
        return value
    if kind is list or kind is tuple:
        return kind(value) if _ATOMIC.issuperset(map(type, value)) else kind(_plain(v) for v in value)
    if isinstance(value, Record):
        return value.to_dict()
    if kind is dict:
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, eq=True)
class ContextHit(Record):
    """A feature whose top contexts contain a searched phrase (`search_contexts`)."""

    feature: int
    """The feature's index."""
    fraction: float
    """Share of its top-context slots whose text contains the phrase (all slots counted, filled or not)."""
    n_contexts: int
    """How many top contexts it has."""
    max_act: float
    """Its largest activation over the corpus."""
    density: float
    """Fraction of corpus tokens on which it fires."""
    example: str
    """The text of its highest matching context."""


# Nested results are small frozen dataclasses that compare equal to the dicts they replaced (``eq=False`` keeps
# `Mapping`'s equality: same keys, same values), so rows read back from JSON, or written by hand, compare with them.


@dataclass(frozen=True, eq=False)
class ContextExample(Record):
    """One activating context of a feature (`FeatureStats.top_examples`, the card's ``top`` and quantile bands).
    Tokens are raw strings from the corpus: escape them before they become HTML."""

    tokens: list[str]
    """The window of tokens around the activating one, clipped to its document."""
    acts: list[float]
    """The feature's activation on each of them."""
    center: int
    """Index in ``tokens`` of the activating token."""
    value: float
    """Its activation (``acts[center]``)."""


@dataclass(frozen=True, eq=False)
class QuantileBand(Record):
    """Contexts sampled from one band of a feature's activations (`FeatureStats.quantile_examples`)."""

    label: str
    """The band as fractions of the feature's max activation, e.g. ``"0.80-1.00 of max"``."""
    examples: list[ContextExample]
    """The sampled contexts."""


@dataclass(frozen=True, eq=False)
class Histogram(Record):
    """A feature's non-zero activations binned (`FeatureStats.histogram`)."""

    counts: list[int]
    """Activations per bin."""
    edges: list[float]
    """Bin edges in activation units, one more than ``counts``."""


@dataclass(frozen=True, eq=False)
class TokenLogit(Record):
    """A token a feature promotes or suppresses (`LogitEffects.promoted` / ``suppressed``)."""

    token: str
    """The token's text (raw: escape it before HTML)."""
    value: float
    """Its logit per unit activation, or the logit change at a given activation (the card's ``logit_unit``)."""


@dataclass(frozen=True, eq=False)
class Neighbour(Record):
    """A feature and the cosine of its decoder direction with another's (`FeatureGeometry.neighbours`; in a
    family, `FeatureTree.children`)."""

    feature: int
    """The feature's index."""
    cosine: float
    """Cosine similarity of the two decoder directions."""


@dataclass(frozen=True, eq=False)
class FeatureLabel(Record):
    """A feature's explanation as a view shows it (`Labels.view`)."""

    text: str
    """The explanation (untrusted: escape it before HTML)."""
    kind: str
    """Where it came from: ``"pattern"`` (the statistics, no language model) or ``"llm"``."""


@dataclass(frozen=True, eq=False)
class LabelHit(Record):
    """A feature whose label matched a query (`search_labels`)."""

    feature: int
    """The feature's index."""
    text: str
    """Its label."""
    kind: str
    """Where the label came from: ``"pattern"`` or ``"llm"``."""


@dataclass(frozen=True, eq=False)
class ActiveFeature(Record):
    """A feature that fires on a prompt (`features_active_on`)."""

    feature: int
    """The feature's index."""
    activation: float
    """Its largest activation over the searched span."""
    fraction_of_max: float | None
    """That activation as a fraction of its max over the corpus (None without ``stats``)."""
    position: int
    """Where it peaks: index into the prompt's tokens, BOS not counted."""
    token: str
    """The token there."""


@dataclass(frozen=True, eq=False)
class ContrastHit(Record):
    """A feature active on one prompt but not another (`contrastive_search`)."""

    feature: int
    """The feature's index."""
    score: float
    """Max activation on A minus max on B (as fractions of its max activation when ranked with ``stats``)."""
    activation_a: float
    """Its max activation on prompt A."""
    activation_b: float
    """Its max activation on prompt B."""


@dataclass(frozen=True, eq=False)
class PositionAttribution(Record):
    """One prompt position's share of a feature's attribution (`AttributedFeature.positions`)."""

    position: int
    """Index into the prompt's tokens."""
    token: str
    """The token there."""
    attribution: float
    """The feature's attribution at that position."""


@dataclass(frozen=True, eq=False)
class AttributedFeature(Record):
    """A feature's attribution to a target (`Attribution.top`)."""

    feature: int
    """The feature's index."""
    attribution: float
    """Its attribution summed over positions (gradient x activation)."""
    ablation: float | None
    """The target's change when the feature is ablated, or None when it was not."""
    positions: list[PositionAttribution]
    """The positions where it has non-zero attribution, largest magnitude first."""


class SteeringOutcome(Protocol):
    """What `steer` returns (`SteeringResult`): continuations without and with the clamp, and the clamps."""

    prompts: list[str]
    default: list[str]
    steered: list[str]
    clamps: dict[int, float]


def describe_features(features: Sequence[int]) -> str:
    """How a clamp's features read in a sentence: "feature 3438", or "features 1135+451" for a family."""
    return f"feature {features[0]}" if len(features) == 1 else f"features {'+'.join(map(str, features))}"


@dataclass(frozen=True, eq=True)
class SteeringExample(Record):
    """A steering run worth showing: which feature (or family of features, all at one strength) was clamped how
    hard, and what the model said without and with the clamp. The demo's examples, and what `Explorer.show_steering`
    shows."""

    feature: int
    """The clamped feature (a family's first: the one that steered best alone)."""
    multiple: float
    """Clamp strength as a multiple of the feature's max activation."""
    prompts: tuple[str, ...]
    """The prompts."""
    default: tuple[str, ...]
    """Their continuations without the clamp."""
    steered: tuple[str, ...]
    """Their continuations with it."""
    name: str = ""
    """The concept steered toward, if the example was looked for by concept."""
    output_score: float | None = None
    """How much clamping the feature raised the concept's tokens' log-probability (nats; `steering_search`)."""
    steer_rate: float | None = None
    """Share of `steering_search`'s trial prompts (selection prompts) it steered (`SteeringCandidate.hit_rate`)."""
    hit_rate: float | None = None
    """Measured hit rate on held-out evaluation prompts (`judge_steering`): the one to report."""
    n_evaluation_prompts: int | None = None
    """How many prompts ``hit_rate`` is over."""
    family: tuple[int, ...] = ()
    """Every feature clamped, ``feature`` first, when several were clamped together (`SteeringCandidate.family`);
    empty for one."""

    def __post_init__(self) -> None:
        for name in ("prompts", "default", "steered"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "feature", int(self.feature))
        object.__setattr__(self, "multiple", float(self.multiple))
        object.__setattr__(self, "family", tuple(int(f) for f in self.family))
        if self.family and (len(self.family) < 2 or self.family[0] != self.feature):
            raise ValueError(
                f"A steering example's family lists every feature clamped, its feature first ({self.feature}), and "
                f"has at least two; got {list(self.family)}. Leave it empty for one feature."
            )

    @property
    def features(self) -> tuple[int, ...]:
        """The features clamped: ``family``, or ``(feature,)``."""
        return self.family or (self.feature,)

    @classmethod
    def from_result(cls, result: SteeringOutcome, multiple: float, **details: Any) -> SteeringExample:
        """The example of a `steer` result that clamped one feature, or several together, at ``multiple`` x their
        max activations (``result.clamps``' first feature is the example's ``feature``)."""
        features = tuple(result.clamps)
        if not features:
            raise ValueError("A steering example shows a clamp; this result clamps no feature.")
        return cls(
            features[0],
            multiple,
            tuple(result.prompts),
            tuple(result.default),
            tuple(result.steered),
            family=features if len(features) > 1 else (),
            **details,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SteeringExample:
        """Read back what `to_dict` wrote (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
