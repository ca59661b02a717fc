"""Fonts for plots: Chinese, Japanese and Korean labels must render as glyphs, not empty boxes.

matplotlib (>= 3.6) falls back from one family to the next glyph by glyph when `font.family` is a list, so plots use
["DejaVu Sans", <an installed CJK family>]: Latin text keeps matplotlib's default look and CJK characters come from
the CJK font. `--font PATH` puts the user's font first. When the text needs glyphs that no chosen font has, the caller
gets one warning string (with how to install a font) instead of matplotlib's warning per missing glyph.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .. import charsets
from ..errors import PosembError

DEFAULT_FAMILY = "DejaVu Sans"  # matplotlib's bundled default: always present

# Families known to cover CJK, best first. Names as fontconfig / matplotlib report them.
CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK KR",
    "Noto Sans CJK TC",
    "Noto Sans CJK HK",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "Source Han Sans",
    "Source Han Sans JP",
    "Source Han Sans K",
    "Noto Sans SC",
    "Noto Sans JP",
    "Noto Sans KR",
    "Noto Sans TC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "PingFang SC",
    "Hiragino Sans GB",
    "Hiragino Sans",
    "Heiti SC",
    "STHeiti",
    "Apple SD Gothic Neo",
    "Microsoft YaHei",
    "Microsoft JhengHei",
    "SimHei",
    "Yu Gothic",
    "Meiryo",
    "Malgun Gothic",
    "Noto Serif CJK SC",
    "Source Han Serif SC",
    "AR PL UMing CN",
    "AR PL UKai CN",
    "Droid Sans Fallback",
    "Arial Unicode MS",
)
# File names of CJK fonts, for fonts installed after matplotlib built its font cache.
_CJK_FILE = re.compile(
    r"(notosans|notoserif)cjk|sourcehan|wqy|pingfang|hiragino|msyh|msjh|simhei|yugoth|meiryo|malgun|"
    r"applesdgothic|droidsansfallback|uming|ukai|notosans(sc|tc|jp|kr)|arialuni",
    re.IGNORECASE,
)

INSTALL_HINT = (
    "install a font that has them (Chinese, Japanese, Korean on Debian/Ubuntu: `apt-get install fonts-noto-cjk` "
    "or `apt-get install fonts-wqy-microhei`; Fedora: `dnf install google-noto-sans-cjk-fonts`; macOS and Windows "
    "ship one) or pass --font PATH to a .ttf, .otf or .ttc file"
)
# posemb finds a CJK font by itself; for the other kinds (charsets.kind) the user passes one with --font.
FONT_HINTS = {
    "emoji": "for emoji and symbols pass --font PATH to a monochrome font that has them, e.g. Symbola (Debian/Ubuntu: "
    "`apt-get install fonts-symbola`, then --font /usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf); "
    "matplotlib cannot draw colour emoji fonts such as Noto Color Emoji",
    "other": "for other scripts pass --font PATH to a font of that script (Debian/Ubuntu: `apt-get install "
    "fonts-noto-core` puts one file per script in /usr/share/fonts/truetype/noto)",
}


def install_hint(missing: str) -> str:
    """How to get glyphs for the `missing` characters: a CJK font, an emoji font or a font of another script."""
    kinds = {"cjk" if kind == "han" else kind for kind in charsets.by_kind(missing)}
    hints = [INSTALL_HINT] if "cjk" in kinds else []
    return "; ".join(hints + [FONT_HINTS[kind] for kind in ("emoji", "other") if kind in kinds])


def _manager() -> Any:
    from matplotlib import font_manager

    return font_manager


def _installed_families() -> set[str]:
    return {entry.name for entry in _manager().fontManager.ttflist}


def _charmap(family: str) -> set[int]:
    fm = _manager()
    try:
        path = fm.findfont(fm.FontProperties(family=family), fallback_to_default=False)
        return set(fm.get_font(path).get_charmap())
    except Exception:  # an unreadable font file: treat it as covering nothing
        return set()


def _scan_system_cjk_fonts() -> None:
    """Register CJK font files that matplotlib's (possibly stale) font cache does not know yet."""
    fm = _manager()
    known = {str(entry.fname) for entry in fm.fontManager.ttflist}
    for path in fm.findSystemFonts():
        if path not in known and _CJK_FILE.search(Path(path).name.replace("-", "").replace("_", "")):
            try:
                fm.fontManager.addfont(path)
            except Exception:  # a broken file must not stop the plot
                continue


def needed_chars(text: str) -> str:
    """The distinct printable characters of `text` (whitespace and control characters need no glyph)."""
    seen: dict[str, None] = {}
    for char in text:
        if not char.isspace() and char.isprintable():
            seen.setdefault(char, None)
    return "".join(seen)


def missing_chars(text: str, families: list[str]) -> str:
    """Characters of `text` that none of `families` has a glyph for."""
    covered: set[int] = set()
    for family in families:
        covered |= _charmap(family)
    return "".join(c for c in needed_chars(text) if ord(c) not in covered)


def find_cjk_font(text: str | None = None) -> str | None:
    """An installed CJK-capable family, or None. With `text`, the first known family that covers all of its
    characters that DejaVu Sans lacks (falling back to the first installed one)."""
    for attempt in range(2):
        installed = _installed_families()
        present = [family for family in CJK_FAMILIES if family in installed]
        if present:
            if text:
                needed = missing_chars(text, [DEFAULT_FAMILY])
                for family in present:
                    charmap = _charmap(family)
                    if all(ord(c) in charmap for c in needed):
                        return family
            return present[0]
        if attempt == 0:
            _scan_system_cjk_fonts()
    return None


def add_font_file(path: str | Path) -> str:
    """Register a font file (--font PATH) and return its family name."""
    fm = _manager()
    path = Path(path).expanduser()
    if not path.is_file():
        raise PosembError(f"font file {path} does not exist")
    try:
        fm.fontManager.addfont(str(path))
        return str(fm.FontProperties(fname=str(path)).get_name())
    except Exception as exc:
        raise PosembError(f"cannot use {path} as a font: {exc}") from None


def font_settings(text_sample: str, font_path: str | Path | None = None) -> tuple[dict[str, Any], list[str]]:
    """matplotlib rc settings that render `text_sample`, and warnings (at most one) for the caller to show.

    Use as `with matplotlib.rc_context(rc): ...` so that the process-wide settings stay untouched.
    """
    families = [DEFAULT_FAMILY]
    if font_path is not None:
        families.insert(0, add_font_file(font_path))
    if missing_chars(text_sample, families):
        cjk = find_cjk_font(text_sample)
        if cjk is not None and cjk not in families:
            families.append(cjk)
    rc: dict[str, Any] = {"font.family": families, "svg.fonttype": "path", "pdf.fonttype": 42}
    missing = missing_chars(text_sample, families)
    warnings: list[str] = []
    if missing:
        shown = missing[:20] + ("..." if len(missing) > 20 else "")
        warnings.append(
            f"no installed font has glyphs for {shown!r} ({', '.join(families)} were tried), so the plot draws "
            f"empty boxes for them; {install_hint(missing)}"
        )
    return rc, warnings
