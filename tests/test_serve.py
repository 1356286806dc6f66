"""`convrec serve`: the API, its errors, persistence across a restart, streaming, the page."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from convrec.models.base import ModelConfig, Reply
from convrec.serving.app import ServeSettings, Service, create_app, served_model
from convrec.serving.facts import ItemFacts, readable_relation
from convrec.serving.store import SessionStore
from convrec.training.run import load_run
from tests.conftest import PROJECT_ROOT, IndexRanker


@pytest.fixture(scope="module")
def served(kbrd_demo_run: Path, kbrd_demo_cache: Path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVREC_CACHE_DIR", str(kbrd_demo_cache))
        config, task, model = load_run(kbrd_demo_run)
    return served_model("kbrd-demo", config, task, model, workers=1)


def make_client(served, database: Path, **settings) -> TestClient:
    service = Service([served], SessionStore(database), ServeSettings(**settings))
    return TestClient(create_app(service), raise_server_exceptions=False)


@pytest.fixture
def client(served, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(served, tmp_path / "sessions.sqlite") as client:
        yield client


def new_session(client: TestClient) -> str:
    response = client.post("/sessions", json={})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def title(served, n: int) -> str:
    return served.task.dataset.item_title(int(served.task.kg.items[n]))


# -- the API -------------------------------------------------------------------------------


def test_health_and_models(client) -> None:
    assert client.get("/health").json() == {"status": "ok", "models": 1}
    (model,) = client.get("/models").json()
    assert model == {
        "name": "kbrd-demo",
        "model": "kbrd",
        "dataset": "demo",
        "synthetic": True,
        "can_rank": True,
        "can_respond": False,
    }


def test_a_conversation_from_start_to_delete(client, served) -> None:
    session = new_session(client)
    first = client.post(f"/sessions/{session}/messages", json={"text": "I love sci-fi"}).json()
    assert first["session"] == session
    assert len(first["items"]) == 3
    assert [e["label"] for e in first["linked"]] == ["sci-fi"]
    for item in first["items"]:
        assert item["title"] == served.task.dataset.item_title(item["id"])
        assert {"director", "genre"} <= {f["relation"] for f in item["facts"]}
    assert all(item["title"] in first["text"] for item in first["items"])

    named = title(served, 0)
    second = client.post(f"/sessions/{session}/messages", json={"text": f"I liked {named}"})
    assert second.status_code == 200
    assert named not in [item["title"] for item in second.json()["items"]]

    history = client.get(f"/sessions/{session}").json()
    assert [t["role"] for t in history["turns"]] == ["seeker", "recommender"] * 2
    assert history["turns"][1]["text"] == first["text"]
    assert [i["id"] for i in history["turns"][1]["items"]] == [i["id"] for i in first["items"]]

    assert client.delete(f"/sessions/{session}").status_code == 204
    assert client.get(f"/sessions/{session}").status_code == 404
    gone = client.post(f"/sessions/{session}/messages", json={"text": "hello?"})
    assert gone.status_code == 404 and gone.json()["field"] == "session_id"
    assert client.delete(f"/sessions/{session}").status_code == 404


def test_recommend_is_stateless_and_matches_a_session(client, served) -> None:
    conversation = [
        {"role": "seeker", "text": "Hi! I love sci-fi"},
        {"role": "recommender", "text": "What else do you like?"},
        {"role": "seeker", "text": f"I liked {title(served, 0)}"},
    ]
    response = client.post("/recommend", json={"conversation": conversation, "top_k": 5})
    assert response.status_code == 200, response.text
    ranked = response.json()
    assert len(ranked["items"]) == 5
    assert title(served, 0) not in [i["title"] for i in ranked["items"]]
    scores = [i["score"] for i in ranked["items"]]
    assert scores == sorted(scores, reverse=True)
    again = client.post("/recommend", json={"conversation": conversation, "top_k": 5}).json()
    assert again == ranked


def test_bad_input_gets_a_4xx_naming_the_field(client) -> None:
    session = new_session(client)
    url = f"/sessions/{session}/messages"

    def check(response: httpx.Response, status: int, field: str | None, words: str) -> None:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["field"] == field and words in body["error"], body

    check(client.post(url, json={"text": "   "}), 422, "text", "empty message")
    check(client.post(url, json={"text": "x" * 4001}), 422, "text", "4001 characters")
    check(client.post(url, json={}), 422, "text", "required")
    check(client.post(url, json={"text": 5}), 422, "text", "string")
    check(client.post(url, json={"text": "hi", "mood": 1}), 422, "mood", "not permitted")
    check(client.post(url, content=b'{"text": "hi"', headers=JSON), 400, "body", "malformed JSON")
    check(client.post(url, content=b"text=hi", headers=FORM), 415, "content-type", "send JSON")
    check(client.post("/sessions/nope/messages", json={"text": "hi"}), 404, "session_id", "unknown")
    check(client.post("/sessions", json={"model": "gpt"}), 404, "model", "unknown model 'gpt'")
    check(client.post("/recommend", json={"conversation": []}), 422, "conversation", "at least 1")
    bad_turn = {"conversation": [{"role": "seeker", "text": ""}]}
    check(client.post("/recommend", json=bad_turn), 422, "conversation.0.text", "empty")
    check(client.get("/nothing-here"), 404, None, "Not Found")
    # nothing of that reached the conversation
    assert client.get(f"/sessions/{session}").json()["turns"] == []
    assert client.post(url, json={"text": "x" * 4000}).status_code == 200


JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_a_failing_model_is_a_500_without_a_traceback(client, served, monkeypatch) -> None:
    session = new_session(client)

    def broken(batch):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(served.model, "recommend", broken)
    response = client.post(f"/sessions/{session}/messages", json={"text": "hi"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error", "field": None}
    monkeypatch.undo()
    assert client.get(f"/sessions/{session}").json()["turns"] == []  # nothing half-stored


def test_conversations_survive_a_restart(served, tmp_path: Path) -> None:
    database = tmp_path / "sessions.sqlite"
    with make_client(served, database) as client:
        session = new_session(client)
        first = client.post(f"/sessions/{session}/messages", json={"text": "I love sci-fi"})
    with make_client(served, database) as client:  # a new service on the same file
        before = client.get(f"/sessions/{session}").json()
        assert [t["text"] for t in before["turns"]][1] == first.json()["text"]
        second = client.post(f"/sessions/{session}/messages", json={"text": "more please"})
        assert second.status_code == 200
        shown = {i["id"] for i in first.json()["items"]}
        assert not shown & {i["id"] for i in second.json()["items"]}  # it remembers them
        assert len(client.get(f"/sessions/{session}").json()["turns"]) == 4


def events(body: str) -> list[tuple[str, dict]]:
    parsed = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        parsed.append((lines["event"], json.loads(lines["data"])))
    return parsed


def test_a_reply_streams_as_server_sent_events(client) -> None:
    session = new_session(client)
    headers = {"Accept": "text/event-stream"}
    with client.stream(
        "POST", f"/sessions/{session}/messages", json={"text": "I love sci-fi"}, headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    (text_event, text), (reply_event, reply) = events(body)  # a ranking model: one piece
    assert (text_event, reply_event) == ("text", "reply")
    assert text["text"] == reply["text"] and len(reply["items"]) == 3
    assert client.get(f"/sessions/{session}").json()["turns"][1]["text"] == reply["text"]
    # bad input is refused before any event
    refused = client.post(f"/sessions/{session}/messages", json={"text": ""}, headers=headers)
    assert refused.status_code == 422


class Streamer(IndexRanker):
    """Writes its reply in three pieces, recommending the first catalogue item."""

    name = "streamer"
    description = "test double"
    Config = ModelConfig
    can_respond = True

    def respond(self, samples, *, exclude=None, on_text=None):
        item = int(self.task.kg.items[0])
        pieces = ["Try", " ", self.task.dataset.item_title(item)]
        for piece in pieces:
            if on_text is not None:
                on_text(piece)
        return [Reply("".join(pieces), (item,)) for _ in samples]


def test_a_generated_reply_streams_piece_by_piece(served, tmp_path: Path) -> None:
    streamer = served_model(
        "streamer", served.config, served.task, Streamer(ModelConfig(), served.task), 1
    )
    with make_client(streamer, tmp_path / "s.sqlite") as client:
        session = new_session(client)
        body = client.post(
            f"/sessions/{session}/messages",
            json={"text": "hello"},
            headers={"Accept": "text/event-stream"},
        ).text
    parsed = events(body)
    assert [event for event, _ in parsed] == ["text", "text", "text", "reply"]
    reply = parsed[-1][1]
    assert "".join(data["text"] for _, data in parsed[:-1]) == reply["text"]
    assert reply["items"][0]["title"] in reply["text"]


def test_the_page_and_the_docs_are_served(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="model"' in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from a CDN
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/sessions", "/sessions/{session_id}/messages", "/recommend"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200


# -- the parts ------------------------------------------------------------------------------


def test_item_facts_read_like_words(served) -> None:
    facts = ItemFacts(served.task.dataset)
    item = int(served.task.kg.items[0])
    relations = [f.relation for f in facts.facts(item)]
    assert relations[:2] == ["director", "genre"]  # preferred relations first
    assert not any(":" in f.label for f in facts.facts(item))
    assert readable_relation("<http://dbpedia.org/ontology/musicComposer>") == "music composer"
    assert facts.reason(item, set()) is None


def test_the_store_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "broken.sqlite"
    path.write_text("not sqlite at all, just text " * 100)
    with pytest.raises(ValueError, match=r"broken\.sqlite: not a usable session database"):
        SessionStore(path)


# -- the command ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_convrec_serve_answers_on_loopback(
    kbrd_demo_run: Path, kbrd_demo_cache: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, "CONVREC_CACHE_DIR": str(kbrd_demo_cache), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "convrec",
        "serve",
        "--run",
        str(kbrd_demo_run),
        "--port",
        str(port),
    ]
    command += ["--db", str(tmp_path / "s.sqlite")]
    server = subprocess.Popen(
        command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline, "serve did not start in 300 s"
                time.sleep(0.3)
        assert health.json()["status"] == "ok"
        session = httpx.post(f"{url}/sessions", json={}).json()["id"]
        reply = httpx.post(f"{url}/sessions/{session}/messages", json={"text": "sci-fi please"})
        assert reply.status_code == 200 and len(reply.json()["items"]) == 3
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    assert "Traceback" not in output
    assert SessionStore(tmp_path / "s.sqlite").count_turns() == 2
