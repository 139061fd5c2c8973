"""DiffMean steering vectors: the mean residual on a concept's text minus the mean residual elsewhere.

The simple baseline any SAE steering method has to beat. AxBench (Wu et al., ICML 2025) found difference-in-means
the strongest simple representation baseline for steering, and SAE features not competitive with it. It needs no
SAE: harvest residuals at a layer, mark the rows of text about the concept, subtract the means.

Its strength is given in units of the residual stream's own size: ``alpha`` x the median residual norm over the
harvested rows, along the unit direction, added at every token (BOS excepted) while the model writes. Measured on
Gemma 3 270M at block 12 with the golden_gate documents of the demo corpus (median residual norm ~14k, the raw
difference ~1.9k): alpha 0.25 writes about bridges in general, 0.5 about the Golden Gate Bridge in readable
sentences, 1.0 lists bridge words. Calibrate alpha on selection prompts (`SELECTION_PROMPTS`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..activation_source import ActivationSource

#: Rows summed per chunk (never copies all of a large harvest at once).
CHUNK_ROWS = 16_384


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """A steering direction at one layer, with the scale its strengths are measured in.

    Attributes:
        direction: ``[d]`` unit vector (mean on the concept's rows minus the mean on the others, normalised).
        norm: the length of that difference before normalising.
        median_norm: median residual norm over all rows: ``alpha = 1`` adds a vector this long.
        layer: the block whose residual it was computed on (and is added to).
        model_name: the model the residuals came from.
        n_concept, n_other: rows on each side of the difference.
    """

    direction: torch.Tensor
    norm: float
    median_norm: float
    layer: int
    model_name: str
    n_concept: int
    n_other: int

    def delta(self, alpha: float) -> torch.Tensor:
        """What steering at ``alpha`` adds to each residual: ``alpha x median_norm x direction``, ``[d]``."""
        return float(alpha) * self.median_norm * self.direction

    def __repr__(self) -> str:
        return (
            f"SteeringVector(layer {self.layer}, |diff| {self.norm:.4g} = {self.norm / self.median_norm:.3g} "
            f"median residual norms, {self.n_concept:,} concept rows vs {self.n_other:,})"
        )


def concept_rows(acts: ActivationSource, concept: np.ndarray | torch.Tensor | Iterable[int]) -> np.ndarray:
    """``concept`` as a boolean mask over the rows of ``acts``: a mask already, or the document ids it lists."""
    n = len(acts)
    if isinstance(concept, (np.ndarray, torch.Tensor)) and concept.dtype in (np.bool_, torch.bool):
        mask = np.asarray(concept.cpu() if isinstance(concept, torch.Tensor) else concept, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(
                f"A row mask must have one entry per row of the activations ({n:,}), got shape {tuple(mask.shape)}."
            )
        return mask
    docs = np.asarray(list(concept) if not isinstance(concept, (np.ndarray, torch.Tensor)) else concept.tolist())
    if docs.size and not np.issubdtype(docs.dtype, np.integer):
        raise TypeError(f"concept must be a boolean row mask or document ids (ints), got {docs.dtype} values.")
    return np.isin(acts.doc_ids, docs.astype(np.int64))


@torch.no_grad()
def steering_vector(acts: ActivationSource, concept: np.ndarray | torch.Tensor | Iterable[int]) -> SteeringVector:
    """The DiffMean steering vector of ``concept`` in harvested residuals ``acts`` (`Activations` or a store).

    Args:
        acts: residuals of a corpus at one layer (``harvest``), with their document ids.
        concept: which rows are about the concept: a boolean mask over the rows, or the ids of the documents that
            are (e.g. ``[i for i, d in enumerate(corpus.documents) if d.topic == "golden_gate"]``).

    Returns a `SteeringVector`: mean over the concept's rows minus the mean over all other rows, as a unit
    direction, with the median residual norm as the unit of strength. Steer with `steer_vector`.
    """
    mask = concept_rows(acts, concept)
    n_concept, n_other = int(mask.sum()), int((~mask).sum())
    if n_concept == 0 or n_other == 0:
        side = "the concept" if n_concept == 0 else "everything else"
        raise ValueError(
            f"No rows of {side}: a difference of means needs rows on both sides ({n_concept:,} concept "
            f"rows, {n_other:,} others). Check the mask or the document ids against acts.doc_ids."
        )
    d = acts.d_model
    sums = {True: torch.zeros(d, dtype=torch.float64), False: torch.zeros(d, dtype=torch.float64)}
    norms = []
    for start in range(0, len(acts), CHUNK_ROWS):
        x = acts.torch(slice(start, start + CHUNK_ROWS)).double()
        m = torch.from_numpy(mask[start : start + CHUNK_ROWS])
        sums[True] += x[m].sum(0)
        sums[False] += x[~m].sum(0)
        norms.append(x.norm(dim=1).float())
    diff = sums[True] / n_concept - sums[False] / n_other
    norm = float(diff.norm())
    if norm == 0:
        raise ValueError("The concept's rows have the same mean as the others: there is no direction to steer along.")
    return SteeringVector(
        (diff / norm).float(),
        norm,
        float(torch.cat(norms).median()),
        int(acts.layer),
        str(acts.model_name),
        n_concept,
        n_other,
    )
