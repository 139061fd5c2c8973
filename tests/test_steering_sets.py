"""Held out means held out: evaluation prompts are disjoint from selection prompts, and nothing else uses them.

Only `saewidgets/analysis/steering_sets.py` spells an evaluation prompt out; code that judges on them imports the
name `EVALUATION_PROMPTS`, and only the judging code may do that. No default argument or module constant anywhere
in the package holds one, so nothing chooses, tunes or defaults on them.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import saewidgets
from saewidgets.analysis.steering_sets import (
    CONCEPTS,
    CONFIRMATION_PROMPTS,
    EVALUATION_PROMPTS,
    SELECTION_PROMPTS,
    TIEBREAK_PROMPTS,
)

ROOT = Path(__file__).resolve().parent.parent
DEFINED_IN = ROOT / "saewidgets" / "analysis" / "steering_sets.py"
RESULTS = ROOT / "benchmarks" / "results"
#: The files allowed to use the evaluation set: the benchmark, the demo's reported rate, the acceptance test and
#: this test. Anything that chooses or calibrates must not be among them.
JUDGES = {
    "benchmarks/bench_steering.py",
    "tests/test_steering_sets.py",
    "tests/test_gemma_analysis.py",
    "saewidgets/demo/examples.py",
}
TEXT_FILES = ("*.py", "*.ipynb", "*.md", "*.txt", "*.json", "*.toml", "*.js", "*.cfg")


def project_files():
    skip = {".git", ".venv", "node_modules", "build", "dist", "__pycache__", ".ipynb_checkpoints"}
    for pattern in TEXT_FILES:
        for path in ROOT.rglob(pattern):
            if not skip & set(path.relative_to(ROOT).parts) and path.is_file():
                yield path


def test_sets_are_disjoint_large_enough_and_without_duplicates():
    choosing = SELECTION_PROMPTS + CONFIRMATION_PROMPTS + TIEBREAK_PROMPTS
    assert len(set(choosing)) == len(choosing)  # each selection-side set apart from the others
    assert not set(choosing) & set(EVALUATION_PROMPTS)
    assert len(set(SELECTION_PROMPTS)) == len(SELECTION_PROMPTS) >= 10
    assert len(set(CONFIRMATION_PROMPTS)) == len(CONFIRMATION_PROMPTS) >= 8
    assert len(set(EVALUATION_PROMPTS)) == len(EVALUATION_PROMPTS) >= 20
    assert len(SELECTION_PROMPTS) + len(EVALUATION_PROMPTS) >= 30
    normal = lambda p: re.sub(r"\W+", " ", p.lower()).strip()  # noqa: E731
    assert not {normal(p) for p in choosing} & {normal(p) for p in EVALUATION_PROMPTS}


def test_prompts_are_neutral_no_concept_term_in_any_prompt():
    from saewidgets.analysis.steering_judge import mentions

    for concept in CONCEPTS:
        for prompt in SELECTION_PROMPTS + CONFIRMATION_PROMPTS + TIEBREAK_PROMPTS + EVALUATION_PROMPTS:
            assert not mentions(prompt, concept.terms), (concept.name, prompt)
    assert len(CONCEPTS) >= 6 and CONCEPTS[0].name == "Golden Gate Bridge"


def test_the_demo_steers_toward_the_benchmark_concept():
    from saewidgets.analysis.steering_sets import GOLDEN_GATE
    from saewidgets.demo import STEERING_CONCEPT

    assert STEERING_CONCEPT[1:] == (GOLDEN_GATE.query, GOLDEN_GATE.terms)


def test_no_other_file_spells_out_an_evaluation_prompt():
    found = []
    for path in project_files():
        if path == DEFINED_IN or path.parent == RESULTS:  # measured results record what was judged
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [(str(path.relative_to(ROOT)), p) for p in EVALUATION_PROMPTS if p in text]
    assert not found, f"evaluation prompts outside steering_sets.py: {found}"


def test_only_judging_code_names_the_evaluation_set():
    users = set()
    for path in project_files():
        if path != DEFINED_IN and "EVALUATION_PROMPTS" in path.read_text(encoding="utf-8", errors="replace"):
            users.add(str(path.relative_to(ROOT)))
    assert users <= JUDGES, f"only judging code may use the evaluation prompts: {sorted(users - JUDGES)}"


def _holds_eval_prompt(value, seen=None) -> bool:
    if isinstance(value, str):
        return value in EVALUATION_PROMPTS
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds_eval_prompt(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_eval_prompt(v) for v in value.values())
    return False


def test_no_default_or_constant_in_the_package_holds_an_evaluation_prompt():
    offenders = []
    for info in pkgutil.walk_packages(saewidgets.__path__, "saewidgets."):
        if info.name.endswith(("__main__", ".train")) or ".data." in info.name:
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra that is not installed
            continue
        for name, value in vars(module).items():
            if module.__name__ == "saewidgets.analysis.steering_sets" and name == "EVALUATION_PROMPTS":
                continue
            if _holds_eval_prompt(value):
                offenders.append(f"{info.name}.{name}")
            if inspect.isfunction(value) or inspect.isclass(value):
                functions = (
                    [value] if inspect.isfunction(value) else [f for f in vars(value).values() if inspect.isfunction(f)]
                )
                for fn in functions:
                    try:
                        parameters = inspect.signature(fn).parameters.values()
                    except (TypeError, ValueError):  # a builtin bound into a class: no Python defaults
                        continue
                    for p in parameters:
                        if p.default is not p.empty and _holds_eval_prompt(p.default):
                            offenders.append(f"{info.name}.{fn.__qualname__}({p.name}=...)")
    assert not offenders, offenders
