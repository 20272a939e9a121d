"""The distribution (pyproject.toml), the library's import boundary, the commands, the docs.

The wheel itself is built, installed into a fresh virtual environment and used from an
empty folder by .ci/run (.ci/installed_check.py); these tests check from the source what
that relies on.
"""

import ast
import glob
import importlib
import os
import re
import subprocess
import sys
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("train", "evaluate", "visualize_embeddings", "embed", "retrieve",
           "search_hyperparams", "synthesize_results")
# What a TensorFlow Addons user or a reader of Moindrot's blog imports from the top level.
TOP_LEVEL = ("TripletSemiHardLoss", "TripletHardLoss", "triplet_semihard_loss",
             "triplet_hard_loss", "BatchAllTripletLoss", "BatchHardTripletLoss",
             "FractionPositiveTriplets", "batch_all_triplet_loss", "batch_hard_triplet_loss",
             "batch_semihard_triplet_loss", "pairwise_distances", "retrieval_metrics",
             "ContrastiveLoss", "contrastive_loss", "NpairsLoss", "npairs_loss",
             "NpairsMultilabelLoss", "npairs_multilabel_loss", "LiftedStructLoss",
             "lifted_struct_loss", "TripletLoss")


def pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def imported_modules(path):
    """Top-level names of the modules a file imports (relative imports as '.')."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield "." if node.level else node.module.split(".")[0]


def test_library_imports_only_tensorflow_keras_and_numpy():
    allowed = {"tensorflow", "keras", "numpy", "tftriplet"} | set(sys.stdlib_module_names)
    files = glob.glob(os.path.join(REPO, "tftriplet", "*.py"))
    assert len(files) >= 6
    for path in files:
        outside = set(imported_modules(path)) - allowed
        assert not outside, f"{os.path.relpath(path, REPO)} imports {sorted(outside)}"


def test_application_imports_itself_relatively():
    """As `model` in a clone and `tftriplet_app` installed, the app never names itself."""
    for path in glob.glob(os.path.join(REPO, "model", "**", "*.py"), recursive=True):
        assert "model" not in set(imported_modules(path)), os.path.relpath(path, REPO)


def test_top_level_names():
    import tftriplet
    from tftriplet import losses, metrics, triplet_loss

    assert sorted(tftriplet.__all__) == sorted(TOP_LEVEL + ("__version__",))
    for name in TOP_LEVEL:
        module = next(m for m in (losses, triplet_loss, metrics) if hasattr(m, name))
        assert getattr(tftriplet, name) is getattr(module, name), name


def test_version_is_in_one_place():
    import tftriplet

    assert pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "tftriplet.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", tftriplet.__version__)
    with open(os.path.join(REPO, "CHANGELOG.md")) as f:
        assert f"## {tftriplet.__version__} " in f.read()


@pytest.mark.e2e
def test_library_imports_beside_a_users_model_py(tmp_path):
    """A project with its own model.py (on the path first, as a script's folder is)."""
    (tmp_path / "model.py").write_text("USERS_OWN = True\n")
    code = ("import sys, model, tftriplet\n"
            "from tftriplet import TripletSemiHardLoss\n"
            "assert model.USERS_OWN\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'model'))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['model']"


def test_every_script_is_an_installed_command():
    scripts = pyproject()["project"]["scripts"]
    assert scripts == {f"tftriplet-{name.replace('_', '-')}": f"tftriplet_app.commands.{name}:run"
                       for name in SCRIPTS}
    for name in SCRIPTS:
        assert callable(importlib.import_module(f"model.commands.{name}").run)
        with open(os.path.join(REPO, f"{name}.py")) as f:
            assert f"from model.commands import {name}\n" in f.read()


@pytest.mark.parametrize("name", ["train", "embed"])
def test_command_help_is_the_scripts(name, tmp_path):
    """The script and the command module give the same --help, from any folder."""
    script = subprocess.run([sys.executable, os.path.join(REPO, f"{name}.py"), "--help"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    command = subprocess.run([sys.executable, "-m", f"model.commands.{name}", "--help"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=REPO))
    assert script.returncode == command.returncode == 0, (script.stderr, command.stderr)
    assert script.stdout == command.stdout and "--model_dir" in script.stdout


def test_packages_map_the_library_the_app_and_the_data():
    tool = pyproject()["tool"]["setuptools"]
    package_dirs = tool["package-dir"]

    def folder(package):
        parent = max((p for p in package_dirs if package == p or package.startswith(p + ".")),
                     key=len)
        return os.path.join(REPO, package_dirs[parent], *package[len(parent):].split(".")[1:])

    subpackages = glob.glob(os.path.join(REPO, "model", "*", "__init__.py"))
    python_packages = {"tftriplet", "tftriplet_app"} | {
        "tftriplet_app." + os.path.basename(os.path.dirname(init)) for init in subpackages}
    assert set(tool["packages"]) == python_packages | {"tftriplet_app.data"}
    for package in tool["packages"]:
        assert os.path.isdir(folder(package)), package
    shipped = [path for pattern in tool["package-data"]["tftriplet_app.data"]
               for path in glob.glob(os.path.join(folder("tftriplet_app.data"), pattern))]
    names = sorted(os.path.relpath(path, os.path.join(REPO, "data")) for path in shipped)
    assert names == ["README.md", "mnist/t10k-images-idx3-ubyte.gz",
                     "mnist/t10k-labels-idx1-ubyte.gz", "mnist/train-images-idx3-ubyte.gz",
                     "mnist/train-labels-idx1-ubyte.gz"]


def test_default_data_is_the_shipped_mnist():
    from model import shipped_data

    assert os.path.samefile(shipped_data.MNIST_DIR, os.path.join(REPO, "data", "mnist"))


# --- The docs ---------------------------------------------------------------------------

def markdown_files():
    return ([os.path.join(REPO, name) for name in ("README.md", "CHANGELOG.md")]
            + [os.path.join(REPO, "data", "README.md")]
            + sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))))


def heading_anchors(path):
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, - for spaces."""
    with open(path) as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in headings}


def relative_links(path):
    with open(path) as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.DOTALL)
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", text)
            if not re.match(r"[a-z]+:", target)]


def test_every_relative_link_in_the_docs_resolves():
    checked = 0
    for page in markdown_files():
        for target in relative_links(page):
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            where = f"{os.path.relpath(page, REPO)}: {target}"
            assert os.path.exists(resolved), where
            if anchor:
                assert anchor in heading_anchors(resolved), where
            checked += 1
    assert checked >= 20


def test_readme_is_short_and_links_every_docs_page():
    readme = os.path.join(REPO, "README.md")
    with open(readme) as f:
        assert len(f.read().splitlines()) <= 200
    linked = {os.path.normpath(os.path.join(REPO, target.partition("#")[0]))
              for target in relative_links(readme)}
    for page in glob.glob(os.path.join(REPO, "docs", "*.md")):
        assert page in linked, f"README.md does not link {os.path.relpath(page, REPO)}"
