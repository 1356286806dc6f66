"""Reporting recommendation results: bootstrap CIs, a JSON record, Markdown tables.

Published CRS numbers are hard to compare because the conventions behind them go unstated
(see shared/specs/evaluation.md). Every table made here therefore carries its dataset,
split, protocol, conventions and sample count, shows a confidence interval next to each
mean, and marks published numbers as such. Pure functions: nothing here knows about models.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from convrec.data.tasks import PROTOCOLS
from convrec.evaluation.ranking import ranking_metric_matrix

__all__ = [
    "DEFAULT_METRICS",
    "PUBLISHED_MARK",
    "REFERENCE_ROWS",
    "SEQUENTIAL_METRICS",
    "TABLE_COLUMNS",
    "Estimate",
    "RecommendationResult",
    "bootstrap_ci",
    "compare_table",
    "conventions",
    "from_json",
    "markdown_table",
    "recommendation_result",
    "seed_statistics",
    "to_json",
]

ReferenceRow = tuple[str, Mapping[str, float]]
ReferenceRows = Sequence[ReferenceRow] | Mapping[str, Sequence[ReferenceRow]]

DEFAULT_METRICS = ("recall@1", "recall@10", "recall@50", "ndcg@10", "ndcg@50", "mrr@10", "mrr@50")
SEQUENTIAL_METRICS = ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20")
# The column sets a table can take when none is given: the CRS table and the sequential
# (leave-one-out) table. A table takes the set its results cover best.
TABLE_COLUMNS = (DEFAULT_METRICS, SEQUENTIAL_METRICS)
PUBLISHED_MARK = "published (paper protocol, not re-run)"
FORMAT = "convrec.recommendation_result/1"
MISSING = "–"

# Bootstrap draws held in memory at once (int64 indices plus one gathered float64 copy,
# about 270 MB). Chunking does not change the numbers: the generator's stream is consumed
# in the same order either way (tests/test_report.py checks this).
_MAX_DRAWS_PER_CHUNK = 2**24


# --------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    per_sample: dict[str, torch.Tensor],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """(mean, low, high) of each metric: percentile bootstrap over samples.

    All metrics share the same resample indices, so their intervals describe the same
    hypothetical test sets; a fixed `seed` makes a report reproducible to the last digit.
    """
    if not per_sample:
        raise ValueError("no metrics to bootstrap")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    values = {
        name: torch.as_tensor(v).detach().to("cpu", torch.float64) for name, v in per_sample.items()
    }
    shapes = {tuple(v.shape) for v in values.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"per-sample values must be 1-D and of equal length, got {sorted(shapes)}")
    n = next(iter(shapes))[0]
    if n == 0:
        raise ValueError("no samples to bootstrap")

    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // n)
    boot: dict[str, list[torch.Tensor]] = {name: [] for name in values}
    for start in range(0, resamples, chunk):
        index = torch.randint(n, (min(chunk, resamples - start), n), generator=generator)
        for name, v in values.items():
            boot[name].append(v[index].mean(dim=1))

    alpha = 1.0 - confidence
    levels = torch.tensor([alpha / 2, 1.0 - alpha / 2], dtype=torch.float64)
    result: dict[str, tuple[float, float, float]] = {}
    for name, v in values.items():
        low, high = torch.quantile(torch.cat(boot[name]), levels).tolist()
        result[name] = (v.mean().item(), low, high)
    return result


# --------------------------------------------------------------------------- result record


@dataclass(frozen=True)
class Estimate:
    """A metric's mean over samples and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float


def conventions(resamples: int = 1000, confidence: float = 0.95, bootstrap_seed: int = 0) -> str:
    """The metric conventions in words, stored with each result and printed above each table."""
    return (
        "full ranking over the whole item catalogue (no sampled negatives), score ties broken "
        "by the lower item index; one sample per target item; metrics are means over samples, "
        f"shown as mean [low, high] with the {_percent(confidence)} percentile bootstrap CI "
        f"over samples ({resamples} resamples, bootstrap seed {bootstrap_seed})"
    )


@dataclass(frozen=True)
class RecommendationResult:
    """One model's recommendation metrics on one dataset, split and protocol."""

    model: str
    dataset: str
    split: str
    protocol: str
    protocol_description: str
    seed: int | None
    num_samples: int
    metrics: dict[str, Estimate]
    resamples: int
    confidence: float
    bootstrap_seed: int
    conventions: str
    dataset_fingerprint: str | None = None


def recommendation_result(
    ranks: torch.Tensor,
    *,
    model: str,
    dataset: str,
    split: str,
    protocol: str,
    seed: int | None,
    ks: Sequence[int] = (1, 10, 50),
    resamples: int = 1000,
    confidence: float = 0.95,
    bootstrap_seed: int = 0,
    dataset_fingerprint: str | None = None,
    protocol_description: str | None = None,
    metric_matrix: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
) -> RecommendationResult:
    """Metrics with CIs from the 1-based target ranks of every test sample.

    The protocol description defaults to the one in `convrec.data.tasks.PROTOCOLS`, so a
    report cannot name a protocol without saying what it means. `metric_matrix` turns the
    ranks into per-sample metrics (default: Recall/MRR/NDCG at `ks`; sequential tasks
    pass HR/NDCG).
    """
    if protocol_description is None:
        if protocol not in PROTOCOLS:
            raise ValueError(
                f"unknown protocol {protocol!r} (known: {list(PROTOCOLS)}); "
                "pass protocol_description"
            )
        protocol_description = PROTOCOLS[protocol]
    ranks = torch.as_tensor(ranks)
    per_sample = metric_matrix(ranks) if metric_matrix else ranking_metric_matrix(ranks, ks)
    estimates = bootstrap_ci(
        per_sample,
        resamples=resamples,
        confidence=confidence,
        seed=bootstrap_seed,
    )
    return RecommendationResult(
        model=model,
        dataset=dataset,
        split=split,
        protocol=protocol,
        protocol_description=protocol_description,
        seed=seed,
        num_samples=len(ranks),
        metrics={name: Estimate(*values) for name, values in estimates.items()},
        resamples=resamples,
        confidence=confidence,
        bootstrap_seed=bootstrap_seed,
        conventions=conventions(resamples, confidence, bootstrap_seed),
        dataset_fingerprint=dataset_fingerprint,
    )


def to_json(result: RecommendationResult) -> dict[str, Any]:
    """A plain, JSON-serialisable dict (tagged with a format name for `from_json`)."""
    return {
        "format": FORMAT,
        "model": result.model,
        "dataset": result.dataset,
        "dataset_fingerprint": result.dataset_fingerprint,
        "split": result.split,
        "seed": result.seed,
        "protocol": {"name": result.protocol, "description": result.protocol_description},
        "num_samples": result.num_samples,
        "metrics": {
            name: {"mean": e.mean, "low": e.low, "high": e.high}
            for name, e in result.metrics.items()
        },
        "bootstrap": {
            "resamples": result.resamples,
            "confidence": result.confidence,
            "seed": result.bootstrap_seed,
        },
        "conventions": result.conventions,
    }


def from_json(data: Mapping[str, Any]) -> RecommendationResult:
    """Inverse of `to_json`; refuses dicts written in another format."""
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a {FORMAT} record (an object), found {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} record (format: {data.get('format')!r})")
    try:
        seed = data["seed"]
        return RecommendationResult(
            model=str(data["model"]),
            dataset=str(data["dataset"]),
            split=str(data["split"]),
            protocol=str(data["protocol"]["name"]),
            protocol_description=str(data["protocol"]["description"]),
            seed=None if seed is None else int(seed),
            num_samples=int(data["num_samples"]),
            metrics={
                name: Estimate(float(e["mean"]), float(e["low"]), float(e["high"]))
                for name, e in data["metrics"].items()
            },
            resamples=int(data["bootstrap"]["resamples"]),
            confidence=float(data["bootstrap"]["confidence"]),
            bootstrap_seed=int(data["bootstrap"]["seed"]),
            conventions=str(data["conventions"]),
            dataset_fingerprint=data.get("dataset_fingerprint"),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"malformed {FORMAT} record: {error!r}") from None


# --------------------------------------------------------------------------- published numbers

# MSCRS paper, Table 2 (shared/specs/reference-numbers.md), one line per row of the paper, in
# the order R@1, R@10, R@50, NDCG@10, NDCG@50, MRR@10, MRR@50 (= DEFAULT_METRICS).
_MSCRS_TABLE_2: dict[str, dict[str, tuple[float, ...]]] = {
    "redial": {
        "Popularity": (0.011, 0.053, 0.183, 0.029, 0.057, 0.021, 0.027),
        "BERT": (0.027, 0.142, 0.307, 0.075, 0.112, 0.055, 0.063),
        "KBRD": (0.033, 0.150, 0.311, 0.083, 0.118, 0.062, 0.070),
        "KGSF": (0.035, 0.175, 0.367, 0.094, 0.137, 0.070, 0.079),
        "UniCRS": (0.065, 0.241, 0.423, 0.143, 0.183, 0.113, 0.125),
        "DCRS": (0.076, 0.253, 0.439, 0.154, 0.195, 0.123, 0.132),
        "MSCRS": (0.081, 0.264, 0.451, 0.161, 0.201, 0.128, 0.136),
    },
    "inspired": {
        "Popularity": (0.031, 0.155, 0.322, 0.085, 0.122, 0.064, 0.071),
        "BERT": (0.049, 0.189, 0.322, 0.112, 0.141, 0.088, 0.095),
        "KBRD": (0.042, 0.135, 0.236, 0.088, 0.109, 0.073, 0.077),
        "KGSF": (0.051, 0.132, 0.239, 0.092, 0.114, 0.079, 0.083),
        "UniCRS": (0.085, 0.230, 0.398, 0.149, 0.187, 0.125, 0.133),
        "DCRS": (0.093, 0.226, 0.414, 0.153, 0.192, 0.130, 0.137),
        "MSCRS": (0.096, 0.257, 0.425, 0.168, 0.202, 0.140, 0.148),
    },
}

REFERENCE_ROWS: dict[str, list[tuple[str, dict[str, float]]]] = {
    dataset: [
        (f"{model} (MSCRS Table 2)", dict(zip(DEFAULT_METRICS, values, strict=True)))
        for model, values in rows.items()
    ]
    for dataset, rows in _MSCRS_TABLE_2.items()
}
"""Published recommendation numbers by dataset; each paper's own (standard) protocol."""


# --------------------------------------------------------------------------- markdown


def markdown_table(
    results: Sequence[RecommendationResult],
    metrics: Sequence[str] | None = None,
    reference_rows: ReferenceRows | None = None,
    *,
    digits: int = 3,
) -> str:
    """One Markdown table per (dataset, split, protocol), rows in the given order.

    Tables appear in the order of their first result. Without `metrics`, each table shows
    the column set of TABLE_COLUMNS that its results cover best. `reference_rows` is either
    a list of (label, {metric: value}) shown under every standard-protocol table, or such
    lists keyed by dataset (like `REFERENCE_ROWS`). Published rows never appear under
    another protocol: the papers did not evaluate under it.
    """
    return _tables(
        [results], metrics, reference_rows=reference_rows, digits=digits, warn_seeds=False
    )


def compare_table(
    results_by_run: Sequence[Sequence[RecommendationResult]],
    metrics: Sequence[str] | None = None,
    *,
    run_labels: Sequence[str | None] | None = None,
    aggregate_seeds: bool = False,
    reference_rows: ReferenceRows | None = None,
    digits: int = 3,
) -> str:
    """Several runs side by side, one table per (dataset, split, protocol).

    Rows follow the runs' order, then each run's own order (stable, so a table reads the
    way the runs were listed). A warning line flags what makes rows incomparable: different
    dataset fingerprints, sample counts or conventions, and different seeds (without
    aggregation; with it, models run on different sets of seeds).

    With `aggregate_seeds`, the runs of one model and run label (`run_labels`, e.g. the
    ablation a run belongs to) become one row: mean ± sample standard deviation of the
    per-run means, with the seeds listed. A model with a single run keeps
    its bootstrap CI cell. Columns as in `markdown_table`.
    """
    if run_labels is not None and len(run_labels) != len(results_by_run):
        raise ValueError(f"{len(run_labels)} run labels for {len(results_by_run)} runs")
    return _tables(
        results_by_run,
        metrics,
        run_labels=run_labels,
        aggregate_seeds=aggregate_seeds,
        reference_rows=reference_rows,
        digits=digits,
        warn_seeds=True,
    )


def seed_statistics(results: Sequence[RecommendationResult]) -> dict[str, tuple[float, float]]:
    """(mean, sample std) over runs of each metric's per-run mean, for metrics all runs have.

    Seed variance, not sampling variance: the spread of what a re-run would report.
    """
    if len(results) < 2:
        raise ValueError("a standard deviation over seeds needs at least two runs")
    shared = [m for m in results[0].metrics if all(m in r.metrics for r in results)]
    return {
        m: (
            statistics.fmean(r.metrics[m].mean for r in results),
            statistics.stdev(r.metrics[m].mean for r in results),
        )
        for m in shared
    }


# --------------------------------------------------------------------------- helpers


def _tables(
    results_by_run: Sequence[Sequence[RecommendationResult]],
    metrics: Sequence[str] | None,
    *,
    run_labels: Sequence[str | None] | None = None,
    aggregate_seeds: bool = False,
    reference_rows: ReferenceRows | None,
    digits: int,
    warn_seeds: bool,
) -> str:
    groups: dict[tuple[str, str, str], list[tuple[str | None, RecommendationResult]]] = {}
    for run, results in enumerate(results_by_run):
        run_label = run_labels[run] if run_labels is not None else None
        for result in results:
            key = (result.dataset, result.split, result.protocol)
            groups.setdefault(key, []).append((run_label, result))

    tables = []
    for (dataset, _, protocol), labelled in groups.items():
        results = [result for _, result in labelled]
        columns = metrics if metrics is not None else _columns(results)
        warnings = _consistency_warnings(results)
        notes = []
        if aggregate_seeds:
            rows, seed_warnings = _aggregated_rows(labelled, columns, digits)
            warnings += seed_warnings
            notes.append("an aggregated row shows mean ± sample std over seeds of the run means")
        else:
            rows = [
                [
                    _label(result.model, run_label),
                    _seed(result.seed),
                    *_cells(result, columns, digits),
                ]
                for run_label, result in labelled
            ]
            seeds = sorted({r.seed for r in results if r.seed is not None})
            if warn_seeds and len(seeds) > 1:
                warnings.append(
                    f"rows use different seeds ({_join(seeds)}), so their differences include "
                    "seed variance"
                )
        if protocol == "standard":
            rows += [
                [f"{_escape(name)} — {PUBLISHED_MARK}", MISSING]
                + [_fmt(values[m], digits) if m in values else MISSING for m in columns]
                for name, values in _references_for(reference_rows, dataset)
            ]
        tables.append(_render(results, rows, columns, warnings, notes))
    return "\n\n".join(tables) + "\n" if tables else ""


def _aggregated_rows(
    labelled: Sequence[tuple[str | None, RecommendationResult]],
    metrics: Sequence[str],
    digits: int,
) -> tuple[list[list[str]], list[str]]:
    """One row per model and run label: variants of one model stay apart."""
    by_model: dict[str, list[RecommendationResult]] = {}
    for run_label, result in labelled:
        by_model.setdefault(_label(result.model, run_label), []).append(result)
    rows, warnings = [], []
    for model, runs in by_model.items():
        seeds = [r.seed for r in runs]
        if len(set(seeds)) < len(seeds):
            warnings.append(
                f"{model} has several runs with the same seed ({_join(map(_seed, seeds))})"
            )
        if len(runs) == 1:
            rows.append([model, _seed(seeds[0]), *_cells(runs[0], metrics, digits)])
            continue
        stats = seed_statistics(runs)
        cells = [
            f"{_fmt(stats[m][0], digits)} ± {_fmt(stats[m][1], digits)}" if m in stats else MISSING
            for m in metrics
        ]
        rows.append([f"{model} ({len(runs)} runs)", _join(map(_seed, seeds)), *cells])
    seed_sets = {frozenset(r.seed for r in runs) for runs in by_model.values()}
    if len(seed_sets) > 1:
        warnings.append("models were run on different sets of seeds")
    return rows, warnings


def _columns(results: Sequence[RecommendationResult]) -> Sequence[str]:
    """The set of TABLE_COLUMNS that the results have most metrics of (the first on a tie)."""
    present = {m for r in results for m in r.metrics}
    return max(TABLE_COLUMNS, key=lambda columns: sum(m in present for m in columns))


def _consistency_warnings(results: Sequence[RecommendationResult]) -> list[str]:
    warnings = []
    fingerprints = sorted({r.dataset_fingerprint for r in results if r.dataset_fingerprint})
    if len(fingerprints) > 1:
        short = ", ".join(f[:12] for f in fingerprints)
        warnings.append(f"rows come from different dataset versions (fingerprints {short})")
    counts = sorted({r.num_samples for r in results})
    if len(counts) > 1:
        warnings.append(f"rows were scored on different numbers of samples ({_join(counts)})")
    if len({r.conventions for r in results}) > 1:
        warnings.append("rows follow different conventions (see each result's record)")
    return warnings


def _render(
    results: Sequence[RecommendationResult],
    rows: list[list[str]],
    metrics: Sequence[str],
    warnings: list[str],
    notes: list[str],
) -> str:
    first = results[0]
    counts = sorted({r.num_samples for r in results})
    paragraphs = [
        f"**{first.dataset}, {first.split} split, protocol `{first.protocol}`** "
        f"({first.protocol_description}); {_join(f'{c:,}' for c in counts)} samples.",
        f"Conventions: {first.conventions}.",
        *(f"Note: {note}." for note in notes),
        *(f"**Warning:** {warning}." for warning in warnings),
    ]
    table = [
        "| " + " | ".join(["model", "seed", *map(_header, metrics)]) + " |",
        "|" + "---|" * 2 + "---:|" * len(metrics),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    # Blank lines between the caption's sentences: Markdown would run them into one line.
    return "\n\n".join([*paragraphs, "\n".join(table)])


def _cells(result: RecommendationResult, metrics: Sequence[str], digits: int) -> list[str]:
    """`mean [low, high]` per metric; the digits apply to the bounds too, since at two
    decimals a small metric's interval (R@1 around .01) would collapse to one value."""
    cells = []
    for m in metrics:
        e = result.metrics.get(m)
        if e is None:
            cells.append(MISSING)
        else:
            cells.append(f"{_fmt(e.mean, digits)} [{_fmt(e.low, digits)}, {_fmt(e.high, digits)}]")
    return cells


def _references_for(rows: ReferenceRows | None, dataset: str) -> Sequence[ReferenceRow]:
    if rows is None:
        return []
    if isinstance(rows, Mapping):
        return rows.get(dataset, rows.get(dataset.lower(), []))
    return rows


def _header(metric: str) -> str:
    """`recall@10` -> `R@10` (the papers' column names); unknown names pass through."""
    name, _, k = metric.partition("@")
    short = {"recall": "R", "ndcg": "NDCG", "mrr": "MRR", "hr": "HR"}.get(name)
    return f"{short}@{k}" if short and k else metric


def _label(model: str, run_label: str | None) -> str:
    return _escape(model if run_label is None else f"{model} ({run_label})")


def _escape(text: str) -> str:
    return text.replace("|", r"\|")


def _seed(seed: int | None) -> str:
    return MISSING if seed is None else str(seed)


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def _join(values: Any) -> str:
    return ", ".join(map(str, values))


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"
