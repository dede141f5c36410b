"""The published baseline, and the sentences that put a run's figures next to it."""

from __future__ import annotations

from pathlib import Path

from ..data.store import read_attrs

#: The published k-means-on-raw-pixels result for CIFAR-10 (k = 10): Chang et al.,
#: "Deep Adaptive Image Clustering" (DAC), ICCV 2017, Table 2 (NMI 0.0871, ARI 0.0487,
#: ACC 0.2289), the figures repeated across the deep-clustering literature.
BASELINE = {
    "method": "k-means on raw pixels (published)",
    "reference": "Chang et al., Deep Adaptive Image Clustering (DAC), ICCV 2017, Table 2; "
    "repeated across the deep-clustering literature",
    "k": 10,
    "data": "official CIFAR-10 (train + test, 60,000 images)",
    "matched_accuracy": 0.229,
    "nmi": 0.087,
    "ari": 0.049,
}

#: Metrics shown in the headline table: (key, label).
HEADLINE = (
    ("matched_accuracy", "matched accuracy"),
    ("purity", "purity"),
    ("nmi", "NMI"),
    ("ari", "ARI"),
    ("homogeneity", "homogeneity"),
    ("completeness", "completeness"),
    ("v_measure", "V-measure"),
)


def data_caveat(report: dict) -> str:
    """One sentence on how the run's data relates to the data of the published baseline."""
    data = report.get("data") or {}
    source = str(data.get("source", "?"))
    kind = _source_kind(data)
    if kind == "official" or source.endswith("cifar-10-python.tar.gz") or source == "keras":
        text = f"This run read the official CIFAR-10 batches ({source}), the data the baseline used."
    else:
        text = (
            f"This run read {source}, an image-file copy of CIFAR-10: the JPEG copy is close to, "
            "not bit-identical with, the official batches the baseline used (labels and class balance are "
            "exact, pixels went through JPEG compression), so its figures are comparable, not equal."
        )
    if report.get("k") != BASELINE["k"]:
        text += f" The baseline is for k = {BASELINE['k']}; this run has k = {report.get('k')}."
    split = data.get("split")
    if split and split != "all":
        text += f" The baseline clustered train + test together; this run clustered the {split} split"
        text += f" ({report.get('n_samples')} images)."
    return text


def _source_kind(data: dict) -> str | None:
    store = data.get("store")
    if not store:
        return None
    try:
        return (read_attrs(Path(store)) or {}).get("source_kind")
    except Exception:  # the store may be gone: the caveat falls back to the source name
        return None


def summary_lines(report: dict) -> list[str]:
    """Extra lines for the terminal summary: held-out metrics, the comparison, the baseline."""
    m = report.get("metrics") or {}
    lines = []
    ev = report.get("eval")
    if ev:
        em = ev["metrics"]
        lines.append(
            f"held-out {ev['split']} ({ev['n_samples']} images, train mapping): matched accuracy "
            f"{_f(em.get('matched_accuracy'))}   purity {_f(em.get('purity'))}   NMI {_f(em.get('nmi'))}   "
            f"ARI {_f(em.get('ari'))}"
        )
    cmp_ = report.get("compare")
    if cmp_:
        sk = cmp_["sklearn"]
        lines.append(
            f"scikit-learn KMeans, same data and initial centres: {sk['n_iter']} iterations, {sk['seconds']:.1f} s "
            f"(daskmeans: {cmp_['daskmeans']['n_iter']}, {cmp_['daskmeans']['seconds']:.1f} s)   NMI {_f(sk['metrics']['nmi'])}   "
            f"ARI {_f(sk['metrics']['ari'])}   agreement ARI {cmp_['agreement_ari']:.4f} "
            f"({cmp_['same_labels']:.2%} same labels)"
        )
    b = BASELINE
    lines.append(
        f"matched accuracy {_f(m.get('matched_accuracy'))}   NMI {_f(m.get('nmi'))}   ARI {_f(m.get('ari'))}   "
        f"(published raw-pixel k-means, k=10: {b['matched_accuracy']:.3f} / {b['nmi']:.3f} / {b['ari']:.3f})"
    )
    out = report.get("out")
    if out and (Path(out) / "report.html").is_file():
        lines.append(f"pictures and report: {Path(out) / 'report.html'}")
    return lines


def _f(x, digits=4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"
