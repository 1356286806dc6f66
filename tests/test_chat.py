"""The chat session and `convrec chat`, on a kbrd run trained for a few steps on demo data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convrec.cli import app
from convrec.config import RunConfig
from convrec.data.samples import ConvSample
from convrec.data.tasks import RecTask
from convrec.evaluation.ranking import top_k_items
from convrec.models.base import ConvRecModel, ModelConfig, Reply
from convrec.serving import ChatReply, ChatSession
from convrec.training.run import load_run
from tests.conftest import PROJECT_ROOT, IndexRanker

CONVERSATION = "I love sci-fi\n/reset\nsomething funny, a comedy maybe\n/quit\n"

runner = CliRunner()


@pytest.fixture(scope="module")
def loaded(kbrd_demo_run: Path, kbrd_demo_cache: Path) -> tuple[RunConfig, RecTask, ConvRecModel]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVREC_CACHE_DIR", str(kbrd_demo_cache))
        return load_run(kbrd_demo_run)


@pytest.fixture
def session(loaded) -> ChatSession:
    _, task, model = loaded
    return ChatSession(model, task)


def entity(task: RecTask, name: str) -> int:
    return task.kg.entity_id(name)


# -- the session with kbrd (no text generation: template replies) --------------------------


def test_history_grows_with_linked_turns_and_the_shown_items(session) -> None:
    task = session.task
    reply = session.send("I love sci-fi")
    assert isinstance(reply, ChatReply)
    seeker, recommender = session.history
    assert (seeker.role, seeker.text, seeker.entities) == (
        "seeker",
        "I love sci-fi",
        (entity(task, "genre:sci-fi"),),
    )
    assert recommender.role == "recommender" and recommender.text == reply.text
    assert recommender.items == tuple(r.entity for r in reply.items)
    assert len(reply.items) == 3
    assert all(r.title == task.dataset.item_title(r.entity) for r in reply.items)
    assert reply.linked == ((entity(task, "genre:sci-fi"), "sci-fi"),)

    session.send("and some drama")
    assert len(session.history) == 4
    # first mention first, each once: the genre, the items shown, the new genre, the items
    expected = (entity(task, "genre:sci-fi"), *recommender.items, entity(task, "genre:drama"))
    expected += session.history[3].items
    assert session.context_entities == tuple(dict.fromkeys(expected))


def test_reset_clears_the_conversation(session) -> None:
    session.send("I love sci-fi")
    first_id = session.dialogue_id
    session.reset()
    assert session.history == () and session.context_entities == ()
    assert session.dialogue_id != first_id
    session.send("something funny")
    assert len(session.history) == 2


def test_bad_messages_are_rejected_without_changing_the_state(session) -> None:
    session.send("I love sci-fi")
    before = (session.history, session.context_entities)
    with pytest.raises(ValueError, match=r"1001 characters.*limit is 1000"):
        session.send("x" * 1001)
    with pytest.raises(ValueError, match="empty"):
        session.send("   \n")
    assert (session.history, session.context_entities) == before
    session.send("y" * 1000)  # at the limit is fine
    assert len(session.history) == 4


def test_template_reply_lists_the_models_top_k_in_order(loaded) -> None:
    _, task, model = loaded
    session = ChatSession(model, task, top_k=4)
    reply = session.send("Anything with sci-fi or drama?")
    seeker = session.history[0]
    sample = ConvSample("x", 1, "recommender", (seeker,), seeker.entities, "", ())
    with torch.no_grad():
        top = top_k_items(model.recommend(model.collate([sample])), 4)[0]
    expected = [int(task.kg.items[k]) for k in top]
    assert [r.entity for r in reply.items] == expected
    scores = [r.score for r in reply.items]
    assert scores == sorted(scores, reverse=True)
    titles = [task.dataset.item_title(i) for i in expected]
    positions = [reply.text.index(title) for title in titles]
    assert positions == sorted(positions)
    assert reply.text.endswith("?") or reply.text.endswith(".")
    # deterministic: the same message in a fresh session gives the same reply
    assert ChatSession(model, task, top_k=4).send("Anything with sci-fi or drama?") == reply


# -- the session with a model that responds -------------------------------------------------


class Scripted(IndexRanker):
    """Answers with fixed items; ranks the catalogue in index order; records its inputs."""

    name = "scripted"
    description = "test double"
    Config = ModelConfig
    can_respond = True

    def __init__(self, task: RecTask, items: tuple[int, ...], fail: bool = False) -> None:
        super().__init__(ModelConfig(), task)
        self.items = items
        self.fail = fail
        self.seen: list[ConvSample] = []

    def respond(self, samples: Sequence[ConvSample], *, exclude=None, on_text=None) -> list[Reply]:
        if self.fail:
            raise RuntimeError("the model broke")
        self.seen += samples
        return [Reply(f"reply {len(self.seen)}", self.items) for _ in samples]


def test_a_responding_model_gets_the_context_and_its_items_are_shown(loaded) -> None:
    _, task, _ = loaded
    picks = (int(task.kg.items[5]), int(task.kg.items[2]))
    model = Scripted(task, picks)
    session = ChatSession(model, task)
    first = session.send("I love sci-fi")
    assert first.text == "reply 1"
    assert [(r.entity, r.title) for r in first.items] == [
        (i, task.dataset.item_title(i)) for i in picks
    ]
    # Scripted ranks the catalogue in index order: scores -position
    assert [r.score for r in first.items] == [-5.0, -2.0]

    second = session.send("and drama too")
    sample = model.seen[-1]
    assert sample.role == "recommender" and sample.turn_index == 3
    assert sample.context_turns == session.history[:3]
    assert [t.role for t in sample.context_turns] == ["seeker", "recommender", "seeker"]
    assert sample.context_turns[1].items == picks
    sci_fi, drama = entity(task, "genre:sci-fi"), entity(task, "genre:drama")
    assert sample.context_entities == (sci_fi, *picks, drama)
    assert second.text == "reply 2"


def test_a_reply_without_items_shows_the_models_top_k(loaded) -> None:
    _, task, _ = loaded
    session = ChatSession(Scripted(task, ()), task, top_k=2)
    reply = session.send("hello")
    assert [r.entity for r in reply.items] == [int(task.kg.items[0]), int(task.kg.items[1])]
    assert reply.text == "reply 1"


def test_max_history_turns_limits_what_the_model_sees(loaded) -> None:
    _, task, _ = loaded
    model = Scripted(task, ())
    session = ChatSession(model, task, max_history_turns=2)
    for message in ("I love sci-fi", "and drama", "anything else?"):
        session.send(message)
    sample = model.seen[-1]
    assert len(session.history) == 6
    assert sample.context_turns == session.history[3:5]
    assert sample.turn_index == 5
    assert entity(task, "genre:sci-fi") not in sample.context_entities


def test_a_failing_model_leaves_the_session_unchanged(loaded) -> None:
    _, task, _ = loaded
    session = ChatSession(Scripted(task, (), fail=True), task)
    with pytest.raises(RuntimeError):
        session.send("I love sci-fi")
    assert session.history == ()


def test_items_the_conversation_named_are_not_recommended_again(loaded) -> None:
    _, task, _ = loaded
    first, second = (int(e) for e in task.kg.items[:2])
    message = f"I loved {task.dataset.item_title(first)}"
    session = ChatSession(Scripted(task, ()), task, top_k=2)
    reply = session.send(message)
    assert first not in [r.entity for r in reply.items]
    assert reply.items[0].entity == second
    again = session.send("anything else?")  # nor what was already recommended
    assert not {r.entity for r in again.items} & {first, *(r.entity for r in reply.items)}

    keep = ChatSession(Scripted(task, ()), task, top_k=2, exclude_mentioned=False)
    assert keep.send(message).items[0].entity == first


class Ranker(Scripted):
    can_respond = False


def test_a_template_reply_varies_and_says_what_links_its_first_item(loaded) -> None:
    _, task, _ = loaded
    session = ChatSession(Ranker(task, ()), task, top_k=1)
    top = int(task.kg.items[0])
    director = next(f for f in session.facts.facts(top) if f.relation == "director")
    reply = session.send(f"Anything by {director.label}?")
    assert reply.items[0].entity == top
    title = task.dataset.item_title(top)
    assert reply.text.endswith(f"{title} is directed by {director.label}.")
    texts = {session.send("more please").text.split(" ")[0] for _ in range(3)}
    assert len(texts) == 3  # the template changes from turn to turn


def test_answer_changes_nothing_until_recorded_and_history_can_be_restored(loaded) -> None:
    _, task, _ = loaded
    model = Scripted(task, ())
    session = ChatSession(model, task)
    reply = session.answer("I love sci-fi")
    assert session.history == () and len(reply.turns) == 2
    session.record(reply)
    assert session.history == reply.turns

    restored = ChatSession(model, task, history=session.history, dialogue_id="abc")
    restored.send("and drama")
    assert model.seen[-1].context_turns[:2] == reply.turns
    assert model.seen[-1].dialogue_id == "abc"


# -- convrec chat ---------------------------------------------------------------------------


def recommended_titles(output: str) -> list[list[str]]:
    return [
        re.split(r"\s{2}\d+\. ", line.split("recommends: 1. ", 1)[1])
        for line in output.splitlines()
        if "recommends: 1. " in line
    ]


def test_chat_cli_scripted_conversation(
    kbrd_demo_run, loaded, kbrd_demo_cache, monkeypatch
) -> None:
    _, task, _ = loaded
    monkeypatch.setenv("CONVREC_CACHE_DIR", str(kbrd_demo_cache))
    script = f"I love sci-fi\n/help\n{'x' * 1001}\nsome drama?\n/reset\n\nsomething funny\n"
    result = runner.invoke(app, ["chat", "--run", str(kbrd_demo_run), "--top-k", "2"], input=script)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("convrec chat: kbrd on demo (synthetic)")
    assert "/reset" in result.stdout and "/quit" in result.stdout  # the help
    assert "new conversation" in result.stdout
    assert "error: message too long: 1001 characters, the limit is 1000" in result.stderr
    titles = recommended_titles(result.stdout)
    assert len(titles) == 3  # the overlong message lost nothing: the next one was answered
    known = set(task.dataset.item_titles.values())
    assert all(len(row) == 2 and set(row) <= known for row in titles)
    assert result.stdout.count("kbrd> ") == 3  # replies, one per message


def test_chat_cli_through_a_real_pipe(kbrd_demo_run, kbrd_demo_cache) -> None:
    env = {**os.environ, "CONVREC_CACHE_DIR": str(kbrd_demo_cache), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "convrec", "chat", "--run", str(kbrd_demo_run)],
        input=CONVERSATION,
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "you> I love sci-fi" in result.stdout
    assert "new conversation" in result.stdout
    titles = recommended_titles(result.stdout)
    assert len(titles) == 2 and all(len(row) == 3 for row in titles)


def test_chat_cli_without_a_finished_run_is_one_error_line(tmp_path, kbrd_demo_run) -> None:
    result = runner.invoke(app, ["chat", "--run", str(tmp_path / "missing")], input="")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((kbrd_demo_run / "config.yaml").read_text())
    result = runner.invoke(app, ["chat", "--run", str(unfinished)], input="")
    assert result.exit_code == 2
    assert "no model.pt" in result.stderr and result.stderr.count("\n") == 1


def test_piped_chat_prints_no_terminal_escape_sequences(
    kbrd_demo_run, kbrd_demo_cache, monkeypatch
) -> None:
    monkeypatch.setenv("CONVREC_CACHE_DIR", str(kbrd_demo_cache))
    hostile = "I love \x1b[2J\x1b]0;pwned\x07sci-fi\x1b]52;c;ZXZpbA==\x07 \u202efilms\x9b31m"
    script = f"{hostile}\n/\x1b[31mnope\n"
    result = runner.invoke(app, ["chat", "--run", str(kbrd_demo_run)], input=script)
    assert result.exit_code == 0, result.output
    assert "you> I love sci-fi films" in result.stdout
    assert "unknown command /nope" in result.stderr
    for control in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert control not in result.output
