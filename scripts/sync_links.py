"""Copy the repository address from pyproject.toml into the README's Colab badges and into the
Colab setup cell of every notebook.

    python scripts/sync_links.py          # rewrite what is out of date
    python scripts/sync_links.py --check  # exit 1 and list the files that are out of date
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "(https://colab.research.google.com/github/{slug}/blob/main/notebooks/{name})")
CLONE = re.compile(r"git clone -q --depth 1 https://github\.com/[\w.-]+/[\w.-]+ ")
BADGE_LINK = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/main/")


def repository_slug() -> str:
    """``owner/name`` from ``[project.urls] Repository`` in pyproject.toml."""
    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    return url.removeprefix("https://github.com/").strip("/")


def synced(text: str, slug: str) -> str:
    text = CLONE.sub(f"git clone -q --depth 1 https://github.com/{slug} ", text)
    return BADGE_LINK.sub(f"https://colab.research.google.com/github/{slug}/blob/main/", text)


def main(check: bool) -> int:
    slug = repository_slug()
    files = [ROOT / "README.md", *sorted((ROOT / "notebooks").rglob("*.ipynb"))]
    stale = []
    for path in files:
        text = path.read_text()
        new = synced(text, slug)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not check:
                path.write_text(new)
    for path in stale:
        print(f"{'out of date' if check else 'updated'}: {path}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
