"""mkdocs hook: serve MathJax from the installed ``django-static-mathjax`` package (the ``docs``
extra), so that pages typeset their equations with no network access at build or view time.

Adds ``js/mathjax/tex-svg.js`` (MathJax 3's TeX-to-SVG bundle: one file, glyphs included, no
font files to load) and MathJax's licence next to it to the built site. Nothing is vendored in
the repository.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

TARGET = "js/mathjax"
SOURCES = {"tex-svg.js": "es5/tex-svg.js", "LICENSE": "LICENSE"}


def _mathjax_root() -> Path:
    spec = find_spec("mathjax")
    for location in (spec.submodule_search_locations or []) if spec else []:
        root = Path(location) / "static" / "mathjax"
        if (root / SOURCES["tex-svg.js"]).is_file():
            return root
    raise PluginError(
        "MathJax not found: install the docs extra (pip install -e '.[docs]', which brings "
        "django-static-mathjax), or run ./dev install"
    )


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = _mathjax_root()
    for name, source in SOURCES.items():
        files.append(File.generated(config, f"{TARGET}/{name}", abs_src_path=str(root / source)))
    return files
