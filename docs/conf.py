"""Sphinx configuration of the course's web site. Build it with ``python docs/build.py`` (see there):
the source folder is made from the student edition, so this file is the only configuration."""

import tomllib
from pathlib import Path

project = "Attention, hands on"
author = "the course's authors"
copyright = "the course's authors"
root_doc = "index"

extensions = ["myst_nb"]
# The notebooks are shown as committed, with their real outputs: nothing is executed.
nb_execution_mode = "off"
nb_output_stderr = "show"
# $x$ and $$...$$ as in Jupyter; \begin{cases} etc. inside them.
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

html_theme = "sphinx_book_theme"
html_title = project
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_last_updated_fmt = None
html_show_sourcelink = False
# the repository's one address, as the Colab badges use it (pyproject.toml, [project.urls])
REPOSITORY = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())[
    "project"]["urls"]["Repository"]
html_theme_options = {
    "repository_url": REPOSITORY,
    "use_repository_button": True,
    "use_download_button": True,
    "show_toc_level": 2,
}
