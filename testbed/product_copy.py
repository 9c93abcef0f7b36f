"""The product's packages laid out as they install (customer_friendly/<component>/), for an
interpreter outside the venv, such as Debian's python3 run as another uid."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_product(dest: Path, components: tuple[str, ...] = ("agent", "contract", "certs")) -> Path:
    """Copy `components` under dest/customer_friendly/ and return dest, the directory to run from."""
    for component in components:
        shutil.copytree(ROOT / component, dest / "customer_friendly" / component,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for directory in (dest, dest / "customer_friendly"):
        directory.chmod(0o755)
    return dest
