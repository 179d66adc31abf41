"""Rendered bar charts with questions and answers, in HuggingFaceM4/ChartQA's columns.

Bars are told apart by colour, so a 64-pixel vision encoder can still see which is which.
Used by helpers.tiny.build and notebook 03.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 50, 47),
    "green": (60, 160, 60),
    "blue": (38, 110, 210),
    "orange": (245, 150, 30),
    "purple": (140, 70, 170),
}
VALUES = list(range(10, 100, 10))


def render_bar_chart(bars: dict[str, int], size: int = 128) -> Image.Image:
    """A bar chart on a white background, a y-axis from 0 to 100 with ticks every 20."""
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    left, bottom, top = size // 6, size - size // 10, size // 12
    draw.line([(left, top), (left, bottom), (size - 4, bottom)], fill="black")
    for tick in range(0, 101, 20):
        y = bottom - (bottom - top) * tick / 100
        draw.line([(left - 3, y), (left, y)], fill="black")
        draw.text((2, y - 5), str(tick), fill="black")
    slot = (size - 4 - left) / len(bars)
    for i, (colour, value) in enumerate(bars.items()):
        x0 = left + i * slot + slot * 0.2
        y0 = bottom - (bottom - top) * value / 100
        draw.rectangle([x0, y0, x0 + slot * 0.6, bottom - 1], fill=COLOURS[colour])
    return img


def random_bars(rng: random.Random) -> dict[str, int]:
    """3 or 4 bars of distinct colours and distinct values (so one bar is the tallest)."""
    colours = rng.sample(list(COLOURS), rng.randint(3, 4))
    return dict(zip(colours, rng.sample(VALUES, len(colours))))


# How the alignment stage asks for one bar's value ("{c}" is its colour) and for the tallest bar:
# several wordings, as a real VLM's instruction data has, so that a question worded otherwise (the
# lessons' ChartQA wording, which no alignment row uses) still reaches the skill. Asked only "red?",
# tiny-vlm ranked a bar's true value above a random other 85% of the time when asked "red?" but 61%
# when asked the lessons' way.
ASKS = (
    "{c}?",
    "{c} bar?",
    "value of {c}?",
    "how tall is the {c} bar?",
    "the {c} one, how high?",
    "tallest?",
    "which bar is tallest?",
    "highest bar, which colour?",
)


def alignment_rows(
    n: int, seed: int, shares: tuple[float, float] = (0.3, 0.6), asks: Sequence[str] = ASKS
) -> list[dict]:
    """Rows of tiny-vlm's alignment stage (helpers.tiny.build): a chart, a short request and its
    answer. Captions read every bar left to right ("red 40 blue 70 green 20"); questions ask one
    bar's value (the `asks` with "{c}": "red?", "value of red?", ...) or the tallest bar (the other
    `asks`), in `shares` of captions and values, the rest tallest. None of ASKS is worded as the
    lessons' questions, which SFT then teaches."""
    value_asks = [a for a in asks if "{c}" in a]
    tallest_asks = [a for a in asks if "{c}" not in a]
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        bars = random_bars(rng)
        task = rng.random()
        if task < shares[0]:
            ask, answer = "Describe the chart.", " ".join(f"{c} {v}" for c, v in bars.items())
        elif task < shares[0] + shares[1]:
            colour = rng.choice(list(bars))
            ask, answer = rng.choice(value_asks).format(c=colour), str(bars[colour])
        else:
            ask, answer = rng.choice(tallest_asks), max(bars, key=bars.__getitem__)
        rows.append({"image": render_bar_chart(bars), "ask": ask, "answer": answer})
    return rows


def chart_rows(n: int, seed: int, size: int = 128) -> list[dict]:
    """Rows with image, query, label (a list of strings, as in ChartQA), human_or_machine."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        bars = random_bars(rng)
        if rng.random() < 0.6:
            colour = rng.choice(list(bars))
            query, answer = f"What is the value of the {colour} bar?", str(bars[colour])
        else:
            query, answer = "Which colour has the tallest bar?", max(bars, key=bars.__getitem__)
        rows.append(
            {
                "image": render_bar_chart(bars, size),
                "query": query,
                "label": [answer],
                "human_or_machine": rng.randrange(2),
            }
        )
    return rows
