from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from convrec.data.tasks import PROTOCOLS
from convrec.evaluation import ranking_metrics, report
from convrec.evaluation.report import (
    DEFAULT_METRICS,
    REFERENCE_ROWS,
    Estimate,
    RecommendationResult,
    bootstrap_ci,
    compare_table,
    conventions,
    from_json,
    markdown_table,
    recommendation_result,
    seed_statistics,
    to_json,
)

SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "reference-numbers.md"
CI_CELL = re.compile(r"^\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]$")


def fake_result(
    model: str = "kbrd",
    *,
    protocol: str = "standard",
    seed: int | None = 0,
    dataset: str = "redial",
    means: dict[str, float] | None = None,
    num_samples: int = 500,
    fingerprint: str | None = None,
) -> RecommendationResult:
    """A result with hand-set means and a CI of ±0.01 around each."""
    means = means if means is not None else {"recall@1": 0.1354, "recall@10": 0.25}
    return RecommendationResult(
        model=model,
        dataset=dataset,
        split="test",
        protocol=protocol,
        protocol_description=PROTOCOLS[protocol],
        seed=seed,
        num_samples=num_samples,
        metrics={m: Estimate(v, v - 0.01, v + 0.01) for m, v in means.items()},
        resamples=1000,
        confidence=0.95,
        bootstrap_seed=0,
        conventions=conventions(),
        dataset_fingerprint=fingerprint,
    )


def split_tables(markdown: str) -> list[str]:
    """The report cut before each table's caption line."""
    return re.split(r"\n\n(?=\*\*[^*\n]+ split, protocol `)", markdown.strip())


def table_lines(markdown: str) -> list[list[str]]:
    """Cells of every table line (header and separator included)."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("|")
    ]


# --------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("value", [0.0, 0.25, 1.0])
def test_bootstrap_of_constant_values_is_a_point(value: float) -> None:
    mean, low, high = bootstrap_ci({"m": torch.full((37,), value)}, resamples=200)["m"]
    assert mean == low == high == value


def test_bootstrap_of_bernoulli_matches_the_normal_approximation() -> None:
    n, p = 10_000, 0.3
    hits = torch.zeros(n, dtype=torch.float64)
    hits[torch.randperm(n, generator=torch.Generator().manual_seed(1))[: int(n * p)]] = 1.0
    mean, low, high = bootstrap_ci({"recall@1": hits}, resamples=2000)["recall@1"]
    half_width = 1.96 * math.sqrt(p * (1 - p) / n)  # 0.00898
    assert mean == pytest.approx(p, abs=1e-12)
    assert mean - low == pytest.approx(half_width, abs=0.0015)
    assert high - mean == pytest.approx(half_width, abs=0.0015)


def test_bootstrap_is_deterministic_per_seed() -> None:
    values = {"a": torch.rand(300, generator=torch.Generator().manual_seed(0))}
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_bootstrap_uses_the_same_resamples_for_every_metric() -> None:
    a = (torch.rand(400, generator=torch.Generator().manual_seed(3)) < 0.2).double()
    ci = bootstrap_ci({"a": a, "same": a.clone(), "complement": 1.0 - a}, resamples=500)
    assert ci["same"] == ci["a"]
    mean, low, high = ci["complement"]
    assert mean == pytest.approx(1.0 - ci["a"][0], abs=1e-12)
    assert low == pytest.approx(1.0 - ci["a"][2], abs=1e-12)
    assert high == pytest.approx(1.0 - ci["a"][1], abs=1e-12)


def test_bootstrap_chunking_does_not_change_the_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"a": torch.rand(1000, generator=torch.Generator().manual_seed(0))}
    whole = bootstrap_ci(values, resamples=100)
    monkeypatch.setattr(report, "_MAX_DRAWS_PER_CHUNK", 7 * 1000)  # 15 chunks, last one short
    assert bootstrap_ci(values, resamples=100) == whole


@pytest.mark.parametrize(
    ("per_sample", "kwargs", "message"),
    [
        ({}, {}, "no metrics"),
        ({"a": torch.ones(3), "b": torch.ones(4)}, {}, "equal length"),
        ({"a": torch.ones(2, 2)}, {}, "1-D"),
        ({"a": torch.ones(0)}, {}, "no samples"),
        ({"a": torch.ones(3)}, {"resamples": 0}, "resamples"),
        ({"a": torch.ones(3)}, {"confidence": 1.0}, "confidence"),
    ],
)
def test_bootstrap_rejects_bad_input(per_sample, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(per_sample, **kwargs)


# --------------------------------------------------------------------------- result record


def test_recommendation_result_from_ranks() -> None:
    ranks = torch.randint(1, 200, (250,), generator=torch.Generator().manual_seed(0))
    result = recommendation_result(
        ranks, model="pop", dataset="inspired", split="test", protocol="strict", seed=3
    )
    assert result.num_samples == 250
    assert result.protocol_description == PROTOCOLS["strict"]
    assert "ties broken by the lower item index" in result.conventions
    assert set(result.metrics) == set(ranking_metrics(ranks))
    for name, mean in ranking_metrics(ranks).items():
        estimate = result.metrics[name]
        assert estimate.mean == pytest.approx(mean)
        assert estimate.low <= estimate.mean <= estimate.high


def test_recommendation_result_needs_a_description_for_an_unknown_protocol() -> None:
    ranks = torch.tensor([1, 2, 3])
    kwargs = {"model": "m", "dataset": "d", "split": "test", "seed": 0}
    with pytest.raises(ValueError, match="protocol_description"):
        recommendation_result(ranks, protocol="leave-one-out", **kwargs)
    result = recommendation_result(
        ranks, protocol="leave-one-out", protocol_description="last item held out", **kwargs
    )
    assert result.protocol_description == "last item held out"


def test_json_round_trip() -> None:
    ranks = torch.randint(1, 50, (120,), generator=torch.Generator().manual_seed(0))
    result = recommendation_result(
        ranks,
        model="kbrd",
        dataset="redial",
        split="test",
        protocol="standard",
        seed=None,
        dataset_fingerprint="abc123",
    )
    data = json.loads(json.dumps(to_json(result)))
    assert data["protocol"] == {"name": "standard", "description": PROTOCOLS["standard"]}
    assert set(data["metrics"]["recall@10"]) == {"mean", "low", "high"}
    assert from_json(data) == result


def test_from_json_rejects_other_records() -> None:
    with pytest.raises(ValueError, match="not a"):
        from_json({"model": "kbrd"})
    data = to_json(fake_result())
    del data["num_samples"]
    with pytest.raises(ValueError, match="num_samples"):
        from_json(data)


# --------------------------------------------------------------------------- markdown


def test_markdown_table_states_protocol_conventions_and_sample_count() -> None:
    results = [fake_result(num_samples=1234), fake_result(protocol="strict", num_samples=600)]
    markdown = markdown_table(results, reference_rows=REFERENCE_ROWS)
    standard, strict = split_tables(markdown)
    assert standard.startswith("**redial, test split, protocol `standard`**")
    assert PROTOCOLS["standard"] in standard and "1,234 samples" in standard
    assert PROTOCOLS["strict"] in strict and "600 samples" in strict
    for table in (standard, strict):
        assert "full ranking over the whole item catalogue" in table
        assert "ties broken by the lower item index" in table
        assert "one sample per target item" in table
        assert "95% percentile bootstrap CI over samples (1000 resamples" in table


def test_markdown_cells_show_mean_and_ci() -> None:
    markdown = markdown_table([fake_result(seed=4)], metrics=("recall@1", "recall@10", "mrr@10"))
    header, separator, row = table_lines(markdown)
    assert header == ["model", "seed", "R@1", "R@10", "MRR@10"]
    assert separator == ["---", "---", "---:", "---:", "---:"]
    assert row == ["kbrd", "4", "0.135 [0.125, 0.145]", "0.250 [0.240, 0.260]", "–"]
    assert all(CI_CELL.match(cell) for cell in row[2:4])


def test_reference_rows_only_under_the_standard_protocol() -> None:
    results = [fake_result(), fake_result(protocol="strict")]
    standard, strict = split_tables(markdown_table(results, reference_rows=REFERENCE_ROWS))
    assert "published (paper protocol, not re-run)" not in strict
    published = [row for row in table_lines(standard) if "published" in row[0]]
    assert [row[0].split(" (")[0] for row in published] == [
        "Popularity",
        "BERT",
        "KBRD",
        "KGSF",
        "UniCRS",
        "DCRS",
        "MSCRS",
    ]
    kbrd = published[2]
    assert kbrd[0] == "KBRD (MSCRS Table 2) — published (paper protocol, not re-run)"
    assert kbrd[1:] == ["–", "0.033", "0.150", "0.311", "0.083", "0.118", "0.062", "0.070"]


def test_reference_rows_as_a_list_and_missing_metrics() -> None:
    rows = [("GCRS re-run: KGSF", {"recall@1": 0.0352, "ndcg@10": 0.0959})]
    markdown = markdown_table([fake_result()], ("recall@1", "recall@50", "ndcg@10"), rows)
    assert table_lines(markdown)[-1] == [
        "GCRS re-run: KGSF — published (paper protocol, not re-run)",
        "–",
        "0.035",
        "–",
        "0.096",
    ]


def test_reference_rows_match_the_spec() -> None:
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} not available")
    text = SPEC.read_text().split("## Recommendation, MSCRS paper Table 2")[1].split("\n## ")[0]
    parsed: dict[str, list[tuple[str, dict[str, float]]]] = {"redial": [], "inspired": []}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 15 or not cells[1].startswith("."):
            continue
        values = [float(c) for c in cells[1:]]
        for dataset, part in (("redial", values[:7]), ("inspired", values[7:])):
            parsed[dataset].append(
                (f"{cells[0]} (MSCRS Table 2)", dict(zip(DEFAULT_METRICS, part, strict=True)))
            )
    assert parsed == REFERENCE_ROWS


# --------------------------------------------------------------------------- comparison


def test_seed_statistics_by_hand() -> None:
    runs = [
        fake_result(seed=0, means={"recall@1": 0.10, "recall@10": 0.30}),
        fake_result(seed=1, means={"recall@1": 0.14, "recall@10": 0.20}),
    ]
    stats = seed_statistics(runs)
    # sample std of two values a, b: |a - b| / sqrt(2)
    assert stats["recall@1"] == pytest.approx((0.12, 0.04 / math.sqrt(2)))
    assert stats["recall@10"] == pytest.approx((0.25, 0.10 / math.sqrt(2)))
    with pytest.raises(ValueError, match="two runs"):
        seed_statistics(runs[:1])


def test_compare_table_aggregates_seeds() -> None:
    run_0 = [fake_result(seed=0, means={"recall@1": 0.10, "recall@10": 0.30}), fake_result("pop")]
    run_1 = [fake_result(seed=1, means={"recall@1": 0.14, "recall@10": 0.20})]
    markdown = compare_table([run_0, run_1], ("recall@1", "recall@10"), aggregate_seeds=True)
    _, _, kbrd, pop = table_lines(markdown)
    assert kbrd == ["kbrd (2 runs)", "0, 1", "0.120 ± 0.028", "0.250 ± 0.071"]
    assert pop == ["pop", "0", "0.135 [0.125, 0.145]", "0.250 [0.240, 0.260]"]
    assert "mean ± sample std over seeds" in markdown
    assert "**Warning:** models were run on different sets of seeds." in markdown


def test_aggregated_rows_keep_labelled_variants_apart() -> None:
    runs = [
        [fake_result(seed=seed, means={"recall@1": mean})]
        for seed, mean in ((0, 0.1), (1, 0.2), (0, 0.3), (1, 0.5))
    ]
    labels = ["tree", "tree", "none", "none"]
    markdown = compare_table(runs, ("recall@1",), run_labels=labels, aggregate_seeds=True)
    rows = table_lines(markdown)[2:]
    assert rows == [
        ["kbrd (tree) (2 runs)", "0, 1", "0.150 ± 0.071"],
        ["kbrd (none) (2 runs)", "0, 1", "0.400 ± 0.141"],
    ]
    assert "same seed" not in markdown


def test_compare_table_keeps_run_order_and_warns() -> None:
    runs = [
        [fake_result("b", seed=0, fingerprint="aaaaaaaaaaaaaaaa")],
        [fake_result("a", seed=1, fingerprint="bbbbbbbbbbbbbbbb"), fake_result("a", dataset="x")],
    ]
    markdown = compare_table(runs, ("recall@1",), run_labels=["old", "new"])
    redial, other = split_tables(markdown)
    assert [row[:2] for row in table_lines(redial)[2:]] == [["b (old)", "0"], ["a (new)", "1"]]
    assert "different dataset versions (fingerprints aaaaaaaaaaaa, bbbbbbbbbbbb)" in redial
    assert "different seeds (0, 1)" in redial
    assert other.startswith("**x, test split") and "Warning" not in other
    with pytest.raises(ValueError, match="run labels"):
        compare_table(runs, run_labels=["only one"])


def test_compare_table_warns_about_sample_counts_and_repeated_seeds() -> None:
    runs = [[fake_result(num_samples=500)], [fake_result(num_samples=499)]]
    markdown = compare_table(runs, aggregate_seeds=True)
    assert "500, 499 samples" not in markdown  # counts are listed sorted
    assert "499, 500 samples" in markdown
    assert "different numbers of samples (499, 500)" in markdown
    assert "kbrd has several runs with the same seed (0, 0)" in markdown


def test_empty_input_gives_an_empty_report() -> None:
    assert markdown_table([]) == ""
    assert compare_table([[], []]) == ""
