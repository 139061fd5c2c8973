"""Build the saewidgets demo corpus (deterministic, seeded): a build-time tool, not part of the package.

The demo corpus must ship with the package because no machine running the demo can reach a dataset hub. All
sentences, dialogues, poems and code snippets (in ``sentences.json`` beside this file) were written for this
project; the script combines them with entity lists (names, cities, numbers, identifiers) and shuffles them so that
every concept appears in many different contexts, which is what a sparse autoencoder needs to find concept features
rather than token features.

Usage::

    python scripts/demo_corpus/build_demo_corpus.py      # writes saewidgets/data/demo_corpus/demo_corpus.jsonl.gz
    python scripts/demo_corpus/build_demo_corpus.py --stats /tmp/gemma_tok   # also prints Gemma token counts

Output: one JSON object per line, ``{"id", "topic", "lang", "text"}``, gzip-compressed with a fixed mtime so that
rebuilding gives byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from collections import Counter
from pathlib import Path

SEED = 20260521
HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "saewidgets" / "data" / "demo_corpus" / "demo_corpus.jsonl.gz"  # where the package reads it
#: The hand-written text: sentence pools, dialogue and story scripts, code snippets, by table name.
TABLES = json.loads((HERE / "sentences.json").read_text(encoding="utf-8"))

# --------------------------------------------------------------------------------------------------------------
# Shared slot values. Each document draws one value per slot, so a name keeps referring to the same person.
# --------------------------------------------------------------------------------------------------------------
SLOTS: dict[str, list[str]] = {
    "name": [
        "Maya",
        "Daniel",
        "Priya",
        "Tomás",
        "Aiko",
        "Liam",
        "Fatima",
        "Jonas",
        "Chloé",
        "Marcus",
        "Elena",
        "Kwame",
        "Sofia",
        "Hiro",
        "Grace",
        "Mateo",
        "Nadia",
        "Oliver",
        "Leila",
        "Ben",
        "Yuki",
        "Rosa",
        "Arjun",
        "Hannah",
        "Diego",
        "Ingrid",
        "Samir",
        "Zoe",
        "Pavel",
        "Amara",
    ],
    "name2": [
        "Alex",
        "Jordan",
        "Sam",
        "Taylor",
        "Chris",
        "Robin",
        "Morgan",
        "Jamie",
        "Casey",
        "Riley",
        "Noor",
        "Kai",
        "Lena",
        "Omar",
        "Iris",
        "Felix",
        "Mei",
        "Hugo",
        "Ana",
        "Theo",
    ],
    "country": [
        "Germany",
        "Japan",
        "Brazil",
        "India",
        "France",
        "Australia",
        "Mexico",
        "Kenya",
        "Canada",
        "Italy",
        "South Korea",
        "Spain",
        "Norway",
        "Argentina",
        "Egypt",
        "the Netherlands",
    ],
    "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "month": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "year": [str(y) for y in range(1998, 2025)],
    "hour": ["six", "seven", "eight", "nine", "ten", "eleven"],
    "n": [str(n) for n in (2, 3, 4, 5, 6, 8, 10, 12, 15, 20)],
    "big": ["40,000", "55,000", "70,000", "85,000", "100,000", "112,000"],
    "color": ["gray", "silver", "pink", "gold", "violet", "pale blue"],
}


def render(template: str, ctx: dict[str, str]) -> str:
    """Fill ``{slot}`` fields of ``template`` from ``ctx`` (unknown fields are an error, on purpose)."""
    return template.format(**ctx)


def pick(rng: random.Random, pool: list[str], k: int) -> list[str]:
    """Sample ``k`` distinct items (or all of them if the pool is smaller), in random order."""
    return rng.sample(pool, min(k, len(pool)))


def run_script(rng: random.Random, steps: list[list[str]]) -> list[str]:
    """Render an ordered script: one alternative per step; an empty string alternative skips the step."""
    return [line for line in (rng.choice(step) for step in steps) if line]


def new_ctx(rng: random.Random, extra: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Draw one value per slot for one document."""
    slots = {**SLOTS, **(extra or {})}
    ctx = {k: rng.choice(v) for k, v in slots.items()}
    if ctx["name2"] == ctx["name"]:
        ctx["name2"] = "Alex"
    return ctx


def paragraphs(rng: random.Random, pools: list[list[str]], ctx: dict[str, str], lo: int, hi: int) -> str:
    """Join one paragraph per pool, each of ``lo``..``hi`` sampled sentences."""
    paras = [" ".join(pick(rng, pool, rng.randint(lo, hi))) for pool in pools]
    return render("\n\n".join(paras), ctx)


# --------------------------------------------------------------------------------------------------------------
# The Golden Gate Bridge, in many registers.
# --------------------------------------------------------------------------------------------------------------
GGB_HISTORY = TABLES["GGB_HISTORY"]
GGB_ENGINEERING = TABLES["GGB_ENGINEERING"]
GGB_TOURISM = TABLES["GGB_TOURISM"]
GGB_PHOTO = TABLES["GGB_PHOTO"]
GGB_COMMUTE = TABLES["GGB_COMMUTE"]
GGB_COMPARE = TABLES["GGB_COMPARE"]
GGB_POEMS = TABLES["GGB_POEMS"]
GGB_NEWS = TABLES["GGB_NEWS"]
GGB_STORIES = TABLES["GGB_STORIES"]
GGB_DIALOGUES = TABLES["GGB_DIALOGUES"]
GGB_DIARY = TABLES["GGB_DIARY"]
GGB_FAQ = [tuple(row) for row in TABLES["GGB_FAQ"]]
# The bridge described without its name, so the concept is seen apart from the tokens " Golden Gate".
GGB_INDIRECT = TABLES["GGB_INDIRECT"]
GGB_ESSAY_POOLS = [GGB_HISTORY, GGB_ENGINEERING, GGB_TOURISM, GGB_PHOTO, GGB_COMMUTE, GGB_COMPARE, GGB_INDIRECT]
GGB_TITLES = TABLES["GGB_TITLES"]


def golden_gate_doc(rng: random.Random) -> str:
    """One document about the Golden Gate Bridge in a randomly chosen register."""
    ctx = new_ctx(rng)
    kind = rng.choice(
        ["essay", "essay", "essay", "poem", "news", "story", "dialogue", "dialogue", "facts", "diary", "faq"]
    )
    if kind == "essay":
        pools = pick(rng, GGB_ESSAY_POOLS, rng.randint(2, 4))
        title = rng.choice(GGB_TITLES)
        body = paragraphs(rng, pools, ctx, 2, 4)
        return f"{title}\n\n{body}" if title else body
    if kind == "poem":
        poems = pick(rng, GGB_POEMS, rng.randint(1, 3))
        intro = rng.choice(
            [
                "Poems about the Golden Gate Bridge",
                "From a notebook kept in San Francisco",
                "Three short poems",
                "For the bridge",
            ]
        )
        return intro + "\n\n" + "\n\n".join(poems) + "\n\n" + paragraphs(rng, [GGB_HISTORY], ctx, 1, 2)
    if kind == "news":
        return render("\n\n".join(run_script(rng, rng.choice(GGB_NEWS))), ctx)
    if kind == "story":
        story = render(" ".join(run_script(rng, rng.choice(GGB_STORIES))), ctx)
        return story + "\n\n" + paragraphs(rng, [rng.choice(GGB_ESSAY_POOLS)], ctx, 1, 2)
    if kind == "dialogue":
        return render("\n".join(run_script(rng, rng.choice(GGB_DIALOGUES))), ctx)
    if kind == "diary":
        return render(" ".join(run_script(rng, GGB_DIARY)), ctx)
    if kind == "faq":
        qa = pick(rng, GGB_FAQ, rng.randint(3, 6))
        return "Frequently asked questions\n\n" + "\n\n".join(f"Q: {q}\nA: {a}" for q, a in qa)
    facts = pick(rng, GGB_HISTORY + GGB_ENGINEERING + GGB_COMPARE, rng.randint(5, 9))
    return render(rng.choice(GGB_TITLES[:9]) + "\n\n" + "\n".join(f"- {f}" for f in facts), ctx)


# --------------------------------------------------------------------------------------------------------------
# Other bridges and landmarks (the Eiffel Tower often).
# --------------------------------------------------------------------------------------------------------------
LANDMARKS: dict[str, list[str]] = TABLES["LANDMARKS"]
LANDMARK_TOUR = TABLES["LANDMARK_TOUR"]
EIFFEL_EXTRA = TABLES["EIFFEL_EXTRA"]


ARTICLE = {
    "Eiffel Tower",
    "Brooklyn Bridge",
    "Bay Bridge",
    "Akashi Kaikyo Bridge",
    "Millau Viaduct",
    "Sydney Harbour Bridge",
    "Statue of Liberty",
    "Colosseum",
    "Taj Mahal",
    "Great Wall",
}


def the(name: str) -> str:
    """The landmark's name as used mid-sentence ("the Eiffel Tower", but "Tower Bridge", "Big Ben")."""
    return f"the {name}" if name in ARTICLE else name


def landmark_doc(rng: random.Random) -> str:
    """One document about one or two landmarks; the Eiffel Tower is drawn more often than the others."""
    names = list(LANDMARKS)
    weights = [6 if n == "Eiffel Tower" else 2 for n in names]
    first = rng.choices(names, weights)[0]
    second = rng.choice([n for n in names if n != first])
    ctx = new_ctx(rng, {"a": [the(first)], "b": [the(second)]})
    parts = [" ".join(pick(rng, LANDMARKS[first], rng.randint(3, 6)))]
    if first == "Eiffel Tower":
        parts.append(" ".join(pick(rng, EIFFEL_EXTRA, rng.randint(2, 3))))
    parts.append(" ".join(pick(rng, LANDMARKS[second], rng.randint(2, 4))))
    parts.append(rng.choice(LANDMARK_TOUR))
    title = rng.choice([f"{first} and {second}", f"About {the(first)}", f"Travel notes: {first}", ""])
    body = render("\n\n".join(parts), ctx)
    return f"{title}\n\n{body}" if title else body


# --------------------------------------------------------------------------------------------------------------
# Cities, countries and transit.
# --------------------------------------------------------------------------------------------------------------
CITIES: dict[str, tuple[str, list[str]]] = {city: tuple(row) for city, row in TABLES["CITIES"].items()}
TRANSIT = TABLES["TRANSIT"]
SF_TRANSIT = TABLES["SF_TRANSIT"]
COUNTRY_FACTS = TABLES["COUNTRY_FACTS"]


def city_doc(rng: random.Random) -> str:
    """One document about a city (San Francisco more often) and getting around it."""
    names = list(CITIES)
    weights = [6 if n == "San Francisco" else (3 if n in ("Paris", "Tokyo", "London") else 2) for n in names]
    city = rng.choices(names, weights)[0]
    country, facts = CITIES[city]
    ctx = new_ctx(rng, {"city": [city]})
    parts = [f"{city} is a city in {country}. " + " ".join(pick(rng, facts, rng.randint(3, 5)))]
    transit = pick(rng, TRANSIT, rng.randint(2, 4))
    if city == "San Francisco":
        transit += pick(rng, SF_TRANSIT, 2)
        rng.shuffle(transit)
    parts.append(" ".join(transit))
    if rng.random() < 0.3:
        parts.append(rng.choice(COUNTRY_FACTS))
    return render("\n\n".join(parts), ctx)


# --------------------------------------------------------------------------------------------------------------
# Code: snippets with and without bugs and security holes, plus review comments.
# Placeholders are <<table>>, <<field>>, <<func>>, <<var>>, <<secret>>, <<n>> (code is full of braces, so
# str.format is not used here).
# --------------------------------------------------------------------------------------------------------------
CODE_SLOTS = TABLES["CODE_SLOTS"]
# (language, kind, snippet, review comments). kind is "clean", "buggy", "off_by_one" or the name of the security hole.
CODE_SNIPPETS: list[tuple[str, str, str, list[str]]] = [tuple(row) for row in TABLES["CODE_SNIPPETS"]]
CODE_INTROS = TABLES["CODE_INTROS"]
# Closing lines depend on whether any snippet in the document has a problem.
CODE_CLOSINGS = {
    True: [
        "Status: changes requested.",
        "Follow-up ticket filed.",
        "Discussion resolved after the author pushed a fix.",
        "Severity: high. Blocking the release until this is fixed.",
        "Reviewer: <<reviewer>>.",
        "",
    ],
    False: ["Status: approved.", "Merged after CI passed.", "Reviewer: <<reviewer>>.", ""],
}
VULN_EXPLAIN = TABLES["VULN_EXPLAIN"]


def code_doc(rng: random.Random) -> str:
    """One code-review document: one or two snippets, review comments, and sometimes an explanation."""
    slots = {k: rng.choice(v) for k, v in CODE_SLOTS.items()}
    slots["reviewer"] = rng.choice(SLOTS["name"])
    parts = [rng.choice(CODE_INTROS)]
    snippets = pick(rng, CODE_SNIPPETS, rng.choice([1, 1, 2]))
    for lang, kind, code, comments in snippets:
        parts.append(f"```{lang}\n{code}\n```")
        for comment in pick(rng, comments, rng.randint(1, 2)):
            parts.append(f"Review comment ({rng.choice(SLOTS['name'])}): {comment}")
        if kind in VULN_EXPLAIN and rng.random() < 0.5:
            parts.append(VULN_EXPLAIN[kind])
    parts.append(rng.choice(CODE_CLOSINGS[any(kind != "clean" for _, kind, _, _ in snippets)]))
    text = "\n\n".join(p for p in parts if p)
    for key, value in slots.items():
        text = text.replace(f"<<{key}>>", value)
    return text


# --------------------------------------------------------------------------------------------------------------
# The same facts in six languages (en, fr, de, es, it, pt).
# --------------------------------------------------------------------------------------------------------------
LANGS = TABLES["LANGS"]
FACTS: list[dict[str, str]] = TABLES["FACTS"]
# Short travel paragraphs, the same story in every language.
LANG_STORIES: dict[str, list[str]] = TABLES["LANG_STORIES"]
LANG_INTROS = TABLES["LANG_INTROS"]


def multilingual_doc(rng: random.Random, lang: str) -> str:
    """A short document of facts in one language; every fact exists in all six languages."""
    facts = pick(rng, FACTS, rng.randint(6, 11))
    text = rng.choice(LANG_INTROS[lang]) + "\n\n" + " ".join(f[lang] for f in facts)
    if rng.random() < 0.5:
        text += "\n\n" + render(rng.choice(LANG_STORIES[lang]), new_ctx(rng))
    return text


# --------------------------------------------------------------------------------------------------------------
# Dialogues about honesty, lying, secrecy and deception (ordered scripts with alternatives per line).
# --------------------------------------------------------------------------------------------------------------
HONESTY_SCRIPTS: list[list[list[str]]] = TABLES["HONESTY_SCRIPTS"]
HONESTY_REFLECTIONS = TABLES["HONESTY_REFLECTIONS"]


def honesty_doc(rng: random.Random) -> str:
    """One dialogue about honesty, lying, secrets or deception, sometimes followed by a reflection."""
    ctx = new_ctx(rng)
    lines = run_script(rng, rng.choice(HONESTY_SCRIPTS))
    reflection = rng.choice(HONESTY_REFLECTIONS)
    text = "\n".join(lines) + (f"\n\n{reflection}" if reflection else "")
    return render(text, ctx)


# --------------------------------------------------------------------------------------------------------------
# Science, sports, everyday life, music and emotions: pools of sentences per subtopic.
# --------------------------------------------------------------------------------------------------------------
GENERAL: dict[str, dict[str, list[str]]] = TABLES["GENERAL"]


def general_doc(rng: random.Random, topic: str) -> str:
    """One document on a general topic: sentences from one or two of its subtopics."""
    subs = GENERAL[topic]
    chosen = pick(rng, list(subs), rng.randint(1, min(2, len(subs))))
    return paragraphs(rng, [subs[s] for s in chosen], new_ctx(rng), 4, 6)


# --------------------------------------------------------------------------------------------------------------
# Assembly.
# --------------------------------------------------------------------------------------------------------------
# Documents per topic (English unless stated); chosen so the token shares follow the brief.
COUNTS = {
    "golden_gate": 175,
    "landmarks": 110,
    "cities_transit": 105,
    "code": 140,
    "honesty": 120,
    "science": 60,
    "sports": 45,
    "everyday": 45,
    "music": 32,
    "emotions": 32,
}
MULTILINGUAL_PER_LANG = 20
# Documents shorter than this many characters (about 60 Gemma tokens of English) get a second part appended,
# keeping every document above the 50-token floor.
MIN_CHARS = 300


def build(seed: int = SEED) -> list[dict[str, str]]:
    """All documents, in a fixed shuffled order, with ids ``<topic>-<lang>-<nnnn>``."""
    rng = random.Random(seed)
    makers = {
        "golden_gate": golden_gate_doc,
        "landmarks": landmark_doc,
        "cities_transit": city_doc,
        "code": code_doc,
        "honesty": honesty_doc,
    }
    docs = []
    for topic, count in COUNTS.items():
        for i in range(count):
            make = makers.get(topic) or (lambda r, t=topic: general_doc(r, t))
            text = make(rng)
            while len(text) < MIN_CHARS:
                text += "\n\n" + make(rng)
            docs.append({"id": f"{topic}-en-{i:04d}", "topic": topic, "lang": "en", "text": text})
    for lang in LANGS:
        for i in range(MULTILINGUAL_PER_LANG):
            text = multilingual_doc(rng, lang)
            while len(text) < MIN_CHARS:
                text += " " + multilingual_doc(rng, lang)
            docs.append({"id": f"multilingual-{lang}-{i:04d}", "topic": "multilingual", "lang": lang, "text": text})
    leftover = [d["id"] for d in docs if any(c in d["text"] for c in ("{", "<<")) and d["topic"] != "code"]
    if leftover:
        raise RuntimeError(f"unfilled slots in {leftover[:5]}")
    rng.shuffle(docs)
    return docs


def write(docs: list[dict[str, str]], path: Path = OUT) -> None:
    """Write gzip-compressed JSON lines with mtime 0, so rebuilds are byte-identical."""
    raw = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    with open(path, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=9) as gz:
        gz.write(raw)


def stats(docs: list[dict[str, str]], tokenizer_path: str) -> None:
    """Print Gemma token counts per topic and language (needs transformers and a saved tokenizer)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    lengths = [len(tok(d["text"], add_special_tokens=False)["input_ids"]) for d in docs]
    by_topic, by_lang, docs_topic, docs_lang = Counter(), Counter(), Counter(), Counter()
    for d, n in zip(docs, lengths):
        by_topic[d["topic"]] += n
        by_lang[d["lang"]] += n
        docs_topic[d["topic"]] += 1
        docs_lang[d["lang"]] += 1
    total = sum(lengths)
    print(f"documents: {len(docs)}  tokens: {total}  min/max doc tokens: {min(lengths)}/{max(lengths)}")
    print("| topic | documents | tokens | share |\n|---|---:|---:|---:|")
    for t, n in by_topic.most_common():
        print(f"| {t} | {docs_topic[t]} | {n:,} | {100 * n / total:.1f}% |")
    print("\n| language | documents | tokens | share |\n|---|---:|---:|---:|")
    for t, n in by_lang.most_common():
        print(f"| {t} | {docs_lang[t]} | {n:,} | {100 * n / total:.1f}% |")
    text = "\n".join(d["text"] for d in docs)
    for phrase in ("Golden Gate Bridge", "Golden Gate", "Eiffel Tower", "San Francisco", "Paris"):
        print(f"mentions of {phrase!r}: {text.count(phrase)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stats", metavar="TOKENIZER_DIR", help="print Gemma token counts using this tokenizer")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    docs = build()
    write(docs, args.out)
    print(f"wrote {len(docs)} documents to {args.out} ({args.out.stat().st_size:,} bytes)")
    if args.stats:
        stats(docs, args.stats)


if __name__ == "__main__":
    main()
