"""A small line chart drawn with Pillow, for the reward-over-steps PNG every training run writes.

Training runs plot one series over integer steps; matplotlib's import alone costs about half a
second per run on a small CPU, more than drawing this takes. This module draws axes with
"nice" tick values, a light grid, the series as a line with point markers, and a title. It
draws; it never reads metrics files or decides what to plot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

WIDTH, HEIGHT = 640, 380
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 72, 24, 40, 56
LINE = (31, 119, 180)
GRID = (225, 225, 225)
INK = (40, 40, 40)


def nice_ticks(low: float, high: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """About `count` round ticks covering [low, high]: steps of 1, 2, 2.5 or 5 x 10^k (whole ones if `integer`)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"tick range must be finite, got [{low}, {high}]")
    if high <= low:
        low, high = low - 0.5, low + 0.5
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    multiples = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * power for m in multiples if m * power >= raw)
    if integer:
        step = max(step, 1)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def line_chart(
    xs: Sequence[float], ys: Sequence[float], path: str | Path, *, title: str = "", xlabel: str = "", ylabel: str = ""
) -> Path:
    """Draw ys over xs as a PNG at `path` and return the path."""
    from PIL import Image, ImageDraw, ImageFont

    if len(xs) != len(ys):
        raise ValueError(f"got {len(xs)} x values for {len(ys)} y values")
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    left, right, top, bottom = MARGIN_LEFT, WIDTH - MARGIN_RIGHT, MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    x_ticks = nice_ticks(min(xs, default=0), max(xs, default=1), count=6, integer=True)
    y_ticks = nice_ticks(min(ys, default=0), max(ys, default=1), count=5)

    def px(x: float) -> float:
        return left + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (bottom - top)

    for y in y_ticks:
        draw.line([(left, py(y)), (right, py(y))], fill=GRID)
        draw.text((left - 6, py(y)), _label(y), fill=INK, font=font, anchor="rm")
    for x in x_ticks:
        draw.line([(px(x), top), (px(x), bottom)], fill=GRID)
        draw.text((px(x), bottom + 6), _label(x), fill=INK, font=font, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline=INK)
    points = [(px(x), py(y)) for x, y in zip(xs, ys)]
    if len(points) > 1:
        draw.line(points, fill=LINE, width=2)
    for x, y in points:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=LINE)
    draw.text(((left + right) / 2, top / 2), title, fill=INK, font=font, anchor="mm")
    draw.text(((left + right) / 2, HEIGHT - 14), xlabel, fill=INK, font=font, anchor="mm")
    label = Image.new("RGB", (bottom - top, 18), "white")
    ImageDraw.Draw(label).text(((bottom - top) / 2, 9), ylabel, fill=INK, font=font, anchor="mm")
    image.paste(label.rotate(90, expand=True), (8, top))
    path = Path(path)
    image.save(path)
    return path
