"""Saving never loses a user's files: saves replace only what saewidgets wrote, refuse folders and files that are
not theirs, clean up after killed saves, and report a real full disk in words.

Each promise is checked through the public savers (`save_sae`, `FeatureStats.save`, `Activations.save`); kills are
real SIGKILLs of child processes, the full disk is a real 1 MiB tmpfs (mounted in a private mount namespace).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from saewidgets._atomic_write import MANIFEST, check_writable_dir
from saewidgets.activations import Activations
from saewidgets.analysis.stats import FeatureStats
from saewidgets.sae import SAE, SAEConfig, load_sae, save_sae

KINDS = ["sae", "stats", "activations"]


def version(kind: str, v: int, size: int = 1):
    """Object ``v`` of ``kind`` (``size`` scales it), how to save it, and how to tell which version a folder holds."""
    if kind == "sae":
        obj = SAE(SAEConfig(d_in=8 * size, n_features=16 * size, k=2), torch.Generator().manual_seed(v))
        return obj, lambda path, **kw: save_sae(obj, path, **kw), lambda path: load_sae(path).fingerprint()
    if kind == "activations":
        rows = 64 * size
        obj = Activations(
            np.full((rows, 16), v, np.float32),
            np.zeros(rows, np.int32),
            np.zeros(rows, np.int32),
            np.arange(rows, dtype=np.int32),
        )
        return obj, lambda path, **kw: obj.save(path, **kw), lambda path: float(Activations.load(path).acts[-1, -1])
    F, k, W, nb, S = 16 * size, 2, 3, 2, 2
    obj = FeatureStats(
        fingerprint=f"v{v}",
        model_name="m",
        layer=0,
        n_tokens=1,
        context=(1, 1),
        density=torch.full((F,), float(v)),
        max_act=torch.ones(F),
        mean_act=torch.zeros(F),
        top_values=torch.zeros(F, k),
        top_tokens=torch.zeros(F, k, W, dtype=torch.int32),
        top_acts=torch.zeros(F, k, W),
        band_values=torch.zeros(F, nb, S),
        band_tokens=torch.zeros(F, nb, S, W, dtype=torch.int32),
        band_acts=torch.zeros(F, nb, S, W),
        hist_counts=torch.zeros(F, 4, dtype=torch.int64),
        hist_edges=torch.zeros(F, 5),
        token_strings={0: "a"},
    )
    return obj, lambda path, **kw: obj.save(path, **kw), lambda path: FeatureStats.load(path).fingerprint


def user_project(root: Path) -> Path:
    """A folder holding a user's work, as in the issue: notes.txt and src/."""
    (root / "src").mkdir(parents=True)
    (root / "notes.txt").write_text("work")
    (root / "src" / "main.py").write_text("print('hi')")
    return root


def assert_user_files_intact(root: Path) -> None:
    assert (root / "notes.txt").read_text() == "work"
    assert (root / "src" / "main.py").read_text() == "print('hi')"


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- only our own files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_saving_into_a_users_folder_is_refused_and_deletes_nothing(kind, tmp_path, monkeypatch):
    """The issue's repro: the save used to swap the whole folder in, deleting notes.txt and src/."""
    proj = user_project(tmp_path / "proj")
    _, save, _ = version(kind, 1)
    with pytest.raises(
        FileExistsError,
        match=r"proj already holds files that saewidgets did not write "
        r"\(notes\.txt, src\).*overwrite=True",
    ):
        save(proj)
    assert listing(proj) == ["notes.txt", "src"]
    assert_user_files_intact(proj)
    monkeypatch.chdir(proj)
    with pytest.raises(FileExistsError, match="did not write"):
        save(os.getcwd())
    with pytest.raises(FileExistsError, match="did not write"):
        save(".")
    assert listing(proj) == ["notes.txt", "src"]
    assert listing(tmp_path) == ["proj"]


@pytest.mark.parametrize("kind", KINDS)
def test_overwrite_writes_only_our_files_and_a_resave_replaces_only_them(kind, tmp_path):
    proj = user_project(tmp_path / "proj")
    _, save1, identify = version(kind, 1)
    _, save2, _ = version(kind, 2)
    save1(proj, overwrite=True)
    assert_user_files_intact(proj)
    ours = set(json.loads((proj / MANIFEST).read_text())["files"])
    assert ours and ours.isdisjoint({"notes.txt", "src"})
    assert set(listing(proj)) == ours | {MANIFEST, "notes.txt", "src"}
    first = identify(proj)
    (proj / "later.txt").write_text("added after the save")
    save2(proj)  # our folder now (it has our manifest): no overwrite needed, and the user's files stay
    assert identify(proj) != first
    assert_user_files_intact(proj)
    assert (proj / "later.txt").read_text() == "added after the save"
    assert set(listing(proj)) == ours | {MANIFEST, "notes.txt", "src", "later.txt"}


def test_a_resave_in_another_format_removes_our_old_files_but_not_the_users(tmp_path):
    proj = user_project(tmp_path / "proj")
    sae, _, _ = version("sae", 1)
    save_sae(sae, proj, overwrite=True)
    save_sae(sae, proj, format="saelens")
    assert listing(proj) == sorted([MANIFEST, "cfg.json", "notes.txt", "sae_weights.safetensors", "src"])
    assert torch.equal(load_sae(proj).W_enc, sae.W_enc)


def test_a_folder_saved_before_manifests_existed_is_replaced_without_overwrite(tmp_path):
    sae, _, _ = version("sae", 1)
    folder = save_sae(sae, tmp_path / "sae")
    (folder / MANIFEST).unlink()  # what an older saewidgets left: exactly our two files
    other, _, _ = version("sae", 2)
    save_sae(other, folder)
    assert load_sae(folder).fingerprint() == other.fingerprint()
    (folder / MANIFEST).unlink()
    (folder / "config.json").unlink()  # only one of our names: it could be the user's own config.json
    (folder / "config.json").write_text("{}")
    (folder / "readme.md").write_text("mine")
    with pytest.raises(FileExistsError, match=r"readme\.md"):
        save_sae(sae, folder)


def test_an_edited_manifest_never_makes_a_save_delete_elsewhere(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    sae, _, _ = version("sae", 1)
    folder = save_sae(sae, tmp_path / "sae")
    (folder / MANIFEST).write_text(
        json.dumps({"written_by": "saewidgets", "files": ["../precious.txt", "/etc/hostname", "..", "sae.safetensors"]})
    )
    save_sae(sae, folder, format="saelens")
    assert outside.read_text() == "keep me"
    assert listing(folder) == sorted([MANIFEST, "cfg.json", "config.json", "sae_weights.safetensors"])


@pytest.mark.parametrize("kind", KINDS)
def test_an_existing_file_is_never_turned_into_a_folder(kind, tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"precious")
    _, save, _ = version(kind, 1)
    with pytest.raises(NotADirectoryError, match=r"model\.bin is a file, not a folder"):
        save(target)
    with pytest.raises(NotADirectoryError, match=r"a part of that path is a file"):
        save(target / "inside")
    assert target.read_bytes() == b"precious"
    assert listing(tmp_path) == ["model.bin"]  # no hidden temporary left either


def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sae, _, _ = version("sae", 1)
    with pytest.raises(ValueError, match=r"empty \(''\)"):
        save_sae(sae, "")
    assert listing(tmp_path) == []


def test_a_new_folder_gets_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        folder = save_sae(version("sae", 1)[0], tmp_path / "sae")
    finally:
        os.umask(mask)
    assert folder.stat().st_mode & 0o777 == 0o755


# -- killed saves --------------------------------------------------------------------------------------------------

# Saves ``kind`` version 2 to ``path`` and dies by SIGKILL at the moment named by ``when``:
#   "writing"  - inside the save, while its temporary folder is half-written;
#   "moving"   - after the save was committed, between moving one of its files into place and the next.
KILL_CHILD = """
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    from test_atomic_write import version
    kind, path, when = sys.argv[2], sys.argv[3], sys.argv[4]
    obj, save, _ = version(kind, 2, size=8)
    if when == "writing":
        import saewidgets._atomic_write as aw
        real = aw._write_manifest
        def die(folder, names):
            (folder / "half-written").write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
        aw._write_manifest = die
    else:
        real_replace = os.replace
        def replace_then_die(src, dst):
            real_replace(src, dst)
            if ".saewidgets-commit" in os.fspath(src):
                os.kill(os.getpid(), signal.SIGKILL)
        os.replace = replace_then_die
    save(path)
    print("finished without being killed", flush=True)
"""


def killed_save(kind: str, path: Path, when: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILL_CHILD), str(Path(__file__).parent), kind, str(path), when],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr[-3000:]


def hidden_leftovers(*folders: Path) -> list[str]:
    return [p.name for folder in folders for p in folder.iterdir() if p.name.startswith(".") and p.name != MANIFEST]


@pytest.mark.parametrize("kind", KINDS)
def test_temporaries_of_saves_killed_mid_write_are_removed_by_the_next_save(kind, tmp_path):
    _, save1, identify = version(kind, 1)
    new, existing = tmp_path / "new", user_project(tmp_path / "proj")
    save1(existing, overwrite=True)
    before = identify(existing)
    for target in (new, existing):
        killed_save(kind, target, "writing")
    assert len(hidden_leftovers(tmp_path)) == 1 and len(hidden_leftovers(existing)) == 1, "SIGKILL left nothing?"
    if kind == "sae":  # the next killed save removes the leftover of the one before: kills never pile up
        killed_save(kind, new, "writing")
        assert len(hidden_leftovers(tmp_path)) == 1
    assert not new.exists(), "a save killed mid-write made its folder appear"
    assert identify(existing) == before, "a save killed mid-write changed the previous version"
    (tmp_path / ".new.abcd1234.tmp").mkdir()  # the name an older saewidgets gave its temporaries
    live = tmp_path / f".new.{os.getpid()}.zzzz9999.tmp"  # a save in progress in a living process: not stale
    live.mkdir()
    _, save2, _ = version(kind, 2)
    save2(new)
    save2(existing)
    assert hidden_leftovers(tmp_path) == [live.name]
    assert hidden_leftovers(existing) == []
    assert_user_files_intact(existing)


@pytest.mark.parametrize("kind", ["activations"])  # sae and stats: tests/test_reliability_faults.py
def test_a_save_killed_while_moving_its_files_into_place_is_finished_by_the_next_load(kind, tmp_path):
    proj = user_project(tmp_path / "proj")
    _, save1, identify = version(kind, 1)
    save1(proj, overwrite=True)
    killed_save(kind, proj, "moving")
    assert (proj / ".saewidgets-commit").is_dir()  # killed in the middle: some files new, some old
    assert identify(proj) == identify(version(kind, 2, size=8)[1](tmp_path / "reference"))
    assert not (proj / ".saewidgets-commit").exists()
    assert_user_files_intact(proj)


# -- real full disk and read-only places ----------------------------------------------------------------------------

TMPFS_CHILD = """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from test_atomic_write import version
    from saewidgets._atomic_write import check_writable_dir
    full, readonly = Path(sys.argv[2]), Path(sys.argv[3])
    for kind in ("sae", "stats", "activations"):
        _, save_small, identify = version(kind, 1)
        _, save_big, _ = version(kind, 2, size={"sae": 64, "stats": 1024, "activations": 512}[kind])  # 2+ MiB
        target = full / kind
        save_small(target)
        before = identify(target)
        try:
            save_big(target)
            print(kind, "SAVED?!")
        except OSError as err:
            print(kind, "|", err)
        assert identify(target) == before, kind
        assert sorted(p.name for p in full.iterdir() if p.name.startswith(".")) == [], kind
        assert sorted(p.name for p in target.iterdir() if p.name.startswith(".")) == [".saewidgets-files.json"], kind
    for path in (readonly, readonly / "new" / "deeper"):
        try:
            check_writable_dir(path, "checkpoint_dir")
            print("writable?!")
        except PermissionError as err:
            print("readonly |", err)
"""


def test_a_real_full_disk_is_reported_in_words_and_keeps_the_previous_version(tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux unshare to mount a small tmpfs in a private mount namespace")
    full, readonly = tmp_path / "full", tmp_path / "readonly"
    full.mkdir()
    readonly.mkdir()
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(TMPFS_CHILD))
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {full} && mount -t tmpfs -o ro,size=1m tmpfs {readonly} && "
        f"exec {sys.executable} {child} {Path(__file__).parent} {full} {readonly}"
    )
    proc = subprocess.run(
        [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    if proc.returncode != 0 and "mount" in proc.stderr and "Traceback" not in proc.stderr:
        pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    for kind in KINDS:
        line = next(x for x in lines if x.startswith(kind + " "))
        assert "[Errno 28] The disk is full" in line and f"could not write {full / kind}" in line, line
        assert "the previous" in line and "is intact" in line, line
    readonly_lines = [x for x in lines if x.startswith("readonly |")]
    assert len(readonly_lines) == 2 and all(
        "checkpoint_dir=" in x and "cannot be written" in x for x in readonly_lines
    ), lines


def test_check_writable_dir_names_the_argument_and_what_is_wrong(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"out='.*afile' is a file, not a folder"):
        check_writable_dir(afile, "out")
    with pytest.raises(NotADirectoryError, match=r"checkpoint_dir='.*afile/ckpt' is below .*afile, which is a file"):
        check_writable_dir(afile / "ckpt", "checkpoint_dir")
    with pytest.raises(ValueError, match=r"out is empty"):
        check_writable_dir("", "out")
    assert check_writable_dir(tmp_path / "not" / "yet", "out") == tmp_path / "not" / "yet"
    assert not (tmp_path / "not").exists()  # checking creates nothing
    assert listing(tmp_path) == ["afile"]


def test_a_long_folder_name_saves_although_its_temporary_name_would_be_longer(tmp_path):
    """Names up to the filesystem's 255 bytes work: temporaries use a shortened name, not name + pid + suffix."""
    long = tmp_path / ("s" * 250)
    (tmp_path / f".{'s' * 64}.999999999.abcd1234.tmp").mkdir()  # a dead save's temporary of that folder
    save_sae(version("sae", 1)[0], long)
    save_sae(version("sae", 2)[0], long)
    assert listing(tmp_path) == ["s" * 250]
    assert load_sae(long).fingerprint() == version("sae", 2)[0].fingerprint()
