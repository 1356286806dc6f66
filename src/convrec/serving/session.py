"""One conversation with a trained model: the state behind `convrec chat` and `convrec serve`.

A session turns each user message into the sample a model was trained on: the message is
linked to KG entities (`EntityLinker`), appended to the dialogue as a seeker turn, and the
dialogue so far becomes the context of a `ConvSample` whose response is to be produced::

    session = ChatSession(model, task, top_k=3)
    reply = session.send("I love sci-fi, anything like The Silent Harbor?")
    reply.text    # the model's response, or a template naming its top items
    reply.items   # (Recommendation(entity id, title, score), ...), best first

A model that can respond (`model.can_respond`) writes the text; others (kbrd, popularity)
only rank the catalogue, so the session phrases their top items with varying templates
and, where the KG allows, says what the first item shares with the conversation.
The recommender turn, with the items shown as its `Turn.items`, joins the history, so the
next message is answered in the light of what was recommended, as in the datasets.
Items the conversation already named are not recommended again (`exclude_mentioned`,
on by default: nobody wants "I love Inception" answered with Inception); the evaluation
protocols, which score what the datasets' recommenders said, do not use a session.

`send` is `answer` (the model's reply, nothing changed) followed by `record` (the two
turns join the history): a service stores the turns between the two, so a reply is only
ever sent once it is saved. Nothing here prints: the terminal chat and the web service
are thin layers over these calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from convrec.data.linking import EntityLinker
from convrec.data.samples import ConvSample
from convrec.data.schema import Role, Turn
from convrec.data.tasks import RecTask
from convrec.evaluation.ranking import top_k_items
from convrec.models.base import ConvRecModel, move_to
from convrec.serving.facts import ItemFacts

TEMPLATES = (
    "How about {items}?",
    "You might like {items}.",
    "I'd recommend {items}.",
    "Have you seen {items}?",
    "Maybe {items} would suit you.",
)


class Recommendation(NamedTuple):
    entity: int  # KG entity id of the catalogue item
    title: str
    score: float  # the model's score (comparable within one reply)


@dataclass(frozen=True)
class ChatReply:
    """The recommender's answer to one message: its text and the items it recommends."""

    text: str
    items: tuple[Recommendation, ...] = ()  # best first
    linked: tuple[tuple[int, str], ...] = ()  # (entity id, label) the message named
    # The seeker and recommender turns this exchange adds to the history (`record`).
    turns: tuple[Turn, ...] = field(default=(), compare=False, repr=False)


def context_entities(turns: Sequence[Turn]) -> tuple[int, ...]:
    """Entities and items of `turns`, first mention first (as `build_rec_samples` orders
    them), so a model sees a live context exactly as it saw its training contexts."""
    seen: dict[int, None] = {}
    for turn in turns:
        for entity in (*turn.entities, *turn.items):
            seen.setdefault(entity, None)
    return tuple(seen)


def join_titles(titles: Sequence[str]) -> str:
    """ "A", "A or B", "A, B or C"."""
    if len(titles) <= 1:
        return "".join(titles)
    return f"{', '.join(titles[:-1])} or {titles[-1]}"


class ChatSession:
    """The state of one conversation with a trained model (see module doc).

    `model` should be in eval mode (as `load_run` returns it). `max_history_turns` keeps
    only the latest turns in the model's context (None: all); the session's `history`
    keeps every turn either way. `linker` and `facts` let many sessions share one of each
    per dataset; `history` continues a stored conversation, `dialogue_id` names it.
    """

    def __init__(
        self,
        model: ConvRecModel,
        task: RecTask,
        *,
        top_k: int = 3,
        max_message_chars: int = 1000,
        max_history_turns: int | None = None,
        exclude_mentioned: bool = True,
        linker: EntityLinker | None = None,
        facts: ItemFacts | None = None,
        history: Sequence[Turn] = (),
        dialogue_id: str | None = None,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}")
        if max_message_chars < 1:
            raise ValueError(f"max_message_chars must be at least 1, not {max_message_chars}")
        if max_history_turns is not None and max_history_turns < 1:
            raise ValueError(f"max_history_turns must be at least 1, not {max_history_turns}")
        self.model = model
        self.task = task
        self.top_k = min(top_k, task.num_items)
        self.max_message_chars = max_message_chars
        self.max_history_turns = max_history_turns
        self.exclude_mentioned = exclude_mentioned
        self.linker = linker or EntityLinker.for_dataset(task.dataset)
        self.facts = facts or ItemFacts(task.dataset)
        self._turns: list[Turn] = list(history)
        self._name = dialogue_id
        self._conversation = 0  # numbers the dialogue ids of successive conversations

    # -- state ---------------------------------------------------------------------------

    @property
    def history(self) -> tuple[Turn, ...]:
        """Every turn of the conversation so far, seeker and recommender."""
        return tuple(self._turns)

    @property
    def context_entities(self) -> tuple[int, ...]:
        """Entities and items mentioned so far, first mention first."""
        return context_entities(self._turns)

    @property
    def dialogue_id(self) -> str:
        if self._name is not None and self._conversation == 0:
            return self._name
        return f"{self._name or 'chat'}-{self._conversation}"

    def reset(self) -> None:
        """Start a new conversation: the history and its entities are forgotten."""
        self._turns.clear()
        self._conversation += 1

    # -- a turn --------------------------------------------------------------------------

    def send(self, text: str, on_text: Callable[[str], None] | None = None) -> ChatReply:
        """Answer one user message and keep the exchange; on an error nothing changes."""
        reply = self.answer(text, on_text)
        self.record(reply)
        return reply

    def answer(self, text: str, on_text: Callable[[str], None] | None = None) -> ChatReply:
        """The reply to one user message; the history is not changed (see `record`).

        `on_text` receives the reply text as it is produced: piece by piece from a model
        that generates, in one piece from a template.
        """
        seeker = self.turn("seeker", text)
        turns = (*self._turns, seeker)
        sample = self.sample(turns)
        mentioned = set(context_entities(turns))
        exclude = mentioned if self.exclude_mentioned else set()
        scores = self.scores(sample)
        allowed = self.without(scores, exclude)

        if self.model.can_respond:
            reply = self.model.respond([sample], exclude=[exclude], on_text=on_text)[0]
            items = tuple(reply.items) or self.top_items(allowed)
            answer = reply.text
        else:
            items = self.top_items(allowed)
            answer = self.template_reply(items, mentioned, len(self._turns) // 2)
            if on_text is not None:
                on_text(answer)

        said = self.linker.link(answer)
        shown = set(items)
        recommender = Turn(
            "recommender",
            answer,
            items,
            said.entities,
            tuple(m for m in said.mentions if m.item in shown),
        )
        return ChatReply(
            answer,
            self._recommendations(items, scores),
            self.linked(seeker),
            turns=(seeker, recommender),
        )

    def turn(self, role: Role, text: str) -> Turn:
        """A turn as the session sees it: validated text and the entities it names."""
        text = self.validate(text)
        linked = self.linker.link(text)
        return Turn(role, text, linked.items, linked.entities, linked.mentions)

    def linked(self, turn: Turn) -> tuple[tuple[int, str], ...]:
        """(entity id, label) of what `turn` names, items first."""
        return tuple((e, self.facts.label(e)) for e in (*turn.items, *turn.entities))

    def rank(self, turns: Sequence[Turn], top_k: int | None = None) -> tuple[Recommendation, ...]:
        """The top items for the next recommender turn after `turns` (a conversation kept
        elsewhere), ranked and filtered as `answer` does; the session is not changed."""
        exclude = set(context_entities(turns)) if self.exclude_mentioned else set()
        scores = self.scores(self.sample(turns))
        return self._recommendations(self.top_items(self.without(scores, exclude), top_k), scores)

    def _recommendations(
        self, items: Sequence[int], scores: torch.Tensor
    ) -> tuple[Recommendation, ...]:
        index = self.task.kg.item_index
        return tuple(Recommendation(i, self.title(i), float(scores[index[i]])) for i in items)

    def record(self, reply: ChatReply) -> None:
        """Add the exchange of `reply` (from `answer` on the current history) to it."""
        self._turns += reply.turns

    def template_reply(self, items: Sequence[int], mentioned: set[int], exchange: int) -> str:
        """A ranking-only model's reply: its items, and why the first one where the KG
        links it to what the conversation named."""
        if not items:
            return "I have nothing new to recommend: we have talked about all I know."
        template = TEMPLATES[exchange % len(TEMPLATES)]
        text = template.format(items=join_titles([self.title(i) for i in items]))
        reason = self.facts.reason(items[0], mentioned)
        return f"{text} {reason}" if reason else text

    def validate(self, text: str) -> str:
        """The message as the model gets it (stripped); ValueError when empty or too long."""
        text = text.strip()
        if not text:
            raise ValueError("empty message")
        if len(text) > self.max_message_chars:
            raise ValueError(
                f"message too long: {len(text)} characters, the limit is {self.max_message_chars}"
            )
        return text

    def sample(self, turns: Sequence[Turn]) -> ConvSample:
        """The model's input for the next recommender turn after `turns`."""
        index = len(turns)
        if self.max_history_turns is not None:
            turns = turns[-self.max_history_turns :]
        turns = tuple(turns)
        return ConvSample(
            dialogue_id=self.dialogue_id,
            turn_index=index,
            role="recommender",
            context_turns=turns,
            context_entities=context_entities(turns),
            response="",
            response_items=(),
        )

    def scores(self, sample: ConvSample) -> torch.Tensor:
        """The model's catalogue scores [num_items] for the sample's context."""
        with torch.no_grad():
            batch = move_to(self.model.collate([sample]), self.model.device)
            return self.model.recommend(batch)[0].float().cpu()

    def without(self, scores: torch.Tensor, exclude: set[int]) -> torch.Tensor:
        """`scores` with the items in `exclude` (KG entity ids) at -inf."""
        return self.model.without_items(scores[None], [exclude])[0]

    def top_items(self, scores: torch.Tensor, top_k: int | None = None) -> tuple[int, ...]:
        """The top_k catalogue items of `scores` as KG entity ids, excluded ones left out."""
        top = top_k_items(scores[None], min(top_k or self.top_k, self.task.num_items))[0]
        top = top[torch.isfinite(scores[top])]
        return tuple(int(e) for e in self.task.kg.items[top.numpy()])

    def title(self, entity_id: int) -> str:
        return self.task.dataset.item_title(entity_id)
