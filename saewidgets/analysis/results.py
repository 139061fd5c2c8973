"""Typed results: small frozen dataclasses that go to JSON with ``to_dict()`` (for files and the static page).

Each also reads like the dict it replaces (``hit["feature"]``, ``hit.get("example")``, ``dict(hit)``), so code
written against the dict results keeps working; new code uses the attributes, which editors and type checkers see.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import Field, asdict, dataclass, fields
from typing import Any, ClassVar, Protocol


class Record(Mapping[str, Any]):
    """Base of the result dataclasses: ``to_dict()``, and read-only mapping access to the fields by name."""

    #: Set by ``@dataclass`` on each subclass; declared here so type checkers know a `Record` is a dataclass.
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (``json.dumps`` takes it)."""
        return asdict(self)

    def __getitem__(self, name: str) -> Any:
        if name not in self._names():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))


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


class SteeringOutcome(Protocol):
    """What `steer` returns (`SteeringResult`): continuations without and with the clamp, and the clamps."""

    prompts: list[str]
    default: list[str]
    steered: list[str]
    clamps: dict[int, float]


@dataclass(frozen=True, eq=True)
class SteeringExample(Record):
    """A steering run worth showing: which feature was clamped how hard, and what the model said without and with
    the clamp. The demo's examples, and what `Explorer.show_steering` shows."""

    feature: int
    """The clamped feature."""
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

    def __post_init__(self) -> None:
        for name in ("prompts", "default", "steered"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "feature", int(self.feature))
        object.__setattr__(self, "multiple", float(self.multiple))

    @classmethod
    def from_result(cls, result: SteeringOutcome, multiple: float, **details: Any) -> SteeringExample:
        """The example of a `steer` result that clamped one feature at ``multiple`` x its max activation."""
        if len(result.clamps) != 1:
            raise ValueError(
                f"A steering example shows one clamped feature; this result clamps {len(result.clamps)} "
                f"({sorted(result.clamps)}): steer one feature at a time."
            )
        return cls(
            next(iter(result.clamps)),
            multiple,
            tuple(result.prompts),
            tuple(result.default),
            tuple(result.steered),
            **details,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SteeringExample:
        """Read back what `to_dict` wrote (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
