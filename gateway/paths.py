"""Where the shipped, read-only parts of the project live (config/ and schemas/ beside the
package in a checkout or an editable install)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_DIR = PROJECT_ROOT / "config"
DEFAULT_SCHEMAS_DIR = PROJECT_ROOT / "schemas"
