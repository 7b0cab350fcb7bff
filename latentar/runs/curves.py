"""Training curves of a run's stages: ``curves.png``, a panel per stage and metric.

    plot_curves(stage_curves(Path("runs/main"), ["vqvae", "prior"]), "runs/main/curves.png")
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from latentar.files import atomic_write
from latentar.run_files import read_metrics


def stage_curves(out: Path, stages: list[str]) -> dict[str, list[tuple[float, float]]]:
    """{"<stage> <metric>": [(step, value)]}: each stage's training loss and its evaluations."""
    panels: dict[str, list[tuple[float, float]]] = {}
    for stage in stages:
        for record in read_metrics(out / stage):
            points = {"train loss": record.get("loss")}
            points.update({f"test {k}": v for k, v in record.get("eval", {}).items()
                           if k in ("bits_per_dim", "bits_per_code", "psnr")})
            for name, value in points.items():
                if isinstance(value, (int, float)):
                    panels.setdefault(f"{stage}: {name}", []).append((record["step"], value))
    return panels


def plot_curves(panels: dict[str, list[tuple[float, float]]], path: str | Path, *,
                size: tuple[int, int] = (360, 240)) -> Path:
    """Draw each named series of (step, value) points as a line panel, panels side by side."""
    W, H = size
    left, right, top, bottom = 58, 12, 24, 28  # margins around each plot box, pixels
    image = Image.new("RGB", (W * max(len(panels), 1), H), "white")
    draw = ImageDraw.Draw(image)
    for i, (title, points) in enumerate(panels.items()):
        x0, x1, y0, y1 = i * W + left, (i + 1) * W - right, top, H - bottom
        draw.rectangle((x0, y0, x1, y1), outline="black")
        draw.text((x0, 4), title, fill="black")
        points = [(float(s), float(v)) for s, v in points if math.isfinite(v)]
        if not points:
            continue
        steps, values = zip(*points)
        lo_s, hi_s, lo_v, hi_v = min(steps), max(steps), min(values), max(values)
        span_s, span_v = (hi_s - lo_s) or 1.0, (hi_v - lo_v) or 1.0
        xy = [(x0 + (s - lo_s) / span_s * (x1 - x0), y1 - (v - lo_v) / span_v * (y1 - y0)) for s, v in points]
        if len(xy) > 1:
            draw.line(xy, fill=(31, 119, 180), width=2)
        for x, y in xy if len(xy) < 20 else []:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(31, 119, 180))
        draw.text((i * W + 4, y0), f"{hi_v:.4g}", fill="black")
        draw.text((i * W + 4, y1 - 10), f"{lo_v:.4g}", fill="black")
        draw.text((x0, y1 + 6), f"{lo_s:g}", fill="black")
        draw.text((x1 - 60, y1 + 6), f"step {hi_s:g}", fill="black")
    path = Path(path)
    with atomic_write(path) as f:
        image.save(f, format="PNG")
    return path
