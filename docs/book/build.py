"""Build the book: ``python docs/book/build.py [--out build/docs]`` (``make docs``).

Stages the sources under ``OUT/src`` and runs Sphinx (``docs/book/conf.py``) into
``OUT/html`` with warnings as errors (``-W --keep-going``: a broken reference fails). Staged,
never committed, and rewritten only where they changed (Sphinx then rebuilds only those):

* ``index.md``: the README, the landing page, followed by the book's table of contents;
* ``docs/*.md``, ``docs/references.bib``, ``figures/``: copies (the pages link to them by the
  same relative paths as on GitHub);
* ``notebooks/*.ipynb``: the committed notebooks, rendered from their outputs (not executed);
* ``solutions.md``: every exercise of :mod:`dmlkit.exercises`, grouped by notebook, its
  statement shown and its reference solution folded in a ``<details>`` element, generated from
  the package at each build (the code of a solution is its source in
  :mod:`dmlkit.exercises.solutions`), so that it cannot drift;
* ``api/``: one page per public module of ``dmlkit`` (autodoc), found by walking the package.

Nothing is written outside ``OUT``.
"""

from __future__ import annotations

import argparse
import ast
import html
import importlib
import inspect
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF = Path(__file__).resolve().parent
DEFAULT_OUT = REPO / "build" / "docs"

#: the user guide in reading order (docs/<name>.md; a chapter not listed comes after these)
GUIDE = ["losses", "weights", "formulas", "scaling", "memory", "evaluation", "training",
         "adversarial", "notebooks", "extending", "development", "gpu", "references"]
#: modules left out of the API reference: entry points and private helpers
PRIVATE = re.compile(r"(^|\.)(_[^.]*|__main__)$")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#$|{}~])")

TOC = """

```{toctree}
:hidden:
:maxdepth: 2

guide
tutorials
solutions
api/index
```
"""


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it already holds it (Sphinx rebuilds changed files)."""
    from dmlkit.atomic import atomic_write_text

    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def _copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` (with its time stamp) unless they are the same already."""
    if target.exists() and target.read_bytes() == source.read_bytes():
        return
    from dmlkit.atomic import atomic_write_bytes

    atomic_write_bytes(target, source.read_bytes())
    shutil.copystat(source, target)


def _escape(text: str) -> str:
    """Plain text as Markdown that shows it as it is."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


# ----------------------------------------------------------------------------- pages
def guide_page() -> str:
    """The user guide: the chapters of GUIDE in that order, then any other docs/*.md."""
    found = sorted(page.stem for page in (REPO / "docs").glob("*.md"))
    order = [name for name in GUIDE if name in found] + [n for n in found if n not in GUIDE]
    items = "\n".join(f"docs/{name}" for name in order)
    return ("# User guide\n\nThe chapters of the documentation: every loss and its formulas, the "
            "weight view, scaling, memory and proxies, evaluation, training, the adversarial "
            "study, the notebooks, how to extend the collection, development and the GPU check, "
            "and the bibliography.\n\n"
            f"```{{toctree}}\n:maxdepth: 1\n\n{items}\n```\n")


def tutorials_page(notebooks: list[Path]) -> str:
    items = "\n".join(f"notebooks/{nb.stem}" for nb in notebooks)
    return ("# Notebooks\n\nEvery notebook as committed, with the outputs of its run at the "
            "default parameters (how they are built and run: [the notebooks chapter]"
            "(docs/notebooks.md)). The exercises' reference solutions are on the "
            "[exercise solutions](solutions.md) page.\n\n"
            f"```{{toctree}}\n:maxdepth: 1\n\n{items}\n```\n")


def _solution_sources() -> dict[str, str]:
    """Exercise name -> the source of its solution in dmlkit/exercises/solutions.py, preceded
    by the private helpers it calls."""
    from dmlkit.exercises import solutions

    text = inspect.getsource(solutions)
    tree = ast.parse(text)
    blocks: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            blocks[node.name] = node
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            blocks[node.targets[0].id] = node
    out = {}
    for name in solutions.ANSWERS:
        node = blocks[name]
        helpers = [h for h in dict.fromkeys(n.id for n in ast.walk(node)
                                            if isinstance(n, ast.Name))
                   if h.startswith("_") and h in blocks]
        out[name] = "\n\n\n".join(ast.get_source_segment(text, blocks[h])
                                  for h in [*helpers, name])
    return out


def _title(notebook: Path) -> str:
    """The first heading of a notebook (its title), else its file name."""
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return notebook.stem


def solutions_page(notebooks: list[Path]) -> str:
    """Every exercise by notebook: its statement, and its solution folded away."""
    from dmlkit import exercises

    pages = {nb.stem[:2]: nb for nb in notebooks}
    sources = _solution_sources()
    lines = ["# Exercise solutions", "",
             "The reference solutions of the notebooks' exercises (`dmlkit.exercises`; a "
             "notebook run with `SOLUTIONS = True` fills them in). Each is folded: try the "
             "exercise first, check it with `exercises.check(name, answer)`, ask for "
             "`exercises.hint(name, level)`, then unfold.", ""]
    for number in dict.fromkeys(exercises.EXERCISES[n].notebook for n in exercises.available()):
        nb = pages[number]
        lines += [f"## {_escape(_title(nb))}", "",
                  f"The exercises of [the notebook](notebooks/{nb.name}).", ""]
        for name in exercises.available(number):
            ex = exercises.get(name)
            lines += [f"### {_escape(ex.title)}", "",
                      f"`{name}`: {ex.kind}, about {ex.minutes} min."
                      + (f" Your function: `{ex.call}`." if ex.call else ""), "",
                      _escape(ex.statement), "",
                      f'<details class="solution"><summary>Solution: {html.escape(name)}'
                      "</summary>", "", "```python", sources[name], "```", ""]
            if ex.reveal:
                lines += [f"What the experiment shows: {_escape(ex.reveal)}", ""]
            lines += ["</details>", ""]
    return "\n".join(lines)


def public_modules() -> dict[str, list[str]]:
    """Top-level public module of dmlkit -> it and its public submodules, in name order."""
    import dmlkit

    groups: dict[str, list[str]] = {}
    for info in pkgutil.walk_packages(dmlkit.__path__, "dmlkit."):
        if PRIVATE.search(info.name):
            continue
        top = ".".join(info.name.split(".")[:2])
        groups.setdefault(top, []).append(info.name)
    return {top: sorted(mods, key=lambda m: (m != top, m)) for top, mods in sorted(groups.items())}


def _summary(module: str) -> str:
    doc = inspect.getdoc(importlib.import_module(module)) or ""
    first = doc.split("\n\n")[0].replace("\n", " ").strip()
    return _escape(first)


def api_pages() -> dict[str, str]:
    """api/<module>.md for every top-level public module, and api/index.md."""
    pages = {}
    rows = []
    for top, modules in public_modules().items():
        short = top.split(".", 1)[1]
        body = [f"# {top}", ""]
        for module in modules:
            if module != top:
                body += [f"## {module}", ""]
            body += ["```{eval-rst}", f".. automodule:: {module}", "   :members:",
                     "   :show-inheritance:", "```", ""]
        pages[f"api/{short}.md"] = "\n".join(body)
        rows.append(f"| [`{top}`]({short}.md) | {_summary(top)} |")
    items = "\n".join(f"{top.split('.', 1)[1]}" for top in public_modules())
    pages["api/index.md"] = (
        "# API reference\n\nThe public modules of `dmlkit`, from their docstrings.\n\n"
        "| module | what |\n|---|---|\n" + "\n".join(rows) + "\n\n"
        f"```{{toctree}}\n:hidden:\n:maxdepth: 1\n\n{items}\n```\n")
    return pages


# ----------------------------------------------------------------------------- staging
def stage(src: Path) -> list[Path]:
    """Write the book's sources under ``src``; remove what is staged there no more."""
    notebooks = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    wanted: dict[Path, Path | str] = {
        src / "index.md": (REPO / "README.md").read_text(encoding="utf-8") + TOC,
        src / "guide.md": guide_page(),
        src / "tutorials.md": tutorials_page(notebooks),
        src / "solutions.md": solutions_page(notebooks),
    }
    for name, text in api_pages().items():
        wanted[src / name] = text
    for page in [*sorted((REPO / "docs").glob("*.md")), REPO / "docs" / "references.bib"]:
        wanted[src / "docs" / page.name] = page
    for path in sorted((REPO / "figures").iterdir()):
        if path.is_file():
            wanted[src / "figures" / path.name] = path
    for nb in notebooks:
        wanted[src / "notebooks" / nb.name] = nb
    for target, content in wanted.items():
        if isinstance(content, Path):
            _copy(content, target)
        else:
            _write(target, content)
    for path in sorted(src.rglob("*"), reverse=True):
        if path.is_file() and path not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return sorted(wanted)


def build(out: Path = DEFAULT_OUT, jobs: str = "1", fresh: bool = False) -> int:
    """Stage into ``out/src`` and build ``out/html``; Sphinx's exit status."""
    out = Path(out)
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    stage(out / "src")
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q",
           "-j", str(jobs), "-c", str(CONF), "-d", str(out / "doctrees"), str(out / "src"),
           str(out / "html")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    return subprocess.run(cmd, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="the book's folder (default: build/docs): src/, doctrees/, html/")
    parser.add_argument("--jobs", default="1", help="Sphinx's -j (a number or 'auto')")
    parser.add_argument("--fresh", action="store_true", help="remove OUT first")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rc = build(args.out, args.jobs, args.fresh)
    took = time.perf_counter() - start
    where = args.out / "html" / "index.html"
    print(f"book {'built' if rc == 0 else 'FAILED'} in {took:.0f} s: {where}")
    return rc


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
