"""The README and docs/: short, linked, free of work history, and their code
runs. (The numbers in them are backed by the benchmarks and tests they name.)"""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()
DOCS = {path: open(path).read() for path in glob.glob(os.path.join(ROOT, "docs", "*.md"))}


def test_the_readme_fits_a_few_screens_and_starts_with_install_verify_use():
    assert len(README.splitlines()) <= 220
    headings = re.findall(r"^## (.+)$", README, flags=re.M)
    for needed in ("Install", "Verify", "Use"):
        assert needed in headings
    assert headings.index("Install") < headings.index("Verify") < headings.index("Use")


@pytest.mark.parametrize("name", ["README.md"] + [os.path.relpath(p, ROOT) for p in DOCS])
def test_no_page_speaks_of_how_the_work_was_organised(name):
    text = open(os.path.join(ROOT, name)).read()
    assert not re.search(r"\b[Ss]ession \d|\b[Ii]ssue #?\d", text), name


@pytest.mark.parametrize("name", ["README.md"] + [os.path.relpath(p, ROOT) for p in DOCS])
def test_every_relative_link_points_at_a_file(name):
    text = open(os.path.join(ROOT, name)).read()
    base = os.path.dirname(os.path.join(ROOT, name))
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert os.path.exists(os.path.join(base, target)), (name, target)


def test_every_test_file_the_readme_names_exists():
    for name in re.findall(r"`(test_[a-z_*]+\.py)`", README):
        assert glob.glob(os.path.join(ROOT, "tests", name)), name


def test_the_readme_verify_snippet_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    snippet = next(b for b in blocks if "assert_matches_torch" in b)
    exec(compile(snippet, "README.md", "exec"), {})


def test_every_example_is_run_by_make_examples_and_described():
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    recipe = makefile[makefile.index("\nexamples:"):].split("\n\n")[0]
    examples_doc = DOCS[os.path.join(ROOT, "docs", "examples.md")]
    for path in glob.glob(os.path.join(ROOT, "examples", "[!_]*.py")):
        name = os.path.basename(path)
        assert f"examples/{name}" in recipe, name
        assert f"`{name}`" in examples_doc, name
