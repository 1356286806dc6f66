"""The `convrec` command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from convrec.data.datasets import READERS, load_dataset
from convrec.data.errors import DataFormatError
from convrec.data.schema import ConversationDataset
from convrec.data.stats import StatsTable, dataset_stats

app = typer.Typer(
    help="Knowledge-enhanced conversational recommendation: train, evaluate, chat, serve.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input ends the command with one clear line, not a traceback."""
    try:
        yield
    except (DataFormatError, KeyError, ValueError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        typer.echo(f"error: {message}", err=True)  # plain: no wrapping, no markup
        raise typer.Exit(code=2) from None


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


@app.command()
def quickstart(cache_dir: CacheDirOption = None) -> None:
    """Offline tour: build the synthetic demo world and describe it."""
    with user_errors():
        demo = load_dataset("demo", cache_dir=cache_dir)
    assert isinstance(demo, ConversationDataset)
    console.print(
        "[bold]convrec quickstart[/] — the built-in demo world ([italic]synthetic data[/]): "
        "a generated movie KG and simulated seekers whose dialogues reveal preferences."
    )
    for table in dataset_stats(demo):
        print_table(table)
    dialogue = demo.dialogues("train")[0]
    console.print(f"\n[bold]An example dialogue[/] ({dialogue.id}, synthetic):")
    for turn in dialogue.turns:
        items = ", ".join(demo.item_title(i) for i in turn.items)
        suffix = f"  [dim]items: {items}[/]" if items else ""
        console.print(f"  [cyan]{turn.role:>11}[/]: {turn.text}{suffix}", highlight=False)
    console.print(
        "\nNext: `convrec data stats --dataset inspired --data-dir PATH` for a real dataset."
    )


if __name__ == "__main__":  # pragma: no cover
    app()
