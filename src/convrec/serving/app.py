"""`convrec serve`: trained runs behind an HTTP API and a web chat page.

Every conversation goes through `ChatSession`, the same code as `convrec chat`; this
module adds what a service needs around it:

- **Storage.** Turns are written to SQLite (`SessionStore`) before the reply leaves, so a
  restarted server continues every conversation. Live sessions are kept in memory (least
  recently used first out) and rebuilt from the store when needed.
- **Concurrency.** Model calls run in worker threads (`ServeSettings.workers` at a time
  per model), never on the event loop, so health checks, the page and other sessions are
  answered while a model thinks; one session handles one message at a time.
- **Streaming.** With `Accept: text/event-stream` a message is answered as server-sent
  events: `text` events with the reply as it is generated (one for a ranking-only model),
  then one `reply` event with the stored result (or one `error` event).
- **Bad input** is a 4xx with a JSON body `{"error": ..., "field": ...}`; an unexpected
  failure is a 500 with `{"error": "internal error"}` and the traceback goes to the log,
  not the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from convrec.config import RunConfig
from convrec.data.linking import EntityLinker
from convrec.data.schema import Turn
from convrec.data.tasks import RecTask
from convrec.models.base import ConvRecModel
from convrec.serving.facts import ItemFacts
from convrec.serving.session import ChatSession, Recommendation
from convrec.serving.store import SessionStore

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


class ServeSettings(BaseModel):
    """How the service answers (`convrec serve` options)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(3, ge=1, le=50, description="Items recommended per reply.")
    max_message_chars: int = Field(4000, ge=1, description="Longer messages are refused.")
    max_history_turns: int | None = Field(None, ge=1, description="Turns a model sees.")
    exclude_mentioned: bool = Field(True, description="Never recommend what was named.")
    workers: int = Field(1, ge=1, description="Model calls at a time, per model.")
    live_sessions: int = Field(1024, ge=1, description="Sessions kept in memory.")


@dataclass
class ServedModel:
    """One trained run, loaded once, with what its sessions share."""

    name: str
    config: RunConfig
    task: RecTask
    model: ConvRecModel
    linker: EntityLinker
    facts: ItemFacts
    limiter: anyio.CapacityLimiter


def served_model(
    name: str, config: RunConfig, task: RecTask, model: ConvRecModel, workers: int
) -> ServedModel:
    if not isinstance(task, RecTask):
        raise ValueError(
            f"{name}: serve needs a run on dialogues; {config.model_name} on "
            f"{config.dataset} is a {task.kind} run"
        )
    return ServedModel(
        name,
        config,
        task,
        model,
        EntityLinker.for_dataset(task.dataset),
        ItemFacts(task.dataset),
        anyio.CapacityLimiter(workers),
    )


# -- the API's request and response bodies -----------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewSession(Body):
    model: str | None = Field(None, description="A name from GET /models (default: the first).")


class Message(Body):
    text: str = Field(description="What the user says.")


class ConversationTurn(Body):
    role: Literal["seeker", "recommender"]
    text: str


class RecommendRequest(Body):
    model: str | None = Field(None, description="A name from GET /models (default: the first).")
    conversation: list[ConversationTurn] = Field(
        min_length=1, description="The whole conversation so far; the seeker speaks last."
    )
    top_k: int | None = Field(None, ge=1, le=50)


class ModelInfo(BaseModel):
    name: str
    model: str
    dataset: str
    synthetic: bool
    can_rank: bool
    can_respond: bool


class FactOut(BaseModel):
    relation: str
    entity: int
    label: str


class ItemOut(BaseModel):
    id: int = Field(description="KG entity id of the catalogue item.")
    title: str
    score: float | None = None
    facts: list[FactOut] = []


class EntityOut(BaseModel):
    id: int
    label: str


class ReplyOut(BaseModel):
    session: str
    text: str
    items: list[ItemOut]
    linked: list[EntityOut] = Field(description="What the message named, first mention first.")


class TurnOut(BaseModel):
    role: str
    text: str
    items: list[ItemOut]


class SessionOut(BaseModel):
    id: str
    model: str
    turns: list[TurnOut]


class RecommendOut(BaseModel):
    model: str
    items: list[ItemOut]
    linked: list[EntityOut]


class ErrorOut(BaseModel):
    error: str
    field: str | None = None


class ClientError(Exception):
    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.field = status, error, field


# -- the service -------------------------------------------------------------------------


@dataclass
class LiveSession:
    chat: ChatSession
    served: ServedModel
    lock: threading.Lock  # one message at a time


class Service:
    """The served models, the store and the live sessions (what the routes share)."""

    def __init__(
        self, models: Sequence[ServedModel], store: SessionStore, settings: ServeSettings
    ) -> None:
        if not models:
            raise ValueError("serve needs at least one run")
        self.models = {m.name: m for m in models}
        if len(self.models) != len(models):
            raise ValueError("two served runs have the same name")
        self.store = store
        self.settings = settings
        self._live: OrderedDict[str, LiveSession] = OrderedDict()
        self._live_lock = threading.Lock()

    def model(self, name: str | None) -> ServedModel:
        if name is None:
            return next(iter(self.models.values()))
        if name not in self.models:
            raise ClientError(
                404, f"unknown model {name!r}; serving {sorted(self.models)}", "model"
            )
        return self.models[name]

    def chat_session(
        self, served: ServedModel, session_id: str | None = None, turns: Sequence[Turn] = ()
    ) -> ChatSession:
        s = self.settings
        return ChatSession(
            served.model,
            served.task,
            top_k=s.top_k,
            max_message_chars=s.max_message_chars,
            max_history_turns=s.max_history_turns,
            exclude_mentioned=s.exclude_mentioned,
            linker=served.linker,
            facts=served.facts,
            history=turns,
            dialogue_id=session_id,
        )

    def live(self, session_id: str) -> LiveSession:
        """The session from memory, else rebuilt from the store."""
        with self._live_lock:
            if session_id in self._live:
                self._live.move_to_end(session_id)
                return self._live[session_id]
        stored = self.store.get(session_id)
        if stored is None:
            raise ClientError(404, "unknown session", "session_id")
        if stored.model not in self.models:
            raise ClientError(404, f"the session's model {stored.model!r} is not served here")
        served = self.models[stored.model]
        fresh = LiveSession(
            self.chat_session(served, session_id, stored.turns), served, threading.Lock()
        )
        with self._live_lock:
            live = self._live.setdefault(session_id, fresh)
            while len(self._live) > self.settings.live_sessions:
                self._live.popitem(last=False)
        return live

    def forget(self, session_id: str) -> None:
        with self._live_lock:
            self._live.pop(session_id, None)

    def exchange(
        self, live: LiveSession, session_id: str, text: str, on_text: Callable[[str], None] | None
    ) -> ReplyOut:
        """Answer one message, store both turns, then add them to the live session."""
        with live.lock:
            reply = live.chat.answer(text, on_text)
            self.store.append(session_id, reply.turns)
            live.chat.record(reply)
        return ReplyOut(
            session=session_id,
            text=reply.text,
            items=[self.item(live.served, r) for r in reply.items],
            linked=[EntityOut(id=e, label=label) for e, label in reply.linked],
        )

    def item(self, served: ServedModel, item: Recommendation | int) -> ItemOut:
        if isinstance(item, Recommendation):
            entity, score = item.entity, item.score
        else:
            entity, score = item, None
        facts = served.facts.facts(entity)
        return ItemOut(
            id=entity,
            title=served.task.dataset.item_title(entity),
            score=score,
            facts=[FactOut(relation=f.relation, entity=f.entity, label=f.label) for f in facts],
        )

    def recommend(self, served: ServedModel, request: RecommendRequest) -> RecommendOut:
        """Rank for a whole conversation sent by the client; nothing is stored."""
        chat = self.chat_session(served)
        turns = []
        for n, turn in enumerate(request.conversation):
            try:
                turns.append(chat.turn(turn.role, turn.text))
            except ValueError as e:
                raise ClientError(422, str(e), f"conversation.{n}.text") from None
        return RecommendOut(
            model=served.name,
            items=[self.item(served, r) for r in chat.rank(turns, request.top_k)],
            linked=[EntityOut(id=e, label=label) for e, label in chat.linked(turns[-1])],
        )

    @staticmethod
    def _checked(chat: ChatSession, text: str, field: str) -> str:
        try:
            return chat.validate(text)
        except ValueError as e:
            raise ClientError(422, str(e), field) from None


# -- the routes ----------------------------------------------------------------------------


def _error(status: int, error: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(ErrorOut(error=error, field=field).model_dump(), status_code=status)


def _field(location: Sequence[Any]) -> str:
    return ".".join(str(part) for part in location if part != "body") or "body"


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


JSON_BODY = ("POST",)


def create_app(service: Service) -> FastAPI:
    """The FastAPI application of `service` (uvicorn runs it; tests call it directly)."""
    app = FastAPI(
        title="convrec",
        summary="Conversational recommendation with trained convrec runs.",
        version="1",
    )
    app.state.service = service
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorOut} for code in (400, 404, 415, 422)
    }

    @app.exception_handler(ClientError)
    async def client_error(request: Request, e: ClientError) -> JSONResponse:
        return _error(e.status, e.error, e.field)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        if first.get("type") == "json_invalid":
            return _error(400, f"malformed JSON: {first.get('msg', '')}".strip(), "body")
        return _error(422, str(first.get("msg", "invalid request")), _field(first.get("loc", ())))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, "internal error")

    @app.middleware("http")
    async def json_only(request: Request, call_next):
        has_body = request.headers.get("content-length", "0") != "0" or (
            "transfer-encoding" in request.headers
        )
        if request.method in JSON_BODY and has_body:
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return _error(
                    415,
                    f"send JSON (Content-Type: application/json), not {kind or 'nothing'}",
                    "content-type",
                )
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": len(service.models)}

    @app.get("/models")
    async def models() -> list[ModelInfo]:
        return [
            ModelInfo(
                name=m.name,
                model=m.config.model_name,
                dataset=m.config.dataset,
                synthetic=m.task.dataset.synthetic,
                can_rank=True,
                can_respond=m.model.can_respond,
            )
            for m in service.models.values()
        ]

    @app.post("/sessions", status_code=201, responses=errors)
    async def create_session(body: NewSession | None = None) -> dict[str, str]:
        served = service.model(body.model if body else None)
        session_id = await anyio.to_thread.run_sync(service.store.create, served.name)
        return {"id": session_id, "model": served.name}

    @app.get("/sessions/{session_id}", responses=errors)
    async def get_session(session_id: str) -> SessionOut:
        stored = await anyio.to_thread.run_sync(service.store.get, session_id)
        if stored is None or stored.model not in service.models:
            raise ClientError(404, "unknown session", "session_id")
        served = service.models[stored.model]
        return SessionOut(
            id=stored.id,
            model=stored.model,
            turns=[
                TurnOut(role=t.role, text=t.text, items=[service.item(served, i) for i in t.items])
                for t in stored.turns
            ],
        )

    @app.delete("/sessions/{session_id}", status_code=204, responses=errors)
    async def delete_session(session_id: str) -> Response:
        deleted = await anyio.to_thread.run_sync(service.store.delete, session_id)
        service.forget(session_id)
        if not deleted:
            raise ClientError(404, "unknown session", "session_id")
        return Response(status_code=204)

    @app.post(
        "/sessions/{session_id}/messages",
        responses={
            **errors,
            200: {
                "content": {"text/event-stream": {}},
                "description": "The reply; as server-sent events with Accept: text/event-stream",
            },
        },
    )
    async def send_message(session_id: str, message: Message, request: Request) -> ReplyOut:
        live = await anyio.to_thread.run_sync(service.live, session_id)
        text = Service._checked(live.chat, message.text, "text")
        if "text/event-stream" not in request.headers.get("accept", ""):
            return await anyio.to_thread.run_sync(
                service.exchange, live, session_id, text, None, limiter=live.served.limiter
            )
        return StreamingResponse(
            _stream(service, live, session_id, text),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/recommend", responses=errors)
    async def recommend(body: RecommendRequest) -> RecommendOut:
        served = service.model(body.model)
        return await anyio.to_thread.run_sync(
            service.recommend, served, body, limiter=served.limiter
        )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _stream(
    service: Service, live: LiveSession, session_id: str, text: str
) -> AsyncIterator[bytes]:
    """Server-sent events of one exchange (module doc); the turn is stored either way."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str] = asyncio.Queue()

    def on_text(piece: str) -> None:
        loop.call_soon_threadsafe(pieces.put_nowait, piece)

    work = asyncio.ensure_future(
        anyio.to_thread.run_sync(
            service.exchange, live, session_id, text, on_text, limiter=live.served.limiter
        )
    )
    while not work.done() or not pieces.empty():
        getter = asyncio.ensure_future(pieces.get())
        await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            yield _sse("text", {"text": getter.result()})
        else:
            getter.cancel()
    try:
        reply = work.result()
    except ClientError as e:
        yield _sse("error", ErrorOut(error=e.error, field=e.field).model_dump())
    except Exception:
        log.exception("a streamed reply failed (session %s)", session_id)
        yield _sse("error", ErrorOut(error="internal error").model_dump())
    else:
        yield _sse("reply", reply.model_dump())
