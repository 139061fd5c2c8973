"""Models on NDIF (the National Deep Inference Fabric) through nnsight: API key, clear errors, small requests.

A remote `ModelHandle` (``load_model("<hf id>", remote=True)``) runs every trace on NDIF; only ``.save()``d values
come back. saewidgets keeps requests small by running the SAE here, on saved residuals (`harvest`, attribution),
and by shipping only what an intervention needs: `FeatureEdit` carries the encoder columns and decoder rows of
the steered features (a few KB), never the SAE (megabytes). `steered_generate` is the batched generate with an
edit at one block that `saewidgets.analysis.steer` uses, locally or remotely.

``remote="local"`` (nnsight's local simulation) serializes each trace exactly as NDIF would and runs it here: the
tests use it to exercise the remote path offline.

The API key comes from ``NDIF_API_KEY`` or nnsight's config (``nnsight.CONFIG.set_default_api_key``); saewidgets
never prints, logs or stores it, and scrubs it from any error message it re-raises.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from .cancel import CancelSignal, check_cancel
from .models.handle import ModelHandle, residual_of, with_residual

if TYPE_CHECKING:
    from .sae import SAE

KEY_URL = "https://login.ndif.us"
_HIDDEN = "<NDIF_API_KEY>"


class RemoteModelError(RuntimeError):
    """A remote (NDIF) model could not be used: missing key, unknown model, time-out or server failure."""


def api_key() -> str | None:
    """The NDIF API key from ``NDIF_API_KEY`` or nnsight's config, or None."""
    from nnsight import CONFIG

    return os.environ.get("NDIF_API_KEY") or CONFIG.API.APIKEY or None


def require_api_key() -> None:
    """Raise `RemoteModelError` saying how to set a key when there is none."""
    if not api_key():
        raise RemoteModelError(
            "Running a model on NDIF needs an API key, and none is set. Get one at "
            f"{KEY_URL}, then either set the environment variable NDIF_API_KEY or run once "
            "`import nnsight; nnsight.CONFIG.set_default_api_key('...')`. "
            "(load_model() without remote=True runs models locally instead.)"
        )


def scrub(text: str) -> str:
    """``text`` with the API key, if any, replaced by a placeholder."""
    key = api_key()
    return text.replace(key, _HIDDEN) if key else text


def _is_transport_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from talking to NDIF (not from the user's own code inside a trace)."""
    from nnsight.intervention.backends.remote import RemoteError

    if isinstance(exc, (RemoteError, TimeoutError, ConnectionError)):
        return True
    return type(exc).__module__.split(".")[0] in ("httpx", "httpcore", "websocket")


def translate_error(exc: BaseException, model_name: str) -> RemoteModelError | None:
    """A `RemoteModelError` that says what went wrong with a remote trace of ``model_name`` and what to do,
    or None when ``exc`` is not about NDIF (it then propagates unchanged)."""
    if not _is_transport_error(exc):
        return None
    detail = scrub(f"{type(exc).__name__}: {exc}")
    lowered = detail.lower()
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if "timeout" in lowered or "timed out" in lowered or isinstance(exc, TimeoutError):
        return RemoteModelError(
            f"NDIF did not run the request for {model_name!r} in time (the job waited in the queue or ran too long: "
            f"{detail}). Try again later, send fewer prompts or tokens per call, or check https://ndif.us/status."
        )
    if status in (401, 403) or "api key" in lowered or "unauthorized" in lowered:
        return RemoteModelError(
            f"NDIF refused the API key ({detail}). Check NDIF_API_KEY (get a key at {KEY_URL}); "
            "some models also need you to accept their licence on the Hugging Face hub first."
        )
    if status == 404 or "not found" in lowered or "not hosted" in lowered or "no model" in lowered:
        return RemoteModelError(
            f"NDIF does not host {model_name!r} ({detail}). See which models it serves with "
            "`nnsight.ndif.status()` or https://ndif.us, or load the model locally with load_model(..., remote=False)."
        )
    return RemoteModelError(f"The remote run of {model_name!r} on NDIF failed: {detail}")


@dataclass(eq=False)
class FeatureEdit:
    """A steering edit of a few SAE features that carries only their rows: what a remote request ships.

    Called on residuals ``hidden [..., d]``, it returns what to add to them. ``mode="clamp"`` sets each feature's
    activation to its value with the SAE error term kept, i.e. adds ``sum_i (value_i - f_i(h)) * decoder_i``;
    ``mode="add"`` adds ``sum_i value_i * decoder_i``. ``f_i(h)`` is computed from feature i's own encoder column
    (ReLU, and its threshold for JumpReLU / BatchTopK). For a TopK SAE that is exact wherever the feature is among a
    token's top k and otherwise counts it as firing at ReLU(pre-activation) instead of 0: computing the top k would
    need the whole encoder in the request.

    Attributes:
        features: ``[n]`` feature indices; values: ``[n]`` activation values to clamp to (or add).
        W_enc: ``[d, n]`` their encoder columns; b_enc, threshold: ``[n]``; W_dec: ``[n, d]`` their decoder rows.
        b_dec: ``[d]``; input_scale: the SAE's input scale; subtract_b_dec: whether encoding subtracts ``b_dec``.
    """

    features: torch.Tensor
    values: torch.Tensor
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    threshold: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    input_scale: float
    subtract_b_dec: bool
    clamp: bool

    @classmethod
    def of(cls, sae: SAE, values: Mapping[int, float], mode: str = "clamp") -> "FeatureEdit":
        """The edit setting (``"clamp"``) or adding (``"add"``) ``values`` (feature -> activation) of ``sae``."""
        if mode not in ("clamp", "add"):
            raise ValueError(f"mode={mode!r} is not understood: use 'clamp' or 'add'.")
        index = torch.tensor([int(f) for f in values], dtype=torch.long)
        n_features = sae.W_dec.shape[0]
        if index.numel() == 0 or bool(((index < 0) | (index >= n_features)).any()):
            raise ValueError(f"FeatureEdit needs features in [0, {n_features}), got {sorted(values)}.")
        threshold = getattr(sae, "threshold", None)
        with torch.no_grad():
            return cls(
                features=index,
                values=torch.tensor([float(v) for v in values.values()]),
                W_enc=sae.W_enc[:, index].detach().float().clone(),
                b_enc=sae.b_enc[index].detach().float().clone(),
                threshold=(
                    threshold[index].detach().float().clone() if threshold is not None else torch.zeros(len(index))
                ),
                W_dec=sae.W_dec[index].detach().float().clone(),
                b_dec=sae.b_dec.detach().float().clone(),
                input_scale=float(sae.cfg.input_scale),
                subtract_b_dec=bool(sae.cfg.apply_b_dec_to_input),
                clamp=mode == "clamp",
            )

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data this edit carries (what a request grows by)."""
        return sum(
            t.numel() * t.element_size()
            for t in (self.features, self.values, self.W_enc, self.b_enc, self.threshold, self.W_dec, self.b_dec)
        )

    def activations(self, hidden: torch.Tensor) -> torch.Tensor:
        """The features' activations ``[..., n]`` on raw residuals ``hidden [..., d]``."""
        x = hidden.float() * self.input_scale
        if self.subtract_b_dec:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        return torch.relu(pre) * (pre > self.threshold)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        target = self.values - self.activations(hidden) if self.clamp else self.values.expand(*hidden.shape[:-1], -1)
        return ((target @ self.W_dec) / self.input_scale).to(hidden.dtype)


def steered_generate(
    model: ModelHandle,
    layer: int,
    edit: Callable[[torch.Tensor], torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    first: int = 0,
    prompt_mask: torch.Tensor | None = None,
    cancel: CancelSignal | None = None,
    **generate_kwargs: Any,
) -> torch.Tensor:
    """Generate exactly ``max_new_tokens`` tokens for a left-padded batch, adding ``edit(h)`` to the residual
    ``h`` after block ``layer`` of rows ``first:`` at every step; returns ``[B, prompt + new]`` token ids.

    Runs where ``model`` runs: on NDIF when ``model.remote`` (then ``edit`` is serialized into the request, so
    pass a `FeatureEdit`, not a function holding the whole SAE). ``prompt_mask [B - first, T, 1]`` limits the edit
    on the prompt pass (e.g. to leave BOS and padding alone); generated tokens are always edited.
    ``generate_kwargs`` go to ``generate`` (``do_sample``, ``temperature``, ``pad_token_id``, ...).
    ``cancel`` (see `saewidgets.cancel`) is checked before every new token; a remote request only before it is
    sent and after it returns (the signal cannot travel with it).
    """
    block = model.block(layer)
    check_cancel(cancel, "the generation")
    stop = None if model.remote else cancel
    if model.remote or generate_kwargs.get("do_sample"):
        # HF's own processors: NDIF runs what it can serialize, and sampling's warpers must come after the penalty
        generate_kwargs["min_new_tokens"] = max_new_tokens
    else:
        from transformers import LogitsProcessorList

        from .models.decoding import GreedySteps, end_of_sequence_ids

        steps = GreedySteps(generate_kwargs.pop("repetition_penalty", 1.0), end_of_sequence_ids(model.hf))
        generate_kwargs["logits_processor"] = LogitsProcessorList([steps])
    try:
        with model.lock, torch.no_grad():
            with model.nn.generate(
                {"input_ids": input_ids, "attention_mask": attention_mask},
                max_new_tokens=max_new_tokens,
                **generate_kwargs,
                **model.trace_kwargs,
            ) as tracer:
                for step in tracer.iter[:max_new_tokens]:
                    if stop is not None and stop.is_set():
                        raise InterruptedError  # a builtin: the body must stay serializable for NDIF
                    out = block.output
                    hidden = residual_of(out)
                    delta = edit(hidden[first:])
                    if step == 0 and prompt_mask is not None:
                        delta = delta * prompt_mask
                    block.output = with_residual(out, torch.cat([hidden[:first], hidden[first:] + delta]))
                result = tracer.result.save()
    except InterruptedError:
        check_cancel(cancel, "the generation")
        raise
    check_cancel(cancel, "the generation")
    return result
