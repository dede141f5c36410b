"""report.html: one self-contained page (every image a ``data:`` URI, nothing fetched, no script)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.util
import math

import numpy as np

from .baseline import BASELINE, HEADLINE, data_caveat

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;color:#222;
padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;vertical-align:middle}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em;margin:.8em 0;font-size:.92em}
.muted{color:#666;font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
img.thumb{image-rendering:pixelated;width:48px;height:48px;vertical-align:middle}
details{margin:.4em 0}summary{cursor:pointer;font-weight:600}
"""

_METRIC_NOTES = (
    "Purity: share of images in their cluster's majority class (several clusters may share a "
    "class). Matched accuracy: share of images in the class matched to their cluster one-to-one (Hungarian "
    "method). NMI, ARI, homogeneity, completeness, V-measure: standard definitions (scikit-learn's). "
    "Held-out columns assign the held-out images to the trained centres and map clusters to classes with the "
    "mapping learned on the training images (majority class for purity, Hungarian matching for matched "
    "accuracy)."
)

#: What the page says instead of a dashboard address that would open distributed's "missing bokeh" page.
NO_BOKEH = "- (the dashboard needs bokeh: pip install 'daskmeans[dashboard]')"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def fmt_number(x, digits=4) -> str:
    """A table cell: "-" for None or non-finite, yes/no, integers with separators, fixed digits."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        return f"{x:.{digits}f}" if math.isfinite(x) else "-"
    return _esc(x)


def _table(header, rows, left=1) -> str:
    """An HTML table of pre-escaped cells; ``left``: the first n columns, or a set of columns, left-aligned.

    ``header`` None: no header row.
    """
    is_left = (lambda i: i < left) if isinstance(left, int) else (lambda i: i in left)
    head = ""
    if header is not None:
        h = "".join(f'<th class="l">{c}</th>' if is_left(i) else f"<th>{c}</th>" for i, c in enumerate(header))
        head = f"<thead><tr>{h}</tr></thead>"
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{c}</td>' if is_left(i) else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _figure_html(png: bytes, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{data_uri(png)}" alt="{_esc(alt)}">{cap}</figure>'


def metrics_table(report: dict) -> str:
    """Headline metrics: this run (train), held-out split, scikit-learn, published baseline."""
    cols = [("this run" + (f" ({report.get('data', {}).get('split', '')})" if report.get("data") else ""),
             report.get("metrics") or {})]
    ev = report.get("eval")
    if ev:
        cols.append((f"held-out {ev['split']} (train mapping)", ev["metrics"]))
    cmp_ = report.get("compare")
    if cmp_:
        cols.append(("scikit-learn, same init", cmp_["sklearn"]["metrics"]))
    header = ["metric"] + [_esc(c[0]) for c in cols] + ["published baseline (k=10)"]
    rows = []
    for key, label in HEADLINE:
        rows.append([_esc(label)] + [fmt_number(c[1].get(key)) for c in cols] + [fmt_number(BASELINE.get(key), 3)])
    return _table(header, rows)


def _settings_table(report: dict) -> str:
    s = report.get("settings") or {}
    rows = [[_esc(k), _esc("-" if v is None else v)] for k, v in s.items()]
    return _table(["setting", "value"], rows, left=2)


def dashboard_text(sched: dict) -> str:
    """The dashboard address as page text, or why there is none.

    Without bokeh, distributed serves a "missing bokeh" page at that address,
    so the page names the extra that fixes it instead of the address.
    """
    link = sched.get("dashboard")
    if not link:
        return "-"
    if importlib.util.find_spec("bokeh") is None:
        return _esc(NO_BOKEH)
    return _esc(link)


def _run_table(report: dict) -> str:
    sched = report.get("scheduler") or {}
    metrics = report.get("metrics") or {}
    items = [
        ("images", fmt_number(report.get("n_samples"))),
        ("features", fmt_number(report.get("n_features"))),
        ("k", fmt_number(report.get("k"))),
        ("iterations", f"{report.get('n_iter')} ({'converged' if report.get('converged') else 'max-iter reached'})"),
        ("inertia", fmt_number(report.get("inertia"), 2)),
        ("fit time", f"{report.get('fit_seconds', 0):.1f} s"),
        ("total time", f"{report.get('seconds', 0):.1f} s"),
        ("backend", _esc(report.get("backend", "-"))),
        ("scheduler", _esc(sched.get("kind", "-"))),
        ("dashboard", dashboard_text(sched)),
        ("data", _esc((report.get("data") or {}).get("source", "-"))),
        ("empty clusters", fmt_number(metrics.get("empty_clusters"))),
        ("size imbalance (largest / smallest)", fmt_number(metrics.get("size_imbalance"), 2)),
        ("original notebook's impurity (sum over clusters, not 1 - purity)", fmt_number(report.get("notebook_impurity"))),
        ("daskmeans", _esc(report.get("daskmeans_version", "-"))),
    ]
    return _table(None, [[_esc(a), b] for a, b in items], left=1)


def _cluster_row(j, row, names, matching, thumbs, eval_row) -> list[str]:
    size = int(row.sum())
    top = np.argsort(-row, kind="stable")[:3]
    tops = ", ".join(f"{_esc(names[c])} {row[c] / size:.0%}" for c in top if row[c]) if size else "-"
    r = [str(j)]
    if thumbs:
        r.append(f'<img class="thumb" src="{data_uri(thumbs[j])}" alt="centre {j}">')
    r += [fmt_number(size), _esc(names[int(row.argmax())]) if size else "(empty)", f"{row.max() / size:.1%}" if size else "-",
          _esc(names[matching[j]]) if matching[j] >= 0 else "-", tops]
    if eval_row is not None:
        es = int(eval_row.sum())
        r += [fmt_number(es), f"{eval_row[int(row.argmax())] / es:.1%}" if es and size else "-"]
    return r


def cluster_table(report: dict, thumbs=None) -> str:
    """Per-cluster rows: centre, size, majority class, purity, matched class, top classes, held-out figures."""
    names = report["class_names"]
    t = np.asarray(report["contingency"], dtype=np.int64)
    matching = (report.get("metrics") or {}).get("matching") or [-1] * len(t)
    ev = report.get("eval")
    et = np.asarray(ev["contingency"], dtype=np.int64) if ev else None
    header = ["cluster"] + (["centre"] if thumbs else []) + ["size", "majority class", "purity", "matched class",
                                                             "top classes"]
    if ev:
        header += [f"{_esc(ev['split'])} size", f"{_esc(ev['split'])} share of the majority class"]
    rows = [_cluster_row(j, row, names, matching, thumbs, et[j] if ev else None) for j, row in enumerate(t)]
    first = 2 if thumbs else 1
    return _table(header, rows, left={0, first + 1, first + 3, first + 4})


def _compare_html(cmp_: dict) -> str:
    dk, sk = cmp_["daskmeans"], cmp_["sklearn"]
    rows = [
        ["iterations", fmt_number(dk["n_iter"]), fmt_number(sk["n_iter"])],
        ["converged", fmt_number(dk["converged"]), fmt_number(sk["converged"])],
        ["inertia", fmt_number(dk["inertia"], 2), fmt_number(sk["inertia"], 2)],
        ["time (Lloyd iterations)", f"{dk['seconds']:.2f} s", f"{sk['seconds']:.2f} s"],
    ]
    for key, label in HEADLINE:
        rows.append([_esc(label), fmt_number(dk["metrics"].get(key)), fmt_number(sk["metrics"].get(key))])
    agree = (
        f"<p>Agreement of the two labelings: ARI <b>{cmp_['agreement_ari']:.6f}</b>, "
        f"{cmp_['same_labels']:.4%} of the images get the same cluster; largest centre difference "
        f"{cmp_['max_center_diff']:.2e} (pixel scale [0, 1]).</p>"
    )
    return (
        _table(["", "daskmeans", f"scikit-learn {_esc(cmp_.get('sklearn_version', ''))}"], rows)
        + agree
        + f'<p class="muted">{_esc(cmp_.get("note", ""))}</p>'
    )


def _head(report: dict) -> list[str]:
    """Document head, title line and the metrics section."""
    data = report.get("data") or {}
    title = f"daskmeans: k = {report.get('k')} on {report.get('n_samples')} CIFAR-10 images ({data.get('split', '?')})"
    when = report.get("finished") or _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="muted">written {_esc(when)} by daskmeans {_esc(report.get("daskmeans_version", ""))}; '
        f"data {_esc(data.get('source', '-'))}</p>",
        "<h2>Metrics</h2>",
        metrics_table(report),
        f'<div class="note"><b>Baseline:</b> {_esc(BASELINE["method"])}, matched accuracy '
        f'{BASELINE["matched_accuracy"]}, NMI {BASELINE["nmi"]}, ARI {BASELINE["ari"]} '
        f'({_esc(BASELINE["reference"])}; {_esc(BASELINE["data"])}). {_esc(data_caveat(report))}</div>',
        f'<p class="muted">{_esc(_METRIC_NOTES)}</p>',
    ]
    ev = report.get("eval")
    if ev:
        em = ev["metrics"]
        parts.append(
            f'<p class="muted">Held-out {_esc(ev["split"])}, with a mapping refitted on the held-out images '
            f"themselves (optimistic): purity {fmt_number(em.get('purity_refit'))}, matched accuracy "
            f"{fmt_number(em.get('matched_accuracy_refit'))}.</p>"
        )
    return parts


def html_page(report: dict, figures: list, *, per_cluster: list | None = None, thumbs=None) -> str:
    """The whole report as one self-contained HTML string.

    ``figures``: list of ``(section title, png bytes, caption)``; ``per_cluster``:
    list of ``(cluster id, png bytes)``; ``thumbs``: per-cluster centre PNGs for
    the table. Every image is embedded as a ``data:`` URI; nothing is fetched.
    """
    parts = _head(report)
    parts += ["<h2>Run</h2>", _run_table(report), "<h2>Per cluster</h2>", cluster_table(report, thumbs)]
    cmp_ = report.get("compare")
    if cmp_:
        parts += ["<h2>daskmeans vs scikit-learn</h2>", _compare_html(cmp_)]
    for section, png, caption in figures:
        parts += [f"<h2>{_esc(section)}</h2>", _figure_html(png, section, caption)]
    if per_cluster:
        parts.append("<h2>Each cluster</h2>")
        for j, png in per_cluster:
            parts.append(_figure_html(png, f"cluster {j}"))
    parts += ["<h2>Settings</h2>", _settings_table(report), "</body></html>"]
    return "\n".join(parts)
