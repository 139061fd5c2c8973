"""Variants of the demo corpus for the steering benchmark's corpus experiment (`CORPORA` in `bench_steering`).

Issue 13 lists the corpus as a lever left untried: the demo corpus names the Golden Gate Bridge 1,107 times in
175 documents about it, and the full demo SAE's bridge feature turned out to be a "say Golden" feature. The variant
here keeps every document and every sentence, and names the bridge once per document: each later "the Golden Gate
Bridge" becomes "the bridge", so most of the text about it carries the concept without its name.
"""

from __future__ import annotations

import re
from dataclasses import replace

from saewidgets.corpus import Corpus, demo_corpus

#: The bridge's full name, with the article before it (kept as "the"/"The" in what replaces it).
_NAME = re.compile(r"\b(?:(the|The) )?Golden Gate Bridge\b")


def bridge_named_once(corpus: Corpus | None = None) -> Corpus:
    """``corpus`` (default: the demo corpus) with "Golden Gate Bridge" kept at its first mention in each document
    and every later one written "the bridge" (same documents, order and metadata)."""
    corpus = corpus if corpus is not None else demo_corpus()

    def rename(text: str) -> str:
        first = True

        def later_as_the_bridge(match: re.Match[str]) -> str:
            nonlocal first
            if first:
                first = False
                return match.group(0)
            return "The bridge" if match.group(1) == "The" else "the bridge"

        return _NAME.sub(later_as_the_bridge, text)

    return Corpus((replace(doc, text=rename(doc.text)) for doc in corpus.documents), name="demo-bridge-named-once")


#: The corpus experiment's variants by name (`DemoSettings.corpus`).
CORPORA = {"demo-bridge-named-once": bridge_named_once}
