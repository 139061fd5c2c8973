"""Greedy decoding's per-step logits processing, in place: the scores HF ``generate``'s repetition penalty and
``min_new_tokens`` give, without their copies of each step's logits.

Each of those two processors copies the step's ``[rows, vocabulary]`` scores: the penalty pads them by a column,
scatters into a copy and slices it; ``min_new_tokens`` clones them and masks the end-of-sequence ids with a
``where`` over the whole vocabulary. With Gemma's 262k-token vocabulary that is ~1 MB per row and copy, several
times a step; under a fixed mmap threshold (`saewidgets.models._memory.return_large_blocks`) each copy is a fresh
mapping whose pages are faulted in. `GreedySteps` writes the same values into the scores it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, RepetitionPenaltyLogitsProcessor


class GreedySteps(LogitsProcessor):
    """HF's ``repetition_penalty`` (scores of tokens already in the text: divided by ``penalty`` where positive,
    multiplied where negative) and ``min_new_tokens`` equal to ``max_new_tokens`` (the ``never`` ids, the
    end-of-sequence ones, get -inf), applied in place.

    For greedy decoding only: HF applies sampling's warpers (temperature, top-k) before a processor passed to
    ``generate``, and after its own penalty."""

    def __init__(self, penalty: float, never: Sequence[int] = ()) -> None:
        self.penalty = float(penalty)
        self.never = torch.tensor(sorted({int(i) for i in never}), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.penalty != 1.0:
            if int(input_ids.max()) >= scores.shape[-1]:  # ids past the LM head (a padded embedding): HF's own way
                scores = RepetitionPenaltyLogitsProcessor(self.penalty)(input_ids, scores)
            else:
                seen = scores.gather(1, input_ids)
                penalised = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
                scores.scatter_(1, input_ids, penalised)
        if len(self.never):
            scores.index_fill_(1, self.never.to(scores.device), -math.inf)
        return scores


def end_of_sequence_ids(hf_model: torch.nn.Module) -> list[int]:
    """The ids ``generate`` stops at for this model (its generation config's ``eos_token_id``; none when unset)."""
    config = getattr(hf_model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(i) for i in eos]
