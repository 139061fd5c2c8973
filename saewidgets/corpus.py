"""Text sources: the bundled demo corpus, local files, and Hugging Face datasets when online.

Everything downstream (``harvest``, feature statistics, widgets) takes either a list of strings or a
:class:`Corpus`. A ``Corpus`` keeps per-document metadata (id, topic, language) next to the text so that views can
say *where* a feature fires (e.g. "mostly in Golden Gate Bridge documents, in all six languages").
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import random
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeGuard, overload

__all__ = ["Document", "Corpus", "demo_corpus", "load_corpus", "stream_documents", "corpus_for_tokens"]

UNKNOWN = "unknown"
_LOCAL_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".json", ".gz")


@dataclass(frozen=True)
class Document:
    """One document: its text plus the metadata used to filter and to label feature contexts."""

    text: str
    id: str
    topic: str = UNKNOWN
    lang: str = UNKNOWN


class Corpus:
    """An immutable, ordered collection of documents.

    Iterating yields texts (so a ``Corpus`` can go wherever a list of strings goes); ``corpus[i]`` is the text of
    document ``i`` (the ``doc_ids`` of harvested activations index this order) and ``corpus.documents[i]`` the
    full :class:`Document`. Slicing returns a ``Corpus``.
    """

    def __init__(self, documents: Iterable[Document], name: str = "corpus") -> None:
        self._docs: tuple[Document, ...] = tuple(documents)
        for i, doc in enumerate(self._docs):
            if not isinstance(doc, Document):
                raise TypeError(
                    f"Corpus item {i} is {type(doc).__name__}, not Document; "
                    "use load_corpus(...) to build a Corpus from strings or files"
                )
        self.name = name

    # -- sequence protocol -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._docs)

    def __iter__(self) -> Iterator[str]:
        return (doc.text for doc in self._docs)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Corpus: ...
    def __getitem__(self, index: int | slice) -> str | Corpus:
        if isinstance(index, slice):
            return Corpus(self._docs[index], name=self.name)
        return self._docs[index].text

    def __repr__(self) -> str:
        topics = ", ".join(f"{t}: {n}" for t, n in Counter(self.topics).most_common(6))
        return f"Corpus({self.name!r}, {len(self)} documents; topics {topics or 'none'})"

    # -- columns -----------------------------------------------------------------------------------------------
    @property
    def documents(self) -> tuple[Document, ...]:
        return self._docs

    @property
    def texts(self) -> list[str]:
        return [doc.text for doc in self._docs]

    @property
    def ids(self) -> list[str]:
        return [doc.id for doc in self._docs]

    @property
    def topics(self) -> list[str]:
        """Topic of each document, in order (use ``Counter(corpus.topics)`` for a breakdown)."""
        return [doc.topic for doc in self._docs]

    @property
    def langs(self) -> list[str]:
        return [doc.lang for doc in self._docs]

    # -- selections --------------------------------------------------------------------------------------------
    def filter(self, topic: str | Iterable[str] | None = None, lang: str | Iterable[str] | None = None) -> Corpus:
        """Documents whose topic and language match (each a value or a collection of values; None = any).

        Raises ValueError if nothing matches, naming the values that do exist, because an empty corpus would
        only fail later with a less helpful message.
        """
        topics, langs = _as_set(topic), _as_set(lang)
        kept = [d for d in self._docs if (topics is None or d.topic in topics) and (langs is None or d.lang in langs)]
        if not kept:
            raise ValueError(
                f"no documents match topic={topic!r}, lang={lang!r}; available topics: "
                f"{sorted(set(self.topics))}, languages: {sorted(set(self.langs))}"
            )
        return Corpus(kept, name=self.name)

    def head(self, n_docs: int) -> Corpus:
        """The first ``n_docs`` documents (all of them if there are fewer)."""
        if not isinstance(n_docs, int) or n_docs < 1:
            raise ValueError(f"n_docs must be a positive integer, got {n_docs!r}")
        return Corpus(self._docs[:n_docs], name=self.name)

    def split(self, held_out_fraction: float = 0.1, seed: int = 0) -> tuple[Corpus, Corpus]:
        """Deterministic, disjoint (train, held_out) split by document, each keeping the original order.

        Splitting by document (not by token) keeps held-out evaluation honest: no held-out text was seen in
        training. At least one document goes to each side.
        """
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be between 0 and 1 (exclusive), got {held_out_fraction!r}")
        if len(self) < 2:
            raise ValueError(f"cannot split a corpus of {len(self)} document(s); need at least 2")
        n_held = min(len(self) - 1, max(1, round(held_out_fraction * len(self))))
        held = set(random.Random(seed).sample(range(len(self)), n_held))
        train = [d for i, d in enumerate(self._docs) if i not in held]
        held_out = [d for i, d in enumerate(self._docs) if i in held]
        return Corpus(train, name=f"{self.name}[train]"), Corpus(held_out, name=f"{self.name}[held_out]")

    def n_tokens(self, tokenizer: Any, batch_size: int = 256) -> int:
        """Number of tokens in all documents under ``tokenizer`` (a Hugging Face tokenizer), without BOS/EOS."""
        total = 0
        texts = self.texts
        for start in range(0, len(texts), batch_size):
            ids = tokenizer(texts[start : start + batch_size], add_special_tokens=False)["input_ids"]
            total += sum(len(x) for x in ids)
        return total


def _as_set(value: str | Iterable[str] | None) -> set[str] | None:
    if value is None:
        return None
    return {value} if isinstance(value, str) else set(value)


# -- building corpora ------------------------------------------------------------------------------------------
def _from_documents(docs: Sequence[Document], name: str) -> Corpus:
    """Drop empty documents (with a warning saying how many) and refuse an empty result."""
    kept = [d for d in docs if d.text.strip()]
    dropped = len(docs) - len(kept)
    if dropped:
        warnings.warn(f"{name}: dropped {dropped} empty document(s) of {len(docs)}", stacklevel=4)
    if not kept:
        raise ValueError(f"{name}: no non-empty documents; pass at least one non-empty string")
    return Corpus(kept, name=name)


def _from_strings(items: Sequence[Any], name: str) -> Corpus:
    if len(items) == 0:
        raise ValueError("source is an empty list; pass at least one non-empty string")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(
                f"item {i} of the source list is {type(item).__name__}, not str; "
                "pass a list of strings (convert or drop the other items)"
            )
    return _from_documents([Document(text=t, id=f"{name}-{i}") for i, t in enumerate(items)], name)


def _parse_jsonl(lines: Iterable[str], source: str, text_field: str) -> list[Document]:
    """Documents from JSON lines; errors name ``source`` and the 1-based line number."""
    docs = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{source}, line {lineno}: not valid JSON ({exc.msg}); each line must be one JSON "
                f'object such as {{"{text_field}": "..."}}'
            ) from None
        if not isinstance(obj, dict):
            raise ValueError(f"{source}, line {lineno}: expected a JSON object, got {type(obj).__name__}")
        if text_field not in obj:
            raise ValueError(
                f"{source}, line {lineno}: no field {text_field!r} (fields: {sorted(obj)}); "
                "pass text_field=... to name the field holding the text"
            )
        text = obj[text_field]
        if not isinstance(text, str):
            raise TypeError(f"{source}, line {lineno}: field {text_field!r} is {type(text).__name__}, not str")
        docs.append(
            Document(
                text=text,
                id=str(obj.get("id") or f"{Path(source).name}-{lineno}"),
                topic=str(obj.get("topic") or UNKNOWN),
                lang=str(obj.get("lang") or UNKNOWN),
            )
        )
    return docs


def _load_path(path: Path, text_field: str) -> Corpus:
    name = path.name
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise ValueError(f"directory {path} contains no .txt files; put one document per .txt file there")
        docs = [Document(text=p.read_text(encoding="utf-8"), id=str(p.relative_to(path))) for p in files]
        return _from_documents(docs, name)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".jsonl.gz") else path.suffix
    if suffix == ".txt":
        blocks = re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))
        return _from_documents([Document(text=b.strip(), id=f"{path.stem}-{i}") for i, b in enumerate(blocks)], name)
    if suffix in (".jsonl", ".jsonl.gz"):
        opener = gzip.open if suffix == ".jsonl.gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            return _from_documents(_parse_jsonl(fh, str(path), text_field), name)
    raise ValueError(
        f"unsupported file type {path.name!r}; use a .txt file (documents separated by blank lines), "
        "a .jsonl or .jsonl.gz file (one JSON object with a text field per line), or a directory "
        "of .txt files"
    )


def _load_hf(name: str, split: str, text_field: str, n_docs: int, config: str | None) -> Corpus:
    """Stream the first ``n_docs`` documents of a Hugging Face dataset (needs a network and ``datasets``)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"{name!r} is not a local file or directory, so it was taken as a Hugging Face dataset "
            "name, which needs the datasets package: pip install 'saewidgets[datasets]'"
        ) from None
    stream = datasets.load_dataset(name, config, split=split, streaming=True)
    return _from_documents(list(itertools.islice(stream_documents(stream, name, text_field), n_docs)), name)


def is_stream(source: Any) -> TypeGuard[Iterable[Any]]:
    """Whether ``source`` is an iterable read lazily, row by row (a streamed Hugging Face ``IterableDataset``, a
    generator): anything iterable that is not a string, path, sequence or `Corpus`."""
    return (
        isinstance(source, Iterable)
        and not isinstance(source, (str, bytes, Path, Sequence, Corpus))
        and not hasattr(source, "__len__")
    )


def stream_documents(rows: Iterable[Any], name: str, text_field: str = "text") -> Iterator[Document]:
    """Documents from ``rows`` (strings, or dicts such as a streamed dataset's rows), read one at a time.

    Only the rows consumed are ever read, so a dataset far larger than memory (or the network's patience) can feed
    the first documents of a harvest. Each row's ``id``, ``topic`` and ``lang`` fields are kept when present.
    """
    for i, row in enumerate(rows):
        if isinstance(row, str):
            yield Document(text=row, id=f"{name}-{i}")
            continue
        if not isinstance(row, dict):
            raise TypeError(
                f"{name}: row {i} is {type(row).__name__}; a stream must yield strings or dicts with "
                f"a {text_field!r} field"
            )
        if text_field not in row:
            raise ValueError(
                f"{name}: row {i} has no field {text_field!r} (fields: {sorted(row)}); "
                "pass text_field=... to name the field holding the text"
            )
        yield Document(
            text=str(row[text_field]),
            id=str(row.get("id") or f"{name}-{i}"),
            topic=str(row.get("topic") or UNKNOWN),
            lang=str(row.get("lang") or UNKNOWN),
        )


def corpus_for_tokens(
    rows: Iterable[Any],
    n_tokens: int,
    count_tokens: Callable[[str], int],
    *,
    text_field: str = "text",
    name: str = "stream",
) -> Corpus:
    """The fewest leading documents of ``rows`` that hold ``n_tokens`` tokens (all of them if the stream ends first).

    ``count_tokens(text)`` counts one document's tokens (without BOS). Rows after the last document needed are
    never read: this is how a streamed dataset feeds `saewidgets.harvest_to_store` without loading it whole.
    """
    if not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive integer, got {n_tokens!r}")
    docs, total = [], 0
    for doc in stream_documents(rows, name, text_field):
        if not doc.text.strip():
            continue
        docs.append(doc)
        total += count_tokens(doc.text)
        if total >= n_tokens:
            break
    return _from_documents(docs, name)


def load_corpus(
    source: Corpus | Sequence[str] | str | Path,
    *,
    text_field: str = "text",
    n_docs: int | None = None,
    split: str = "train",
    config: str | None = None,
) -> Corpus:
    """Turn ``source`` into a :class:`Corpus`.

    ``source`` may be:
      - a ``Corpus`` (returned as is, or its first ``n_docs`` documents);
      - a list or tuple of strings, one document each;
      - a path to a ``.txt`` file (documents separated by blank lines), a ``.jsonl``/``.jsonl.gz`` file (one JSON
        object per line with the text in ``text_field`` and optional ``id``, ``topic``, ``lang``), or a directory
        of ``.txt`` files (one document per file, read recursively in sorted order);
      - otherwise a Hugging Face dataset name, streamed (``split``, ``config``; ``n_docs`` defaults to 10,000).
        This needs the network and ``pip install 'saewidgets[datasets]'``;
      - an iterable read lazily, such as ``datasets.load_dataset(..., streaming=True)`` or a generator, of strings
        or of dicts with the text in ``text_field``: its first ``n_docs`` rows (default 10,000) are read.

    Empty documents are dropped with a warning; ``n_docs`` keeps the first ``n_docs`` documents.
    """
    if n_docs is not None and (not isinstance(n_docs, int) or n_docs < 1):
        raise ValueError(f"n_docs must be a positive integer or None, got {n_docs!r}")
    if isinstance(source, Corpus):
        corpus = source
    elif isinstance(source, (list, tuple)):
        corpus = _from_strings(source, "texts")
    elif is_stream(source):
        name = str(getattr(getattr(source, "info", None), "dataset_name", None) or "stream")
        return _from_documents(
            list(itertools.islice(stream_documents(source, name, text_field), n_docs or 10_000)), name
        )
    elif isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.exists():
            try:
                corpus = _load_path(path, text_field)
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{str(source)!r} is not UTF-8 text (byte {err.object[err.start : err.start + 1]!r} at "
                    f"offset {err.start} of a file there): re-save it as UTF-8, e.g. "
                    "`iconv -f latin1 -t utf-8 in.txt > out.txt`."
                ) from None
        elif isinstance(source, Path) or source.endswith(_LOCAL_SUFFIXES) or source.endswith(("/", "\\")):
            raise FileNotFoundError(
                f"no such file or directory: {str(source)!r}; check the path (relative paths "
                f"are resolved from {Path.cwd()})"
            )
        elif not source.strip():
            raise ValueError("source is an empty string; pass a path, a dataset name or a list of strings")
        else:
            return _load_hf(source, split, text_field, n_docs or 10_000, config)
    else:
        raise TypeError(
            f"cannot load a corpus from {type(source).__name__}; pass a Corpus, a list of strings, "
            "a path to a .txt/.jsonl/.jsonl.gz file or a directory, or a Hugging Face dataset name"
        )
    return corpus.head(n_docs) if n_docs is not None else corpus


@functools.lru_cache(maxsize=1)
def demo_corpus() -> Corpus:
    """The bundled demo corpus: 984 documents, ~143k Gemma 3 tokens (see ``data/demo_corpus/PROVENANCE.md``).

    Read with ``importlib.resources`` so it works from an installed wheel; cached per process (a ``Corpus`` is
    immutable, so sharing it is safe).
    """
    resource = resources.files("saewidgets").joinpath("data").joinpath("demo_corpus").joinpath("demo_corpus.jsonl.gz")
    lines = gzip.decompress(resource.read_bytes()).decode("utf-8").splitlines()
    return Corpus(_parse_jsonl(lines, "saewidgets demo corpus", "text"), name="demo")
