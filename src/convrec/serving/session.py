"""One conversation with a trained model: the state behind `convrec chat` (and a service).

A session turns each user message into the sample a model was trained on: the message is
linked to KG entities (`EntityLinker`), appended to the dialogue as a seeker turn, and the
dialogue so far becomes the context of a `ConvSample` whose response is to be produced::

    session = ChatSession(model, task, top_k=3)
    reply = session.send("I love sci-fi, anything like The Silent Harbor?")
    reply.text    # the model's response, or a template naming its top items
    reply.items   # ((entity id, title), ...), best first

A model that can respond (`model.can_respond`) writes the text; others (kbrd, popularity)
only rank the catalogue, so the session phrases their top items with a fixed template.
The recommender turn, with the items shown as its `Turn.items`, joins the history, so the
next message is answered in the light of what was recommended, as in the datasets.

Nothing here prints: the terminal chat and a web service are thin layers over `send`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from convrec.data.linking import EntityLinker
from convrec.data.samples import ConvSample
from convrec.data.schema import Turn
from convrec.data.tasks import RecTask
from convrec.evaluation.ranking import top_k_items
from convrec.models.base import ConvRecModel, move_to

TEMPLATES = ("How about {items}?", "You might like {items}.", "I'd recommend {items}.")


@dataclass(frozen=True)
class ChatReply:
    """The recommender's answer to one message: its text and the items it recommends."""

    text: str
    items: tuple[tuple[int, str], ...] = ()  # (KG entity id, title), best first


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
    keeps every turn either way. `linker` lets many sessions share one linker per dataset.
    Items already mentioned may be recommended again: the models were trained on
    dialogues where that happens, and `repeat` recommends nothing else.
    """

    def __init__(
        self,
        model: ConvRecModel,
        task: RecTask,
        *,
        top_k: int = 3,
        max_message_chars: int = 1000,
        max_history_turns: int | None = None,
        linker: EntityLinker | None = None,
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
        self.linker = linker or EntityLinker.for_dataset(task.dataset)
        self._turns: list[Turn] = []
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
        return f"chat-{self._conversation}"

    def reset(self) -> None:
        """Start a new conversation: the history and its entities are forgotten."""
        self._turns.clear()
        self._conversation += 1

    # -- a turn --------------------------------------------------------------------------

    def send(self, text: str) -> ChatReply:
        """Answer one user message; on an error the session is left as it was."""
        text = self._validate(text)
        linked = self.linker.link(text)
        seeker = Turn("seeker", text, linked.items, linked.entities, linked.mentions)
        sample = self.sample((*self._turns, seeker))

        if self.model.can_respond:
            reply = self.model.respond([sample])[0]
            items = tuple(reply.items) or self.recommend(sample)
            answer = reply.text
        else:
            items = self.recommend(sample)
            template = TEMPLATES[(len(self._turns) // 2) % len(TEMPLATES)]
            answer = template.format(items=join_titles([self.title(i) for i in items]))

        said = self.linker.link(answer)
        shown = set(items)
        recommender = Turn(
            "recommender",
            answer,
            items,
            said.entities,
            tuple(m for m in said.mentions if m.item in shown),
        )
        self._turns += [seeker, recommender]
        return ChatReply(answer, tuple((i, self.title(i)) for i in items))

    def _validate(self, text: str) -> str:
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

    def recommend(self, sample: ConvSample) -> tuple[int, ...]:
        """The model's top_k catalogue items for the sample's context, as KG entity ids."""
        with torch.no_grad():
            scores = self.model.recommend(move_to(self.model.collate([sample]), self.model.device))
        top = top_k_items(scores, self.top_k)[0].cpu().numpy()
        return tuple(int(e) for e in self.task.kg.items[top])

    def title(self, entity_id: int) -> str:
        return self.task.dataset.item_title(entity_id)
