"""The fonts of the gateway's PDFs (agenda packs, the annual report): DejaVu Sans, for full
Latin coverage (names such as Łódź or Ørsted), registered with reportlab once per process."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import UsageError

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),)
NAMES = ("CMRReport-Regular", "CMRReport-Bold")
FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf")


def font_file(name: str) -> Path:
    import matplotlib

    # The system's DejaVu first; matplotlib ships the same fonts, so it is there as a fallback.
    for directory in (*FONT_DIRS, Path(matplotlib.get_data_path()) / "fonts" / "ttf"):
        if (directory / name).is_file():
            return directory / name
    raise UsageError(f"the font {name} is missing: install fonts-dejavu-core")


def register_fonts() -> tuple[str, str]:
    """(regular, bold) font names for reportlab styles."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    registered = pdfmetrics.getRegisteredFontNames()
    for font_name, file in zip(NAMES, FILES, strict=True):
        if font_name not in registered:
            pdfmetrics.registerFont(TTFont(font_name, str(font_file(file))))
    return NAMES
