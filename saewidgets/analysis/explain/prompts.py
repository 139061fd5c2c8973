"""The words sent to language models: the explanation prompt and the detection / fuzzing questions.

Each prompt comes in two forms (`Prompt`): chat messages with instructions, for instruction-tuned endpoints, and a
completion text with a worked example, for base models such as the embedded Gemma 3 270M, which continue text
rather than follow instructions. The wording follows the practice of delphi (Paulo et al. 2024) and Bills et al.
(2023): firing tokens marked ``<<like this>>``, top contexts and contexts from lower activation bands, a last
line ``[EXPLANATION]: ...``; scorers answer one 0/1 per example.
"""

from __future__ import annotations

import ast
import re

from ..results import ContextExample
from .explainer import Prompt
from .records import FeatureRecord, marked_text

EXPLANATION_TAG = "[EXPLANATION]:"

_EXPLAIN_SYSTEM = f"""You are a meticulous interpretability researcher studying one feature of a language model.
You will see text excerpts on which the feature fires. The tokens where it fires are between << and >>; the number
after an excerpt is its strongest activation as a share of the feature's maximum. Excerpts from lower activation
bands show what the feature responds to weakly. You may also see the tokens the feature makes more likely next.

Find what the marked tokens have in common, taking their context into account, and describe it as one short
phrase (at most 15 words), such as "the word 'bridge' in names of bridges" or "closing parentheses in code".
Think briefly if you need to, then end your answer with a line of the form
{EXPLANATION_TAG} <your phrase>"""

_EXPLAIN_SHOT = """Feature 1
Excerpts:
The Eiffel<< Tower>> is in Paris.
We climbed the<< tower>> at night.
A radio<< tower>> stood on the hill.
Description: the word "tower"

"""

_JUDGE_SYSTEM = {
    "detection": """You will be given a description of a feature of text, then numbered text examples. For each
example in turn, decide whether the feature described is present in it: 1 if it is, 0 if it is not.
Reply with a Python list of 0s and 1s, one per example, and nothing else, e.g. [1, 0, 0, 1].""",
    "fuzzing": """You will be given a description of a feature of text, then numbered text examples in which some
tokens are marked between << and >>. For each example in turn, decide whether the marked tokens are exactly what
the description says the feature fires on: 1 if every marked token fits the description, 0 if any does not.
Reply with a Python list of 0s and 1s, one per example, and nothing else, e.g. [1, 0, 0, 1].""",
}

# Completion form, one example per request: a worked yes and no, then the question.
_JUDGE_SHOTS = {
    "detection": (
        (
            "Whether each text has the feature described.\n\n"
            'Feature: the word "tower"\nText: We climbed the tower at night.\nHas the feature: yes\n\n'
            'Feature: the word "tower"\nText: She bought bread and milk.\nHas the feature: no\n\n'
        ),
        "Has the feature:",
    ),
    "fuzzing": (
        (
            "Whether the tokens marked << >> in each text are what the feature described fires on.\n\n"
            'Feature: the word "tower"\nText: We climbed the<< tower>> at night.\nMarked correctly: yes\n\n'
            'Feature: the word "tower"\nText: She<< bought>> bread and milk.\nMarked correctly: no\n\n'
        ),
        "Marked correctly:",
    ),
}
TASKS = tuple(_JUDGE_SYSTEM)


def _excerpt_lines(record: FeatureRecord) -> tuple[list[str], list[str]]:
    scale = record.max_act or 1.0

    def line(e: ContextExample) -> str:
        return f"{marked_text(e).strip()} ({e.value / scale:.2f})"

    lower = [line(e) for label, examples in record.bands[1:] for e in examples]  # the top band repeats the top
    return [line(e) for e in record.top], lower


def explanation_prompt(record: FeatureRecord) -> Prompt:
    """The request for an explanation of ``record``'s feature, in chat and completion form."""
    top, lower = _excerpt_lines(record)
    user = "Top excerpts:\n" + "\n".join(f"Example {n}: {t}" for n, t in enumerate(top, 1))
    if lower:
        user += "\n\nExcerpts from lower activation bands:\n" + "\n".join(
            f"Example {n}: {t}" for n, t in enumerate(lower, 1)
        )
    if record.promoted:
        user += "\n\nTokens the feature promotes: " + ", ".join(repr(t) for t in record.promoted[:10])
    excerpts = "\n".join(marked_text(e).strip().replace("\n", " ") for e in record.top)
    completion = _EXPLAIN_SHOT + f"Feature 2\nExcerpts:\n{excerpts}\nDescription:"
    return Prompt(system=_EXPLAIN_SYSTEM, user=user, completion=completion)


def parse_explanation(reply: str, completion: bool) -> str:
    """The phrase in a reply: the text after the last ``[EXPLANATION]:`` (chat; else its last line) or the first
    non-empty line of a completion. '' when there is none."""
    if completion:
        lines = [ln.strip() for ln in reply.splitlines() if ln.strip()]
        text = lines[0] if lines else ""
    elif EXPLANATION_TAG in reply:
        after = reply.rsplit(EXPLANATION_TAG, 1)[1].strip()
        text = after.splitlines()[0] if after else ""
    else:
        lines = [ln.strip() for ln in reply.strip().splitlines() if ln.strip()]
        text = lines[-1] if lines else ""
    return text.strip().strip('"').strip()


def judge_prompt(task: str, explanation: str, texts: list[str]) -> Prompt:
    """The question for ``texts`` (chat: all at once; completion: meant for one text, ``texts[0]``)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    user = f"Feature description: {explanation}\n\nExamples:\n" + "\n".join(
        f"Example {n}: {t.strip()}" for n, t in enumerate(texts)
    )
    shots, question = _JUDGE_SHOTS[task]
    one_line = texts[0].strip().replace("\n", " ") if texts else ""
    completion = f"{shots}Feature: {explanation}\nText: {one_line}\n{question}"
    return Prompt(system=_JUDGE_SYSTEM[task], user=user, completion=completion)


def parse_judgements(reply: str, n: int, completion: bool) -> list[int | None]:
    """0/1 per example from a reply (None where it does not say): a list of ``n`` numbers (chat) or a leading
    yes/no (completion, one example)."""
    if completion:
        word = reply.strip().split()[0].lower().strip(".,:;!") if reply.strip() else ""
        return [1 if word == "yes" else 0 if word == "no" else None]
    for match in reversed(re.findall(r"\[[^\[\]]*\]", reply)):
        try:
            values = ast.literal_eval(match)
        except (ValueError, SyntaxError):
            continue
        if isinstance(values, list) and len(values) == n and all(v in (0, 1) for v in values):
            return [int(v) for v in values]
    return [None] * n
