"""The command line: ``saewidgets train`` on a tiny model, single-process and distributed, and argument errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from saewidgets.cli import build_parser, main
from saewidgets.sae import load_sae

TINY = ["--model", "tiny-gpt2", "--layer", "1", "--n-tokens", "1500", "--n-features", "64", "--k", "4",
        "--n-steps", "20", "--batch-size", "128"]


def test_train_command_saves_an_sae_and_prints_its_metrics(tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path / "sae")]) == 0
    out = capsys.readouterr().out
    assert "saved to" in out and "variance explained" in out and "CE loss recovered" in out
    sae = load_sae(tmp_path / "sae")
    assert sae.cfg.n_features == 64 and sae.cfg.k == 4 and sae.cfg.d_in == 64


def test_train_command_writes_saelens_format(tmp_path):
    assert main(["train", *TINY, "--format", "saelens", "--out", str(tmp_path / "lens")]) == 0
    assert (tmp_path / "lens" / "cfg.json").exists() and (tmp_path / "lens" / "sae_weights.safetensors").exists()


@pytest.mark.slow
def test_distributed_train_command_runs_two_processes(tmp_path):
    exe = Path(sys.executable).with_name("saewidgets")
    run = subprocess.run([str(exe), "train", "--distributed", "2", *TINY, "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert load_sae(tmp_path / "run" / "sae").cfg.n_features == 64


def test_demo_options_override_only_what_is_given():
    from saewidgets.cli import _settings
    from saewidgets.demo import QUICK

    args = build_parser().parse_args(["demo", "--quick", "--n-features", "512"])
    settings = _settings(args, QUICK)
    assert settings.n_features == 512 and settings.n_tokens == QUICK.n_tokens and settings.k == QUICK.k


def test_bad_layer_argument_is_refused():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--layer", "top"])


def test_layer_names_on_the_command_line_are_the_ones_the_model_resolves():
    from saewidgets.cli import LAYER_NAMES
    from saewidgets.model import NAMED_DEPTHS

    assert set(LAYER_NAMES) == set(NAMED_DEPTHS)
    assert build_parser().parse_args(["demo", "--layer", "late"]).layer == "late"
    assert build_parser().parse_args(["demo", "--layer", "-2"]).layer == -2


def test_lab_settings_reach_the_notebook_through_the_environment(monkeypatch):
    import json
    from dataclasses import asdict

    from saewidgets.demo import FULL, QUICK, SETTINGS_ENV, settings_from_env

    custom = QUICK.__class__(**{**asdict(QUICK), "n_features": 777})
    monkeypatch.setenv(SETTINGS_ENV, json.dumps(asdict(custom)))
    assert settings_from_env() == custom and settings_from_env().key() == custom.key()
    monkeypatch.delenv(SETTINGS_ENV)
    monkeypatch.setenv("SAEWIDGETS_QUICK", "1")
    assert settings_from_env() == QUICK
    monkeypatch.delenv("SAEWIDGETS_QUICK")
    assert settings_from_env() == FULL
