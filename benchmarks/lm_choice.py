"""Which compact generator? Candidate causal LMs pre-trained on dialogues, compared on
INSPIRED's validation dialogues.

    python benchmarks/lm_choice.py [--inspired DIR] [--redial DIR] [--only NAME ...]

Each candidate is `convrec lm pretrain` with other settings (cached: a finished one
returns at once, an interrupted one resumes). Perplexity is reported per token and per
word (whitespace words, each end of turn one word): the candidates tokenize differently
(GPT-2 BPE vs MiniLM's lower-cased WordPiece), so only the per-word number compares them.
The ReDial file (KGSF's 901 validation dialogues) joins the corpus with the hold-out of
the ReDial benchmark runs (20% test, 10% validation, split seed 0), so a ReDial run never
scores an LM that read its test dialogues. Writes benchmarks/results/lm_choice.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from convrec.text.lm import CompactLMConfig, ExtraCorpus, LMPretrainConfig, pretrain_info
from convrec.training.lm_pretrain import CorpusSource, pretrain_lm

RESULTS = Path(__file__).parent / "results"
# The ReDial benchmark's hold-out (benchmarks/redial_baselines.sh).
REDIAL = {"options": {"split_files": {"train": "valid_data.jsonl"}}, "test_fraction": 0.2}
GPT2 = CompactLMConfig(n_layer=4, n_embd=256, n_head=4)


def candidates(redial_dir: str) -> dict[str, tuple[str, LMPretrainConfig]]:
    redial = [ExtraCorpus(dataset="redial", data_dir=redial_dir, **REDIAL)]
    return {
        "gpt2-128-inspired": (
            "GPT-2 4 x 256 from scratch, 128-token blocks, INSPIRED (the phase-1 default)",
            LMPretrainConfig(architecture=GPT2, block_size=128),
        ),
        "gpt2-256-inspired+redial": (
            "GPT-2 4 x 256 from scratch, 256-token blocks, INSPIRED + ReDial",
            LMPretrainConfig(architecture=GPT2, block_size=256, corpora=redial),
        ),
        "minilm-256-inspired": (
            "all-MiniLM-L6-v2 as a causal decoder, 256-token blocks, INSPIRED",
            LMPretrainConfig(base="all-MiniLM-L6-v2", block_size=256, lr=3e-4),
        ),
        "minilm-256-inspired+redial": (
            "all-MiniLM-L6-v2 as a causal decoder, 256-token blocks, INSPIRED + ReDial",
            LMPretrainConfig(base="all-MiniLM-L6-v2", block_size=256, lr=3e-4, corpora=redial),
        ),
    }


def sources(config: LMPretrainConfig, inspired_dir: str) -> list[CorpusSource]:
    """What a run on INSPIRED with these `model.compact_lm` settings pre-trains on."""
    extra = [CorpusSource.extra(corpus) for corpus in config.corpora]
    return [CorpusSource("inspired", inspired_dir), *extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inspired", default="../shared/data/inspired")
    parser.add_argument("--redial", default="../shared/data/redial")
    parser.add_argument("--only", nargs="+")
    args = parser.parse_args()
    record_path = RESULTS / "lm_choice.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    for name, (label, config) in candidates(args.redial).items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        path = pretrain_lm(sources(config, args.inspired), config)
        info = pretrain_info(path) or {}
        record[name] = {
            "label": label,
            "settings": config.model_dump(mode="json"),
            "parameters": info["parameters"],
            "train_tokens": info["train_tokens"],
            "valid_perplexity": info["valid_perplexity"],
            "valid_word_perplexity": info.get("valid_word_perplexity"),
            "best_epoch": info["best_epoch"],
            "train_minutes": round(sum(r["train_seconds"] for r in info["history"]) / 60, 1),
            "wall_minutes_this_call": round((time.perf_counter() - started) / 60, 1),
        }
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "| candidate | parameters | training tokens | valid PPL / token | valid PPL / word "
        "| best epoch | train min |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record.values():
        word = r["valid_word_perplexity"]
        lines.append(
            f"| {r['label']} | {r['parameters'] / 1e6:.1f} M | {r['train_tokens']:,} | "
            f"{r['valid_perplexity']:.1f} | {'' if word is None else f'{word:.1f}'} | "
            f"{r['best_epoch']} | {r['train_minutes']:.0f} |"
        )
    (RESULTS / "lm_choice.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
