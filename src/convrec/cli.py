"""The `convrec` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table

from convrec.data.datasets import READERS, load_dataset
from convrec.data.schema import ConversationDataset
from convrec.data.stats import StatsTable, dataset_stats
from convrec.serving.terminal import terminal_safe

# Model and training imports (transformers, sentence-transformers) take seconds; the
# commands that need them import them, so `convrec data ...` stays quick.

app = typer.Typer(
    help="Knowledge-enhanced conversational recommendation: train, evaluate, chat, serve.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
lm_app = typer.Typer(help="The compact causal LM that prompt-learning methods steer.")
app.add_typer(lm_app, name="lm", no_args_is_help=True)

console = Console()


class EvaluationSplit(StrEnum):
    test = "test"
    valid = "valid"


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input ends the command with one clear line (`error: <file>: <what>`), exit 2."""
    try:
        yield
    # ConfigError and DataFormatError are ValueErrors; FileWriteError (a full disk) and
    # a missing model or data file are OSErrors
    except (KeyError, ValueError, OSError) as e:
        typer.echo(f"error: {error_line(e)}", err=True)  # plain: no wrapping, no markup
        raise typer.Exit(code=2) from None


def error_line(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


class _WarningsToStderr(logging.Handler):
    """Warnings of the library (an empty split file, ...) reach the terminal as one line."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"warning: {terminal_safe(record.getMessage())}", err=True)


@app.callback()
def main() -> None:
    # On the root logger, so that no library's own default handler prints them a second time
    root = logging.getLogger()
    if not any(isinstance(h, _WarningsToStderr) for h in root.handlers):
        root.addHandler(_WarningsToStderr(level=logging.WARNING))


def print_table(table: StatsTable) -> None:
    out = Table(title=table.title, title_justify="left")
    for i, column in enumerate(table.columns):
        out.add_column(column, justify="left" if i == 0 else "right")
    for row in table.rows:
        out.add_row(*row)
    console.print(out)


DatasetOption = Annotated[
    str, typer.Option("--dataset", "-d", help=f"Dataset name: {', '.join(sorted(READERS))}.")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Directory with the dataset's files.")
]
CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", help="Processed-data cache (default $CONVREC_CACHE_DIR or ~/.cache/convrec)."
    ),
]


@data_app.command("stats")
def data_stats(
    dataset: DatasetOption,
    data_dir: DataDirOption = None,
    cache_dir: CacheDirOption = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Read the files afresh.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Counts of dialogues, turns, KG and recommendation samples per protocol."""
    with user_errors():
        loaded = load_dataset(dataset, data_dir, cache_dir=cache_dir, use_cache=not no_cache)
        tables = dataset_stats(loaded)
    if as_json:
        payload = [
            {"title": t.title, "columns": list(t.columns), "rows": [list(r) for r in t.rows]}
            for t in tables
        ]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    for table in tables:
        print_table(table)


@lm_app.command(
    "pretrain", context_settings={"allow_interspersed_args": True}, no_args_is_help=True
)
def lm_pretrain(
    dataset: Annotated[
        list[str],
        typer.Option(
            "--dataset", "-d", help="Dataset whose training dialogues are used; repeat for several."
        ),
    ],
    data_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--data-dir",
            help="Its directory, one per --dataset in the same order (not needed for demo).",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Argument(
            help="key=value settings, e.g. epochs=1 architecture.n_layer=6 "
            "base=all-MiniLM-L6-v2 'corpora=[{dataset: redial, data_dir: DIR}]' "
            "(the `model.compact_lm` section of a prompt-learning model's config)"
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Pre-train exactly the LM `convrec train --model NAME` would use on the one "
            "--dataset: its `model.compact_lm` settings (YAML, dataset section), then these.",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Pre-train the compact LM on dialogues (cached: a second call returns at once)."""
    from convrec.config import resolve_config, validate_settings
    from convrec.text.lm import PRETRAINED_LM, LMPretrainConfig, pretrain_info
    from convrec.training.lm_pretrain import CorpusSource, pretrain_lm
    from convrec.training.run import resolve_backbones

    with user_errors():
        dirs = list(data_dir or [])
        if len(dirs) > len(dataset):
            raise ValueError(f"{len(dirs)} --data-dir for {len(dataset)} --dataset")
        if model is not None:
            if len(dataset) != 1:
                raise ValueError("--model takes one --dataset (add others with corpora=...)")
            overrides = [f"model.compact_lm.{item}" for item in settings or []]
            run = resolve_config(
                model, dataset[0], str(dirs[0]) if dirs else None, overrides=overrides
            )
            if getattr(run.model, "compact_lm", None) is None:
                raise ValueError(f"model {model!r} has no compact LM to pre-train")
            lm = resolve_backbones(run, progress=progress).model.lm  # type: ignore[attr-defined]
            if lm == PRETRAINED_LM:
                raise ValueError(
                    f"{model} uses no LM with these settings (a recommendation-only run on "
                    "the encoder backbone)"
                )
            path = Path(lm)
        else:
            sources = [
                CorpusSource(name, str(dirs[i]) if i < len(dirs) else None)
                for i, name in enumerate(dataset)
            ]
            config = validate_settings(LMPretrainConfig, settings or [], "command line")
            sources += [CorpusSource.extra(corpus) for corpus in config.corpora]
            path = pretrain_lm(sources, config, progress=progress)
    info = pretrain_info(path) or {}
    typer.echo(
        f"compact LM: {path}\n"
        f"  {info.get('parameters', 0):,} parameters, {info.get('train_tokens', 0):,} training "
        f"tokens, valid perplexity {info.get('valid_perplexity', float('nan')):.1f} per "
        f"token, {info.get('valid_word_perplexity', float('nan')):.1f} per word\n"
        f"  use it with model.lm={path} (a run with model.lm=pretrained finds it itself when "
        "it was pre-trained on the run's dataset with the same settings)"
    )


@app.command("models")
def list_models() -> None:
    """The registered models, one line each."""
    from convrec.registry import get_model, model_names

    for name in model_names():
        typer.echo(f"{name:<12} {get_model(name).description}")


OverridesArgument = Annotated[
    list[str] | None,
    typer.Argument(help="key=value overrides, e.g. train.lr=3e-4 model.embedding_dim=64 seed=2"),
]


@app.command(context_settings={"allow_interspersed_args": True})
def train(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name (convrec models).")
    ] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset name.")] = None,
    data_dir: DataDirOption = None,
    overrides: OverridesArgument = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML file layered over the model defaults.")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run directory (default runs/<id>).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this directory.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the run already in --run-dir.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train a model and evaluate it on the test split (every protocol of its task)."""
    from convrec.config import RunConfig, resolve_config
    from convrec.training.distributed import init_distributed, shutdown_distributed
    from convrec.training.run import new_run_dir
    from convrec.training.run import train as train_run

    with user_errors():
        if resume is not None:
            if model or dataset or overrides or config_file or run_dir or overwrite:
                raise ValueError("--resume takes the run's saved config; give no other settings")
            config = RunConfig.load(resume / "config.yaml")
            directory = resume
        else:
            if not model or not dataset:
                raise ValueError("train needs --model and --dataset (or --resume RUN_DIR)")
            config = resolve_config(
                model, dataset, data_dir, config_file=config_file, overrides=overrides or []
            )
            directory = run_dir
        dist = init_distributed()
        try:
            directory = dist.broadcast(directory or new_run_dir(config))
            train_run(
                config,
                directory,
                resume=resume is not None,
                overwrite=overwrite,
                progress=progress,
                dist=dist,
            )
        finally:
            shutdown_distributed(dist)
    if dist.is_main:
        console.print(f"run directory: {directory}")
        typer.echo((directory / "report.md").read_text())


@app.command()
def evaluate(
    run: Annotated[Path, typer.Option("--run", help="A run directory (runs/<id>).")],
    split: Annotated[
        EvaluationSplit,
        typer.Option(
            help="test: into metrics.json and report.md; valid: into valid_metrics.json and "
            "valid_report.md (to choose between runs without looking at test)."
        ),
    ] = EvaluationSplit.test,
) -> None:
    """Re-evaluate a trained run on the test (or validation) split."""
    from convrec.training.run import EVALUATION_FILES
    from convrec.training.run import evaluate as evaluate_run

    with user_errors():
        evaluate_run(run, split=split.value)
    typer.echo((run / EVALUATION_FILES[split.value][1]).read_text())


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories.")],
    aggregate_seeds: Annotated[
        bool, typer.Option(help="Mean ± std over runs of the same model (and label).")
    ] = False,
    label_by: Annotated[
        list[str] | None,
        typer.Option(
            "--label-by",
            help="Label rows with this setting of each run's config, e.g. model.knowledge "
            "(repeatable); runs of one model with different labels stay apart.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write markdown here.")
    ] = None,
) -> None:
    """Several runs' test results in one table per dataset and protocol."""
    from convrec.data.files import write_atomic
    from convrec.evaluation.report import REFERENCE_ROWS, compare_table
    from convrec.training.run import compare_results

    with user_errors():
        results, labels = compare_results(runs, label_by)
        table = compare_table(
            results,
            run_labels=labels,
            reference_rows=REFERENCE_ROWS,
            aggregate_seeds=aggregate_seeds,
        )
        if output is not None:
            write_atomic(output, table + "\n")
    typer.echo(table)


MaxHistoryOption = Annotated[
    int | None,
    typer.Option("--max-history-turns", min=1, help="Turns the model sees (default: all)."),
]
ExcludeMentionedOption = Annotated[
    bool,
    typer.Option(
        "--exclude-mentioned/--keep-mentioned",
        help="Never recommend an item the conversation already named.",
    ),
]

CHAT_HELP = """commands:
  /reset   start a new conversation (the model forgets what was said)
  /help    this list
  /quit    leave (so does end of input, Ctrl-D)
anything else is a message to the recommender"""


@app.command()
def chat(
    run: Annotated[Path, typer.Option("--run", help="A trained run directory (runs/<id>).")],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Items recommended per reply.")] = 3,
    max_history_turns: MaxHistoryOption = None,
    exclude_mentioned: ExcludeMentionedOption = True,
) -> None:
    """Chat with a trained run in the terminal; reads lines from stdin (a pipe works too)."""
    from convrec.data.tasks import RecTask
    from convrec.serving import ChatSession
    from convrec.training.run import load_run

    with user_errors():
        config, task, model = load_run(run)
        if not isinstance(task, RecTask):
            raise ValueError(
                f"{run}: chat needs a run on dialogues; {config.model_name} on "
                f"{config.dataset} is a {task.kind} run (use `convrec evaluate`)"
            )
        session = ChatSession(
            model,
            task,
            top_k=top_k,
            max_history_turns=max_history_turns,
            exclude_mentioned=exclude_mentioned,
        )
    synthetic = " (synthetic)" if task.dataset.synthetic else ""
    typer.echo(
        terminal_safe(
            f"convrec chat: {config.model_name} on {config.dataset}{synthetic}, from {run}. "
            "/help for commands, /quit to leave."
        )
    )
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            typer.echo("you> ", nl=False)
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            typer.echo()
            break
        if not line:  # end of input
            if interactive:
                typer.echo()
            break
        message = line.strip()
        if not message:
            continue
        if not interactive:  # a transcript of a piped chat shows what was said
            typer.echo(f"you> {terminal_safe(message)}")
        if message.startswith("/"):
            command = message.lower()
            if command in ("/quit", "/exit"):
                break
            if command == "/reset":
                session.reset()
                typer.echo("(new conversation: the history is cleared)")
            elif command == "/help":
                typer.echo(CHAT_HELP)
            else:
                typer.echo(
                    f"error: unknown command {terminal_safe(message)}; /help lists them", err=True
                )
            continue
        try:
            reply = session.send(message)
        except ValueError as e:
            typer.echo(f"error: {terminal_safe(str(e))}", err=True)
            continue
        typer.echo(terminal_safe(f"{config.model_name}> {reply.text}"))
        if reply.items:
            ranked = "  ".join(f"{n}. {item.title}" for n, item in enumerate(reply.items, 1))
            typer.echo(terminal_safe(f"  recommends: {ranked}"))


@app.command()
def serve(
    runs: Annotated[
        list[Path],
        typer.Option("--run", help="A trained run directory; repeat to serve several."),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    database: Annotated[
        Path | None,
        typer.Option(
            "--db", help="SQLite file of the conversations (default: <cache dir>/serve.sqlite)."
        ),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=50, help="Items per reply.")] = 3,
    max_message_chars: Annotated[
        int, typer.Option("--max-message-chars", min=1, help="Longer messages are refused.")
    ] = 4000,
    max_history_turns: MaxHistoryOption = None,
    exclude_mentioned: ExcludeMentionedOption = True,
    workers: Annotated[
        int, typer.Option(min=1, help="Model calls at a time, per model (threads).")
    ] = 1,
) -> None:
    """Serve trained runs: an HTTP API (docs at /docs) and a web chat page at /."""
    import uvicorn

    from convrec.data.cache import default_cache_dir
    from convrec.serving.app import ServeSettings, Service, create_app, served_model
    from convrec.serving.store import SessionStore
    from convrec.training.run import load_run

    with user_errors():
        settings = ServeSettings(
            top_k=top_k,
            max_message_chars=max_message_chars,
            max_history_turns=max_history_turns,
            exclude_mentioned=exclude_mentioned,
            workers=workers,
        )
        names = [run.resolve().name for run in runs]
        if len(set(names)) != len(names):
            raise ValueError(f"two runs have the same directory name: {names}")
        served = []
        for name, run in zip(names, runs, strict=True):
            config, task, model = load_run(run)
            served.append(served_model(name, config, task, model, workers))
        store = SessionStore(database or default_cache_dir() / "serve.sqlite")
    typer.echo(f"convrec serve: {', '.join(names)}; conversations in {store.path}", err=True)
    typer.echo(f"open http://{host}:{port}/ (API docs at /docs)", err=True)
    uvicorn.run(create_app(Service(served, store, settings)), host=host, port=port)
    store.close()


@app.command()
def quickstart(
    cache_dir: CacheDirOption = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Where to put the run (default runs/<id>).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the run already in --run-dir.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Offline tour: demo world -> train kbrd -> evaluate -> example recommendations."""
    from convrec.config import resolve_config
    from convrec.data.samples import build_rec_samples
    from convrec.evaluation.ranking import top_k_items
    from convrec.training.run import load_run, new_run_dir
    from convrec.training.run import train as train_run

    if cache_dir is not None:
        os.environ["CONVREC_CACHE_DIR"] = str(cache_dir)
    with user_errors():
        demo = load_dataset("demo")
    assert isinstance(demo, ConversationDataset)
    console.print(
        "[bold]convrec quickstart[/] — the built-in demo world ([italic]synthetic data[/]): "
        "a generated movie KG and simulated seekers whose dialogues reveal preferences."
    )
    for table in dataset_stats(demo):
        print_table(table)

    with user_errors():
        config = resolve_config("kbrd", "demo")
        directory = run_dir or new_run_dir(config)
        console.print(f"\n[bold]Training kbrd[/] on the demo world -> {directory}")
        train_run(config, directory, overwrite=overwrite, progress=progress)
        _, task, model = load_run(directory)
    typer.echo("\n" + (directory / "report.md").read_text())

    console.print("[bold]Three test recommendations[/] (synthetic dialogues):")
    samples = build_rec_samples(demo.dialogues("test"))[::97][:3]
    with torch.no_grad():
        top = top_k_items(model.recommend(model.collate(samples)), 5)
    for sample, best in zip(samples, top.tolist(), strict=True):
        console.print(f"\n  [dim]{sample.dialogue_id}, turn {sample.turn_index}[/]")
        for turn in sample.context_turns[-4:]:
            console.print(f"  [cyan]{turn.role:>11}[/]: {turn.text}", highlight=False)
        titles = [
            ("* " if task.kg.items[i] == sample.target_item else "")
            + demo.item_title(int(task.kg.items[i]))
            for i in best
        ]
        console.print(f"  [green]kbrd top 5[/]: {'; '.join(titles)}", highlight=False)
        console.print(f"  [dim]the recommender said: {demo.item_title(sample.target_item)}[/]")
    console.print(
        "\nNext: `convrec train --model kbrd --dataset inspired --data-dir PATH`, "
        "`convrec models`, `convrec data stats --dataset inspired --data-dir PATH`."
    )


if __name__ == "__main__":  # pragma: no cover
    app()
