"""The insights report: one self-contained HTML file rendered from `insights.Insights`.

Owns: layout, colours and the interactive projection (Bokeh, its JS inlined:
the file opens offline; thumbnails are JPEG data URIs). Must not: compute
anything the reader sees as a number (that is `imgfeat.insights`), read
tables, or log to MLflow.

Why Bokeh: its hover tooltips take HTML templates, so the thumbnail of the
point under the mouse shows with no custom JS, and its inline bundle is
about a third of Plotly's (report size grows with the sample, not the JS).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgfeat.insights import PAIR_KINDS, Insights

#: `id`s of the report's sections, in order (the browser test checks each).
SECTIONS = ("summary", "projection", "activation-maps", "outliers", "near-duplicates", "errors", "novelty")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8")
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px} h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse} td,th{padding:3px 8px;border:1px solid #e4e4e4;font-size:13px;vertical-align:top}
figure{display:inline-block;margin:4px;text-align:center;font-size:11px;max-width:140px;word-break:break-all}
.note{color:#666;font-size:13px} .bad{color:#b00}
.pair{display:inline-block;border:1px solid #ddd;margin:4px;padding:4px}
.heat td{width:48px;text-align:center}
"""


def write(data: Insights, folder: str | Path) -> Path:
    """Write `folder/report.html`; returns its path."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    path.write_text(render(data), encoding="utf-8")
    return path


def render(data: Insights) -> str:
    from bokeh.embed import components
    from bokeh.resources import INLINE

    plots = {"projection": _scatter(data)}
    if data.novelty_hist is not None:
        plots["novelty"] = _histogram(data)
    script, divs = components(plots)
    body = "\n".join(
        [
            _summary(data),
            _section("projection", "Embedding projection", _projection_text(data) + divs["projection"]),
            _section("activation-maps", "Activation maps", _maps(data)),
            _section("outliers", "Outliers", _outliers(data)),
            _section("near-duplicates", "Copies, near-copies, look-alikes and leakage", _pairs(data)),
            _section("errors", "Errors by class", _errors(data)),
            _section("novelty", "Unlike anything in training", _novelty_text(data) + divs.get("novelty", "")),
        ]
    )
    title = html.escape(f"imgfeat insights: {data.about.get('model', '')}")
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_CSS}</style>{INLINE.render_js()}{script}</head><body><h1>{title}</h1>{body}</body></html>"
    )


def _section(anchor: str, title: str, inner: str) -> str:
    return f"<section id='{anchor}'><h2>{html.escape(title)}</h2>{inner}</section>"


def _summary(data: Insights) -> str:
    about = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in data.about.items())
    counts = ", ".join(f"{k} {v}" for k, v in sorted(data.counts.items()))
    bad = ""
    if len(data.bad):
        rows = "".join(
            f"<tr><td>{html.escape(r.path)}</td><td class='bad'>{html.escape(r.status)}</td>"
            f"<td>{html.escape(str(r.error))}</td></tr>"
            for r in data.bad.itertuples()
        )
        bad = (
            "<p>Rows not ok (never projected):</p>"
            f"<table><tr><th>path</th><th>status</th><th>error</th></tr>{rows}</table>"
        )
    return _section(
        "summary",
        "Summary",
        f"<table>{about}<tr><th>rows by status</th><td>{html.escape(counts)}</td></tr>"
        f"<tr><th>test accuracy</th><td>{data.accuracy:.3f}</td></tr></table>{bad}",
    )


def _figure(path: str, uri: str, caption: str) -> str:
    name = html.escape(path.rsplit("/", 1)[-1])
    pic = f"<img src='{uri}' alt='{name}' title='{html.escape(path)}'/>" if uri else "<i>unreadable</i>"
    return f"<figure>{pic}<figcaption>{name}<br/>{html.escape(caption)}</figcaption></figure>"


def _thumb(data: Insights, path: str, caption: str) -> str:
    """A sampled image's figure, from its thumbnail (`unreadable` where there is none)."""
    return _figure(path, data.thumbs.get(path, ""), caption)


def _thumbs(data: Insights, rows: pd.DataFrame, caption: Callable[[Any], str]) -> str:
    """The figures of `rows`' images (a `path` column), each captioned by `caption(row)`.

    Why: the outliers and the wrong predictions list their images alike, but for the caption.
    """
    return "".join(_thumb(data, r.path, caption(r)) for r in rows.itertuples())


# ------------------------------------------------------------------------ projection
def _projection_text(data: Insights) -> str:
    wrong = int(data.points["wrong"].sum())
    return (
        f"<p class='note'>{len(data.points)} images ({data.about.get('projection', '')}); colour = label; "
        f"a black ring = a wrong prediction on the test split ({wrong}). Hover for the image.</p>"
    )


def _scatter(data: Insights):
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    p = data.points
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(data.classes)}
    source = ColumnDataSource(
        {
            "x": p["x"].astype(float).tolist(),
            "y": p["y"].astype(float).tolist(),
            "label": p["label"].astype(str).tolist(),
            "split": p["split"].tolist(),
            "predicted": p["predicted_class"].tolist(),
            "confidence": [f"{c:.3f}" for c in p["confidence"]],
            "colour": [colours.get(str(label), "#999") for label in p["label"]],
            "ring": ["#000000" if w else "rgba(0,0,0,0)" for w in p["wrong"]],
            "thumb": [data.thumbs.get(path, "") for path in p["path"]],
            "path": p["path"].tolist(),
        }
    )
    fig = figure(width=900, height=620, tools="pan,wheel_zoom,box_zoom,reset,save", toolbar_location="above")
    points = fig.scatter(
        "x",
        "y",
        source=source,
        size=9,
        fill_color="colour",
        line_color="ring",
        line_width=2,
        fill_alpha=0.8,
        legend_field="label",
        name="projection_points",
    )
    fig.add_tools(
        HoverTool(
            renderers=[points],
            tooltips=(
                "<div><img src='@thumb' width='96'/><div>@path</div>"
                "<div>label <b>@label</b> · predicted <b>@predicted</b> (@confidence) · @split</div></div>"
            ),
        )
    )
    fig.legend.location = "top_left"
    return fig


def _histogram(data: Insights):
    from bokeh.models import Span  # type: ignore[attr-defined]  # bokeh exports it at runtime; its stubs miss it
    from bokeh.plotting import figure

    hist = data.novelty_hist
    assert hist is not None  # the section is drawn only for a model with a novelty reference
    step = 100.0 / len(hist)
    fig = figure(
        width=700,
        height=260,
        x_range=(0, 100),  # type: ignore[arg-type]  # bokeh accepts a (start, end) tuple; its stubs want Range
        tools="save",
        x_axis_label="novelty (percentile)",
        y_axis_label="test images",
    )
    fig.vbar(x=[step * (i + 0.5) for i in range(len(hist))], top=hist.tolist(), width=step * 0.9, name="novelty_bars")
    fig.add_layout(Span(location=data.novelty_threshold, dimension="height", line_color="#b00", line_dash="dashed"))
    return fig


def _novelty_text(data: Insights) -> str:
    if data.novelty_hist is None:
        return "<p class='note'>The model was logged without a novelty reference (trained before imgfeat had one).</p>"
    return (
        f"<p class='note'>Novelty of each test image: its nearest-neighbour distance to the model's training "
        f"reference, as a percentile of the training images' own nearest-neighbour distances (50 = typical, "
        f"100 = farther than any training image from its neighbour). {data.novel} test images at or above "
        f"{data.novelty_threshold:g} (dashed line). `imgfeat score` writes the same number per image.</p>"
    )


# ----------------------------------------------------------------- activation maps
def _maps(data: Insights) -> str:
    if not data.maps:
        return f"<p class='note'>{html.escape(data.maps_note or 'none')}</p>"
    figs = [
        _figure(
            m.path,
            overlay_uri(m.image, m.heat),
            f"{m.label} → {m.predicted} ({m.confidence:.2f}){'' if m.label == m.predicted else ' WRONG'}",
        )
        for m in data.maps
    ]
    return (
        "<p class='note'>Bright = regions whose feature-map activations carry the SHAP contribution to the "
        "predicted class (docs/insights.md).</p>" + "".join(figs)
    )


def overlay_uri(image: np.ndarray, heat: np.ndarray, px: int = 160) -> str:
    """The image with `heat` (0..1) blended over it as a red-yellow map, as a PNG data URI."""
    from PIL import Image

    h = np.clip(heat, 0, 1)[..., None]
    colour = np.concatenate([np.ones_like(h), h, np.zeros_like(h)], axis=2) * 255.0
    alpha = 0.65 * h
    blended = (image.astype(np.float32) * (1 - alpha) + colour * alpha).clip(0, 255).astype(np.uint8)
    picture = Image.fromarray(blended)
    picture.thumbnail((px, px))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------- outliers and pairs
def _outliers(data: Insights) -> str:
    o = data.outliers
    figs = _thumbs(data, o.top, lambda r: f"distance {r.score:.3f} · z {r.z:.1f}")
    return (
        f"<p class='note'>Mean distance to the {o.k} nearest sampled images (unit embeddings); "
        f"{o.count} images above modified z-score {o.z_threshold:g} (median {o.median:.3f}, MAD {o.mad:.3f}). "
        f"Farthest first:</p>{figs}"
    )


def _pairs(data: Insights) -> str:
    """The three kinds of pairs apart, each with its counts and examples (a pair is in one kind only)."""
    rule = {
        "exact_copies": "the same bytes (content_sha256)",
        "near_copies": f"perceptual hashes within {data.about.get('near_copy_distance', '')} bits, other bytes",
        "lookalikes": f"embedding cosine ≥ {data.about.get('near_duplicate_threshold', '')}, not copies",
    }
    parts = []
    for kind, (title, score, _) in PAIR_KINDS.items():
        p = data.pairs[kind]
        cells = []
        for r in p.shown.itertuples():
            flags = " ".join(f for f, on in (("LEAK train↔test", r.leak), ("LABELS DIFFER", r.noise)) if on)
            value = f"cosine {r.cosine:.4f}" if score == "cosine" else f"distance {r.distance}"
            cells.append(
                f"<div class='pair'>{_thumb(data, r.path_a, f'{r.label_a} · {r.split_a}')}"
                f"{_thumb(data, r.path_b, f'{r.label_b} · {r.split_b}')}"
                f"<div>{value} <b class='bad'>{flags}</b></div></div>"
            )
        parts.append(
            f"<h3 id='{kind.replace('_', '-')}'>{html.escape(title)}</h3><p class='note'>{p.count} pairs: "
            f"{html.escape(rule[kind])}; {p.leaking} straddle test and the images trained on; "
            f"{p.label_noise} have different labels.</p>" + ("".join(cells) or "<i>none</i>")
        )
    return (
        "<p class='note'>The split keeps exact copies and near-copies together (one group, one fold or test), "
        "so their pairs straddle test only for a model trained on the old split; look-alikes are "
        "different images and may.</p>" + "".join(parts)
    )


def _errors(data: Insights) -> str:
    classes, m = data.classes, data.confusion
    peak = max(int(m.max()), 1)
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in classes) + "</tr>"
    rows = []
    for i, c in enumerate(classes):
        cells = "".join(
            f"<td style='background:rgba({'40,120,200' if i == j else '200,40,40'},{m[i, j] / peak:.2f})'>"
            f"{m[i, j]}</td>"
            for j in range(len(classes))
        )
        rows.append(f"<tr><th>{html.escape(c)}</th>{cells}</tr>")
    figs = _thumbs(data, data.errors, lambda r: f"{r.label} → {classes[int(r.predicted)]} ({r.confidence:.2f})")
    return (
        f"<p class='note'>Test split, {int(m.sum())} images, accuracy {data.accuracy:.3f}.</p>"
        f"<table class='heat'>{head}{''.join(rows)}</table>"
        f"<p class='note'>Most confident wrong predictions per true class:</p>{figs or '<i>none</i>'}"
    )
