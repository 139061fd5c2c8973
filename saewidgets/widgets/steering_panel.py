"""SteeringPanel: clamp a feature to k x its max activation and compare default and steered continuations.

Views only: generation is ``steer_fn(prompt, feature, multiple) -> SteeringResult`` (``default`` and ``steered``
lists of strings), run in a background thread, one at a time, with "generating…" and errors shown in the panel;
Stop drops a running generation (and stops it early where the analysis call takes ``cancel=``).

With ``vector_fn(prompt, alpha) -> SteeringResult`` (e.g. ``steer_vector`` with a DiffMean `steering_vector`) the
same Generate also runs vector steering on the same prompt, shown in a third column beside the feature's: the
baseline a user would pick instead of an SAE feature (AxBench). `SteeringPanel.for_model` wires both to a model.
Each column's heading carries the measured hit rate of what it ran, when the run was judged (``terms``).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

import traitlets as t

from ._base import ViewWidget
from ._jobs import SingleFlight, cancel_kwargs

if TYPE_CHECKING:
    from ..analysis import FeatureStats, SteeringExample, SteeringResult, SteeringVector
    from ..models import ModelHandle
    from ..sae import SAE

#: What the panel shows: a run of `steer` / `steer_vector`, or a saved `SteeringExample`.
Shown = Union["SteeringResult", "SteeringExample"]
SteerFn = Callable[[str, int, float], "SteeringResult"]
VectorFn = Callable[[str, float], "SteeringResult"]
MIN_MULTIPLE = -10.0
MAX_MULTIPLE = 10.0
FALLBACK_CLAMP_MULTIPLE = 5.0
#: Vector strength (median residual norms) the panel starts at, and its slider's range.
DEFAULT_ALPHA = 0.5
MAX_ALPHA = 2.0


def default_clamp_multiple() -> float:
    """``saewidgets.analysis.DEFAULT_CLAMP_MULTIPLE`` (imported lazily: analysis pulls in torch)."""
    try:
        from saewidgets.analysis import DEFAULT_CLAMP_MULTIPLE
    except ImportError:
        return FALLBACK_CLAMP_MULTIPLE
    return float(DEFAULT_CLAMP_MULTIPLE)


def _family(result: Shown) -> list[int]:
    """The features a result clamped together when there were several (a saved example's ``family``, a `steer`
    result's ``clamps``), else []."""
    features = list(getattr(result, "family", None) or getattr(result, "clamps", None) or ())
    return [int(f) for f in features] if len(features) > 1 else []


def _hit_rate(result: Shown) -> float | None:
    """The measured hit rate a result carries (``SteeringResult.hit_rate``, or ``hit_rate`` in a saved example)."""
    rate = getattr(result, "hit_rate", None)
    return None if rate is None else float(rate)


class SteeringPanel(ViewWidget):
    """Feature picker, clamp slider (multiples of the feature's max activation), prompt box, Generate button,
    and default vs steered continuations side by side."""

    _view = "steering_panel"
    feature = t.Int(0).tag(sync=True)
    feature_options = t.List(t.Int()).tag(sync=True)
    multiple = t.Float(FALLBACK_CLAMP_MULTIPLE).tag(sync=True)
    min_multiple = t.Float(MIN_MULTIPLE).tag(sync=True)
    max_multiple = t.Float(MAX_MULTIPLE).tag(sync=True)
    prompt = t.Unicode("").tag(sync=True)
    default_texts = t.List(t.Unicode()).tag(sync=True)
    steered_texts = t.List(t.Unicode()).tag(sync=True)
    steered_multiple = t.Float(None, allow_none=True).tag(sync=True)  # the clamp of the result shown
    steered_feature = t.Int(-1).tag(sync=True)  # the feature of the result shown
    steered_family = t.List(t.Int()).tag(sync=True)  # every feature it clamped, when several were clamped together
    hit_rate = t.Float(None, allow_none=True).tag(sync=True)  # measured hit rate of the result shown, if judged
    has_vector = t.Bool(False).tag(sync=True)  # a vector_fn is set: show the vector column and its slider
    vector_name = t.Unicode("vector").tag(sync=True)  # what the vector is, for the column heading
    alpha = t.Float(DEFAULT_ALPHA).tag(sync=True)  # vector strength, median residual norms
    max_alpha = t.Float(MAX_ALPHA).tag(sync=True)
    vector_texts = t.List(t.Unicode()).tag(sync=True)
    vector_alpha = t.Float(None, allow_none=True).tag(sync=True)  # the strength of the vector result shown
    vector_hit_rate = t.Float(None, allow_none=True).tag(sync=True)
    busy = t.Bool(False).tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    status = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        steer_fn: SteerFn | None = None,
        *,
        feature: int = 0,
        multiple: float | None = None,
        prompt: str = "",
        feature_options: Sequence[int] | None = None,
        result: Shown | None = None,
        background: bool = True,
        vector_fn: VectorFn | None = None,
        vector_name: str = "vector",
        alpha: float = DEFAULT_ALPHA,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.steer_fn = steer_fn
        self.vector_fn = vector_fn
        self.background = background
        self._jobs = SingleFlight(
            on_busy=lambda b: setattr(self, "busy", b), on_error=lambda e: setattr(self, "error", e)
        )
        with self.hold_sync():
            self.feature = int(feature)
            self.multiple = float(default_clamp_multiple() if multiple is None else multiple)
            self.prompt = prompt
            self.has_vector, self.vector_name, self.alpha = vector_fn is not None, vector_name, float(alpha)
            if feature_options is not None:
                self.feature_options = [int(f) for f in feature_options]
        if result is not None:
            self.show_result(result)
        self.on_msg(self._on_frontend_msg)

    @t.validate("multiple")
    def _valid_multiple(self, proposal: dict[str, Any]) -> float:
        m = float(proposal["value"])
        if not (self.min_multiple <= m <= self.max_multiple):
            raise t.TraitError(
                f"multiple: the clamp is a multiple of the feature's max activation between "
                f"{self.min_multiple:g} and {self.max_multiple:g}; got {m:g}."
            )
        return m

    @classmethod
    def for_model(
        cls,
        model: ModelHandle,
        sae: SAE,
        stats: FeatureStats,
        vector: SteeringVector | None = None,
        *,
        terms: str | Sequence[str] | None = None,
        vector_name: str = "DiffMean vector",
        **kwargs: Any,
    ) -> SteeringPanel:
        """A panel that clamps features of ``sae`` on ``model`` (`steer`) and, with ``vector`` (a `SteeringVector`,
        e.g. DiffMean from `steering_vector`), adds it at the same time (`steer_vector`), side by side. With
        ``terms`` both runs are judged (`judge_steering`) and each column shows its hit rate."""
        from saewidgets.analysis import steer, steer_vector

        def steer_fn(prompt: str, feature: int, multiple: float) -> SteeringResult:
            return steer(model, sae, prompt, {feature: multiple}, stats=stats, terms=terms, **cancel_kwargs(steer))

        def vector_fn(prompt: str, alpha: float) -> SteeringResult:
            return steer_vector(model, prompt, vector, alpha, terms=terms, **cancel_kwargs(steer_vector))

        return cls(steer_fn, vector_fn=vector_fn if vector is not None else None, vector_name=vector_name, **kwargs)

    @t.validate("alpha")
    def _valid_alpha(self, proposal: dict[str, Any]) -> float:
        a = float(proposal["value"])
        if not (0 <= a <= self.max_alpha):
            raise t.TraitError(
                f"alpha: the vector's strength in median residual norms, between 0 and {self.max_alpha:g}; got {a:g}."
            )
        return a

    def show_vector_result(self, result: SteeringResult, alpha: float | None = None) -> None:
        """Show a vector-steering result (`steer_vector`) in the vector column, obtained at ``alpha`` (default: the
        slider's)."""
        with self.hold_sync():
            self.vector_texts = [str(s) for s in result.steered]
            self.vector_alpha = self.alpha if alpha is None else float(alpha)
            self.vector_hit_rate = _hit_rate(result)

    def show_result(self, result: Shown, multiple: float | None = None, feature: int | None = None) -> None:
        """Show a `SteeringResult` or `SteeringExample` (``default`` and ``steered`` continuations) obtained by clamping
        ``feature`` (default: the panel's; a result that clamped several features together names them all, its first
        the feature) to ``multiple`` x its max activation (default: the slider's)."""
        family = _family(result)
        with self.hold_sync():
            self.default_texts = [str(s) for s in result.default]
            self.steered_texts = [str(s) for s in result.steered]
            self.steered_multiple = self.multiple if multiple is None else float(multiple)
            self.steered_feature = family[0] if family else self.feature if feature is None else int(feature)
            self.steered_family = family
            self.hit_rate = _hit_rate(result)
            clamped = "+".join(f"#{f}" for f in family or [self.steered_feature])
            self.status = f"{'features' if family else 'feature'} {clamped} at {self.steered_multiple:g}× max" + (
                ""
                if self.hit_rate is None
                else f" · measured hit rate {self.hit_rate:.0%} (mentions the concept, fluent, default did not)"
            )

    def generate(self, wait: bool = False) -> bool:
        """Run ``steer_fn(prompt, feature, multiple)`` and show the result. Returns False (and does nothing) if a
        generation is already running. ``wait=True`` runs in the calling thread."""
        steer_fn = self.steer_fn
        if steer_fn is None:
            self.error = "No steer_fn: pass SteeringPanel(steer_fn=...) to generate."
            return False
        prompt, feature, multiple, alpha = self.prompt, self.feature, self.multiple, self.alpha
        if not prompt.strip():
            self.error = "Type a prompt to continue first."
            return False
        vector_fn = self.vector_fn

        def run() -> tuple[Any, Any]:
            return steer_fn(prompt, feature, multiple), vector_fn(prompt, alpha) if vector_fn else None

        def show(results: tuple[Any, Any]) -> None:
            self.show_result(results[0], multiple, feature)
            if results[1] is not None:
                self.show_vector_result(results[1], alpha)

        started = self._jobs.start(run, show, background=self.background and not wait)
        if not started:
            self.status = "already generating; wait for it to finish"
        return started

    def wait(self, timeout: float | None = None) -> None:
        """Block until the generation in flight (if any) finishes."""
        self._jobs.join(timeout)

    def stop(self) -> bool:
        """Stop the generation in flight (its result is dropped)."""
        return self._jobs.stop()

    def _on_frontend_msg(self, widget: Any, content: dict[str, Any], buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("event") == "generate":
            if self._take_inputs(content):
                self.generate()
        elif content.get("event") == "stop":
            self.stop()

    def _take_inputs(self, content: dict[str, Any]) -> bool:
        """Set the prompt and strengths the page sent with Generate. They travel with the request because a host
        may deliver the page's state update after the message (marimo did: the run used the previous prompt).
        False, with the reason shown, when the panel refuses a value."""
        try:
            with self.hold_sync():
                if "prompt" in content:
                    self.prompt = str(content["prompt"])
                if "multiple" in content:
                    self.multiple = float(content["multiple"])
                if "alpha" in content and self.has_vector:
                    self.alpha = float(content["alpha"])
        except (t.TraitError, TypeError, ValueError) as err:
            self.error = str(err)
            return False
        return True

    def _fallback_html(self) -> str:
        # One cell per column (continuations joined), so the markup's shape never depends on the data.
        default = "\n\n".join(self.default_texts)
        steered = "\n\n".join(self.steered_texts)
        vector = "\n\n".join(self.vector_texts)
        head = f"<th>{html.escape(self.vector_name)}</th>" if self.has_vector else ""
        cell = f"<td><pre>{html.escape(vector)}</pre></td>" if self.has_vector else ""
        return (
            f"<p>Steering feature #{self.feature} at {self.multiple:g}× max (Generate needs a kernel).</p>"
            f"<table><tr><th>Default</th><th>Steered</th>{head}</tr><tr><td><pre>{html.escape(default)}</pre></td>"
            f"<td><pre>{html.escape(steered)}</pre></td>{cell}</tr></table>"
        )
