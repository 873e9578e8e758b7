"""Figures that change in git only when what they show changes.

The same figure drawn on two processors can differ in its PNG bytes (a curve's points differ in their last bits,
so anti-aliasing differs by a shade). `save_figure` therefore stores a digest of what the figure shows (every
line's and collection's data, every patch's corners, every text, every axis' limits, rounded to 5 significant
digits) in the PNG's metadata, and leaves an existing PNG alone when its digest is the new figure's.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

DIGEST_KEY = "nanogpt:content"
SIGNIFICANT = 5


def _numbers(values) -> str:
    arr = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan).ravel()
    return " ".join(f"{v:.{SIGNIFICANT}g}" for v in arr)


def _describe(artist) -> str | None:
    from matplotlib.axes import Axes
    from matplotlib.collections import Collection
    from matplotlib.image import AxesImage
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.text import Text

    kind = type(artist).__name__
    if not artist.get_visible():
        return None
    if isinstance(artist, Text):
        return f"{kind}|{artist.get_text()}" if artist.get_text() else None
    if isinstance(artist, Line2D):
        return f"{kind}|{_numbers(artist.get_xydata())}|{artist.get_color()}|{artist.get_linestyle()}"
    if isinstance(artist, Collection):
        parts = [_numbers(artist.get_offsets())]
        parts += [_numbers(path.vertices) for path in artist.get_paths()]
        if artist.get_array() is not None:
            parts.append(_numbers(artist.get_array()))
        parts.append(_numbers(artist.get_facecolor()))
        return f"{kind}|" + "|".join(parts)
    if isinstance(artist, Patch):
        return f"{kind}|{_numbers(artist.get_path().transformed(artist.get_patch_transform()).vertices)}|" \
               f"{_numbers(artist.get_facecolor())}"
    if isinstance(artist, AxesImage):
        return f"{kind}|{_numbers(artist.get_array())}"
    if isinstance(artist, Axes):
        return f"{kind}|{_numbers(artist.get_xlim())}|{_numbers(artist.get_ylim())}|{artist.get_xscale()}|" \
               f"{artist.get_yscale()}"
    return None


def figure_digest(fig) -> str:
    """A digest of what `fig` shows (not of how it is rasterised); the same on any processor."""
    h = hashlib.sha256()
    h.update(_numbers(fig.get_size_inches()).encode())
    for artist in fig.findobj():
        described = _describe(artist)
        if described is not None:
            h.update(described.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()[:32]


def saved_digest(path: Path) -> str | None:
    """The content digest a PNG was saved with, or None (no file, no digest, not a PNG)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.info.get(DIGEST_KEY)
    except (OSError, ValueError):
        return None


def save_figure(fig, path: str | Path, **savefig_kwargs) -> bool:
    """Save `fig` as a PNG at `path` unless the PNG there already shows the same (its digest). True if written.
    The PNG is written to a temporary sibling and moved into place, so a crash never leaves half a file."""
    import os
    import tempfile

    path = Path(path)
    digest = figure_digest(fig)
    if saved_digest(path) == digest:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", metadata={DIGEST_KEY: digest}, **savefig_kwargs)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
