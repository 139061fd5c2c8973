"""The demo corpus the package ships is exactly what scripts/demo_corpus/build_demo_corpus.py builds from the
hand-written sentence tables in scripts/demo_corpus/sentences.json (byte for byte)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "demo_corpus" / "build_demo_corpus.py"


@pytest.mark.skipif(not SCRIPT.exists(), reason="needs a source checkout (scripts/ does not ship in the wheel)")
def test_the_shipped_demo_corpus_rebuilds_byte_for_byte(tmp_path):
    spec = importlib.util.spec_from_file_location("build_demo_corpus", SCRIPT)
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    builder.write(builder.build(), tmp_path / "rebuilt.jsonl.gz")
    assert builder.OUT.name == "demo_corpus.jsonl.gz" and builder.OUT.exists()
    assert (tmp_path / "rebuilt.jsonl.gz").read_bytes() == builder.OUT.read_bytes()
