"""Render the tutorials with their outputs into docs/tutorials/ (HTML), from a quick-mode run.

The committed notebooks carry no outputs (tests/test_tutorials_clean.py); this publishes a copy that does, so a
reader sees every figure and number without running anything. Each notebook is executed in quick mode
(``SAEWIDGETS_QUICK=1``, as CI runs it) with plotly figures drawn from the plotly CDN (the pages stay small) and
widget state saved, then converted to one HTML page per notebook plus an index.

    python scripts/render_tutorials.py                 # every tutorial (minutes each on a CPU; demo cached)
    python scripts/render_tutorials.py 01 06           # some of them
    python scripts/render_tutorials.py --keep-executed /tmp/exec   # also keep the executed .ipynb files
    python scripts/render_tutorials.py --from-executed /tmp/exec   # re-render only: outputs from those files,
                                                                   # text from the current notebooks

Needs the ``demo`` and ``test`` extras (nbclient, nbconvert). Run it under the shared heavy lock on a shared machine.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
OUT = ROOT / "docs" / "tutorials"


def execute(path: Path, timeout: int = 900) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(TUTORIALS)}},
        store_widget_state=True,
    )
    client.execute()
    return nb


def with_current_text(executed: nbformat.NotebookNode, current: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The executed notebook with the current notebook's markdown; refuses when any code cell changed since."""
    code = lambda nb: [c.source for c in nb.cells if c.cell_type == "code"]  # noqa: E731
    if code(executed) != code(current):
        raise SystemExit("the code changed since that run: execute the notebook again (drop --from-executed)")
    outputs = iter([c for c in executed.cells if c.cell_type == "code"])
    merged = current.copy()
    merged.cells = [next(outputs) if c.cell_type == "code" else c for c in current.cells]
    merged.metadata = executed.metadata
    return merged


#: Saved widget state above this many bytes is dropped from a page, so each view's static copy (the text/html every
#: saewidgets view carries beside its widget) is shown instead: a FamilyMap's live state holds every size's points and
#: cards (5 MB in 09), while its static copy is a quarter of a megabyte and works without a kernel just as well.
MAX_WIDGET_STATE = 2_000_000


def without_heavy_widget_state(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` without its saved widget state when that is over `MAX_WIDGET_STATE` bytes (see there)."""
    state = nb.metadata.get("widgets")
    if state is not None and len(json.dumps(state)) > MAX_WIDGET_STATE:
        nb = nb.copy()
        nb.metadata = nbformat.NotebookNode({k: v for k, v in nb.metadata.items() if k != "widgets"})
    return nb


def to_html(nb: nbformat.NotebookNode) -> str:
    nb = without_heavy_widget_state(nb)
    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb)
    return body


#: nbconvert's template CSS (~260 KB, the same on every page) lives once in this file beside the pages.
SHARED_CSS = "nbconvert.css"


def with_shared_styles(page: str) -> tuple[str, str]:
    """``page`` with the ``<style>`` blocks of its ``<head>`` (the template's CSS) replaced by one link to
    `SHARED_CSS`, and that CSS. Styles inside the body (what the outputs carry) stay in the page."""
    head_end = page.index("</head>")
    blocks = list(re.finditer(r"<style[^>]*>(.*?)</style>", page[:head_end], re.S))
    if not blocks:
        return page, ""
    parts, pos = [], 0
    for k, block in enumerate(blocks):
        parts.append(page[pos : block.start()])
        if k == 0:
            parts.append(f'<link rel="stylesheet" href="{SHARED_CSS}">')
        pos = block.end()
    parts.append(page[pos:])
    return "".join(parts), "\n".join(block.group(1) for block in blocks)


def with_page_relative_links(page: str) -> str:
    """``page`` with its relative links, written in the notebooks relative to ``tutorials/`` (e.g. the header's
    ``../docs/tutorials/01_quickstart.html``), made relative to the page's own folder, ``docs/tutorials/``.
    Apply once, to a freshly converted page: links already made page-relative would be moved again."""

    def relink(match: re.Match[str]) -> str:
        target = match.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:|#|/", target):  # a URL, an anchor or an absolute path: left as it is
            return match.group(0)
        path, _, anchor = target.partition("#")
        moved = os.path.relpath(os.path.normpath(TUTORIALS / path), OUT).replace(os.sep, "/")
        return f'{match.group(1)}{moved}{"#" + anchor if anchor else ""}"'

    return re.sub(r'(<a href=")([^"]*)"', relink, page)


def write_page(path: Path, page: str) -> None:
    """Write a rendered page and the shared stylesheet it links (rewritten from this page: one nbconvert, one CSS)."""
    page, css = with_shared_styles(with_page_relative_links(page))
    if css:
        (path.parent / SHARED_CSS).write_text(css, encoding="utf-8")
    path.write_text(page, encoding="utf-8")


def write_index(pages: list[Path]) -> None:
    items = "\n".join(
        f'<li><a href="{html.escape(p.name)}">{html.escape(p.stem.replace("_", " "))}</a></li>' for p in pages
    )
    (OUT / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>saewidgets tutorials</title>"
        "<h1>saewidgets tutorials, rendered from a quick-mode run</h1>"
        "<p>Each page is a tutorial notebook with the outputs of one run in quick mode (SAEWIDGETS_QUICK=1, the quick "
        "demo SAE) on a 2-core CPU. The notebooks themselves are in <code>tutorials/</code>.</p>"
        f"<ul>\n{items}\n</ul>\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("numbers", nargs="*", help="tutorial numbers to render (default: all)")
    parser.add_argument("--keep-executed", type=Path, help="also write the executed notebooks into this folder")
    parser.add_argument("--from-executed", type=Path, help="render notebooks executed earlier into this folder")
    args = parser.parse_args(argv)
    os.environ["SAEWIDGETS_QUICK"] = "1"
    os.environ["PLOTLY_RENDERER"] = "notebook_connected"  # plotly.js from its CDN: pages of kilobytes, not megabytes
    notebooks = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
    if args.numbers:
        notebooks = [p for p in notebooks if p.name[:2] in args.numbers]
    OUT.mkdir(parents=True, exist_ok=True)
    for path in notebooks:
        start = time.time()
        if args.from_executed:
            if not (args.from_executed / path.name).exists():
                print(f"{path.name}: no executed copy in {args.from_executed}; skipped")
                continue
            current = nbformat.read(path, as_version=4)
            nb = with_current_text(nbformat.read(args.from_executed / path.name, as_version=4), current)
        else:
            nb = execute(path)
        if args.keep_executed:
            args.keep_executed.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, args.keep_executed / path.name)
        page = OUT / path.with_suffix(".html").name
        write_page(page, to_html(nb))
        print(f"{path.name}: rendered in {time.time() - start:.0f} s -> {page.relative_to(ROOT)}")
    write_index(sorted(OUT.glob("[0-9][0-9]_*.html")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
