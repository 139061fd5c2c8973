"""The command line: ``saewidgets train`` on a tiny model, single-process and distributed, and argument errors."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from saewidgets.cli import build_parser, main
from saewidgets.sae import load_sae

TINY = [
    "--model",
    "tiny-gpt2",
    "--layer",
    "1",
    "--n-tokens",
    "1500",
    "--n-features",
    "64",
    "--k",
    "4",
    "--n-steps",
    "20",
    "--batch-size",
    "128",
]


def test_train_command_saves_an_sae_and_prints_its_metrics(tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "saved to" in out and "variance explained" in out and "CE loss recovered" in out
    sae = load_sae(tmp_path / "run" / "sae")
    assert sae.cfg.n_features == 64 and sae.cfg.k == 4 and sae.cfg.d_in == 64


def test_train_command_writes_saelens_format(tmp_path):
    assert main(["train", *TINY, "--format", "saelens", "--out", str(tmp_path / "lens")]) == 0
    sae_dir = tmp_path / "lens" / "sae"
    assert (sae_dir / "cfg.json").exists() and (sae_dir / "sae_weights.safetensors").exists()


# Every option of `saewidgets train` set away from its default (small enough to train in seconds on tiny-gpt2).
EVERY_RUN_OPTION = dict(
    model="tiny-gpt2",
    layer=1,
    n_tokens=1200,
    context_len=32,
    held_out_fraction=0.1,
    eval_tokens=300,
    shard_tokens=500,
    harvest_precision="bf16",
    format="saelens",
    shard_latents=False,
    restart=True,
)
EVERY_TRAIN_OPTION = dict(
    arch="batchtopk",
    n_features=64,
    k=4,
    n_steps=4,
    batch_size=64,
    lr=2e-3,
    lr_warmup_steps=2,
    lr_decay_fraction=0.5,
    l1=3.0,
    sparsity_warmup_fraction=0.1,
    l0=2.0,
    jumprelu_bandwidth=0.1,
    jumprelu_init_threshold=0.2,
    aux_k=8,
    aux_coefficient=0.05,
    dead_after_tokens=5000,
    threshold_momentum=0.02,
    sparse_kernels=False,
    precision="bf16",
    grad_clip=0.5,
    seed=3,
    n_scale_samples=500,
    checkpoint_every=4,
)


def _every_option(tmp_path):
    """(TrainingRun, TrainConfig, command-line options) with every field but ``corpus`` away from its default."""
    from saewidgets.cli import to_options
    from saewidgets.sae import TrainConfig
    from saewidgets.training_run import TrainingRun

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n\n".join(
            f"Document {i}: the Golden Gate Bridge spans the bay, and ferries cross it." * 20 for i in range(24)
        )
    )
    run = TrainingRun(
        out=str(tmp_path / "run"),
        corpus=str(corpus),
        store=str(tmp_path / "acts"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        **EVERY_RUN_OPTION,
    )
    config = TrainConfig(**EVERY_TRAIN_OPTION)
    changed = {f.name for f in fields(run) if getattr(run, f.name) != f.default}
    changed |= {f.name for f in fields(config) if getattr(config, f.name) != f.default}
    unchanged = {f.name for f in (*fields(run), *fields(config))} - changed
    assert unchanged == {"shard_latents"}, "the test sets every option (shard_latents needs torchrun)"
    return run, config, to_options(run) + to_options(config)


def _check_every_option_arrived(run, config):
    """What the run wrote shows each option: the store's manifest, the checkpoint's TrainConfig, the SAE's files."""
    import json

    from saewidgets.sae.checkpoint import load_checkpoint
    from saewidgets.store import ActivationStore

    store = ActivationStore(run.store)
    assert (store.manifest["model"], store.manifest["layer"]) == ("tiny-gpt2", 1)
    assert store.manifest["settings"]["context_len"] == 32 and store.manifest["settings"]["n_tokens"] == 1200
    assert store.manifest["settings"]["shard_tokens"] == 500
    assert store.manifest["settings"]["precision"] == "bf16", "--harvest-precision"
    assert store.manifest["n_documents"] == 24 - round(0.1 * 24), "the held-out documents stayed out of the store"
    trained = load_checkpoint(run.checkpoint_dir)["train_config"]
    assert trained == config.to_dict(), "every TrainConfig field reached the trainer"
    sae_dir = Path(run.out) / "sae"
    assert (sae_dir / "cfg.json").exists(), "--format saelens"
    assert json.loads((sae_dir / "cfg.json").read_text())["d_sae"] == 64


def test_every_train_option_reaches_the_trainer_in_one_process(tmp_path, capsys):
    run, config, options = _every_option(tmp_path)
    assert main(["train", *options]) == 0
    _check_every_option_arrived(run, config)
    assert "held-out metrics (2 documents, 300 tokens)" in capsys.readouterr().out


@pytest.mark.slow
def test_every_train_option_reaches_the_trainer_on_two_processes(tmp_path):
    run, config, options = _every_option(tmp_path)
    exe = Path(sys.executable).with_name("saewidgets")
    done = subprocess.run(
        [str(exe), "train", "--distributed", "2", *options],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    _check_every_option_arrived(run, config)
    assert load_sae(Path(run.out) / "sae").cfg.provenance["data_parallel_ranks"] == 2


def test_train_defaults_are_the_dataclasses_defaults_on_both_entry_points():
    from saewidgets.cli import train_configs, train_parser
    from saewidgets.sae import TrainConfig
    from saewidgets.training_run import TrainingRun

    for parser, argv in ((build_parser(), ["train", "--out", "x"]), (train_parser(distributed=False), ["--out", "x"])):
        run, config = train_configs(parser.parse_args(argv))
        assert run == TrainingRun(out="x") and config == TrainConfig()


def test_the_launched_ranks_get_exactly_the_parsed_options(tmp_path, monkeypatch):
    import saewidgets.cli as cli
    from saewidgets.cli import train_configs, train_parser

    run, config, options = _every_option(tmp_path)
    launched = []
    monkeypatch.setattr(cli, "_launch", lambda n, argv: launched.append((n, argv)) or 0)
    assert main(["train", "--distributed", "3", *options]) == 0
    ((n, argv),) = launched
    assert n == 3 and train_configs(train_parser(distributed=False).parse_args(argv)) == (run, config)


def test_every_train_option_has_help_from_its_docstring():
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "Peak Adam learning rate (None: 2e-4 / sqrt(n_features / 16384), at most 1e-3). (default: None)" in help_text
    assert "Rows per store shard. (default: 262144)" in help_text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "-1"], "lr=-1.0 is out of range"),
        (["--lr", "nan"], "lr=nan is not a finite number"),
        (["--l1", "-5"], "l1=-5.0 is out of range"),
        (["--checkpoint-every", "-1"], "checkpoint_every=-1 is too small"),
        (["--distributed", "0"], "--distributed 0: pass the number of processes"),
        (["--held-out-fraction", "1"], "held_out_fraction=1"),
        (["--shard-latents", "--arch", "relu"], "--shard-latents trains TopK SAEs only"),
        (["--model", "./no/such/model"], "No model folder at './no/such/model'"),
    ],
)
def test_train_command_errors_are_one_line_naming_the_option(tmp_path, capsys, argv, message):
    assert main(["train", "--out", str(tmp_path / "run"), *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "--debug" in err, err


def test_a_precision_the_trainer_lacks_is_refused_with_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "run"), "--precision", "float16"])
    err = capsys.readouterr().err
    assert "argument --precision: invalid choice: 'float16' (choose from" in err
    assert all(choice in err for choice in ("fp32", "bf16", "fp16")), err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="lr=-1.0"):
        main(["train", "--out", str(tmp_path), "--lr", "-1", "--debug"])


def test_a_corpus_that_is_not_utf8_is_named(tmp_path, capsys):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("Caf\u00e9 au lait, cr\u00e8me br\u00fbl\u00e9e.\n\nUn autre document.".encode("latin-1"))
    assert main(["train", "--model", "tiny-gpt2", "--corpus", str(corpus), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "is not UTF-8 text" in err and "latin1.txt" in err and err.count("\n") == 1


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
    from saewidgets.models import NAMED_DEPTHS

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


def test_demo_lab_without_jupyterlab_says_what_to_install_in_one_line_before_any_work(monkeypatch, capsys):
    import importlib.util

    import saewidgets.demo.run as run
    from saewidgets.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jupyterlab" else real(name, *a))
    monkeypatch.setattr(run, "demo_artifacts", lambda *a, **k: pytest.fail("the demo ran although --lab cannot"))
    assert main(["demo", "--quick", "--lab"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'saewidgets[lab]'" in err and "JupyterLab" in err


def test_tutorials_command_copies_the_notebooks_and_keeps_edited_copies(tmp_path, capsys):
    from saewidgets.cli import main
    from saewidgets.demo.lab import packaged_tutorials

    source = sorted(p.name for p in packaged_tutorials().glob("*.ipynb"))
    (tmp_path / "01_quickstart.ipynb").write_text("my edits")
    assert main(["tutorials", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == source and len(source) >= 7
    assert (tmp_path / "01_quickstart.ipynb").read_text() == "my edits"
    assert (tmp_path / "02_training.ipynb").read_bytes() == (packaged_tutorials() / "02_training.ipynb").read_bytes()


def test_lab_kernels_get_the_demo_settings_and_the_quick_flag(monkeypatch):
    import json

    from saewidgets.demo import FULL, QUICK, SETTINGS_ENV, settings_from_env
    from saewidgets.demo.lab import lab_environment

    for settings, quick in ((QUICK, True), (FULL, False)):
        env = lab_environment(settings, quick)
        assert env["SAEWIDGETS_QUICK"] == ("1" if quick else "0")
        monkeypatch.setenv(SETTINGS_ENV, env[SETTINGS_ENV])
        assert settings_from_env() == settings and json.loads(env[SETTINGS_ENV])["n_features"] == settings.n_features


def test_lab_kernels_get_the_demos_allocator_setting_unless_the_user_has_one(monkeypatch):
    from saewidgets.demo import QUICK
    from saewidgets.demo.lab import lab_environment
    from saewidgets.models._memory import LARGE_BLOCK

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert lab_environment(QUICK, True)["MALLOC_MMAP_THRESHOLD_"] == str(LARGE_BLOCK)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert lab_environment(QUICK, True)["MALLOC_MMAP_THRESHOLD_"] == "131072"


def test_tutorials_exercises_copy_blanks_every_solution_and_keeps_the_checks(tmp_path):
    import ast
    import json

    import pytest

    from saewidgets.cli import main
    from saewidgets.demo.lab import SOLUTION_END, SOLUTION_START, blank_solutions, packaged_tutorials

    assert main(["tutorials", str(tmp_path), "--exercises"]) == 0
    exercises = 0
    for shipped in sorted(packaged_tutorials().glob("*.ipynb")):
        original = json.loads(shipped.read_text(encoding="utf-8"))
        student = json.loads((tmp_path / shipped.name).read_text(encoding="utf-8"))
        assert len(student["cells"]) == len(original["cells"])
        for before, after in zip(original["cells"], student["cells"]):
            old, new = "".join(before["source"]), "".join(after["source"])
            if before["cell_type"] != "code" or SOLUTION_START not in old:
                assert new == old, f"{shipped.name}: a cell without an exercise changed"
                continue
            exercises += 1
            assert SOLUTION_START not in new and SOLUTION_END not in new
            assert old.split(SOLUTION_END)[1] == new.split('see the exercise above")')[1], "the check must stay"
            # The student's function is a stub that says so; the rest of the cell is untouched Python.
            tree = ast.parse(new)
            stubs = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
            assert stubs, f"{shipped.name}: the exercise's function is gone"
            namespace: dict = {}
            exec(compile(ast.Module(body=stubs, type_ignores=[]), shipped.name, "exec"), namespace)
            with pytest.raises(NotImplementedError, match="your solution here"):
                namespace[stubs[0].name](*([None] * len(stubs[0].args.args)))
    assert exercises >= 3, "tutorials 02, 05 and 06 each carry an exercise the student implements"

    broken = {"cells": [{"cell_type": "code", "source": f"def f():\n    {SOLUTION_START}\n    return 1\n"}]}
    with pytest.raises(ValueError, match="without a closing"):
        blank_solutions(broken)
