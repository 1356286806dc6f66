"""Sample builders: dialogues -> recommendation and conversation samples.

One function per task, with the protocol options that every report states
(specs/evaluation.md). Samples reference the dataset's `Turn` objects; nothing is copied.

    RecSample
      dialogue_id, turn_index        where the target was mentioned
      context_turns: (Turn, ...)     all turns before `turn_index` (prompt pre-training as
                                     UniCRS released it: up to and including it)
      context_entities: (int, ...)   entities and items of the turns before `turn_index`,
                                     first mention first
      target_item: int               KG entity id of one catalogue item of that turn (prompt
                                     pre-training: also one of its other entities)

    ConvSample
      dialogue_id, turn_index, role
      context_turns, context_entities   as above
      response: str                  the turn's text, item mentions rendered per `item_mode`
      response_items: (int, ...)     the catalogue items the turn mentions
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from convrec.data.kg import KnowledgeGraph
from convrec.data.schema import Dialogue, Role, Turn

TurnSelection = Literal["recommender", "all"]
PretrainTargets = Literal["items", "items_and_entities"]
ItemMode = Literal["slot", "item_token", "text"]
SLOT_TOKEN = "<movie>"


@dataclass(frozen=True, slots=True)
class RecSample:
    dialogue_id: str
    turn_index: int
    context_turns: tuple[Turn, ...]
    context_entities: tuple[int, ...]
    target_item: int

    @property
    def target_is_new(self) -> bool:
        """The context does not name the target: the samples the strict protocol keeps."""
        return self.target_item not in self.context_entities


@dataclass(frozen=True, slots=True)
class ConvSample:
    dialogue_id: str
    turn_index: int
    role: Role
    context_turns: tuple[Turn, ...]
    context_entities: tuple[int, ...]
    response: str
    response_items: tuple[int, ...]


def item_token(catalogue_index: int) -> str:
    """The one-token-per-item form of an item (by catalogue position, not entity id)."""
    return f"<item_{catalogue_index}>"


def _contexts(dialogue: Dialogue) -> Iterator[tuple[int, Turn, tuple[int, ...]]]:
    """(index, turn, entities of all earlier turns) for every turn after the first."""
    seen: dict[int, None] = {}  # insertion-ordered set: first mention first
    for index, turn in enumerate(dialogue.turns):
        if index > 0:
            yield index, turn, tuple(seen)
        for entity in (*turn.entities, *turn.items):
            seen.setdefault(entity, None)


def build_rec_samples(
    dialogues: Iterable[Dialogue],
    *,
    turns: TurnSelection = "recommender",
    new_items_only: bool = False,
) -> list[RecSample]:
    """One sample per catalogue item mentioned in a selected turn with a non-empty context.

    turns: "recommender" (CRSLab, KBRD, KGSF, UniCRS/MSCRS/STEP recommendation) or "all"
    (every turn of either role; prompt pre-training has its own builder,
    `build_pretrain_samples`). new_items_only: drop targets already mentioned in the
    context (the strict protocol; Kostric & Balog's re-evaluation).
    """
    if turns not in ("recommender", "all"):
        raise ValueError(f"turns must be 'recommender' or 'all', not {turns!r}")
    samples = []
    for dialogue in dialogues:
        for index, turn, context_entities in _contexts(dialogue):
            if turns == "recommender" and turn.role != "recommender":
                continue
            for item in turn.items:
                sample = RecSample(
                    dialogue_id=dialogue.id,
                    turn_index=index,
                    context_turns=dialogue.turns[:index],
                    context_entities=context_entities,
                    target_item=item,
                )
                if sample.target_is_new or not new_items_only:
                    samples.append(sample)
    return samples


def build_pretrain_samples(
    dialogues: Iterable[Dialogue],
    *,
    with_response: bool = True,
    targets: PretrainTargets = "items_and_entities",
) -> list[RecSample]:
    """Prompt pre-training samples (UniCRS): one per entity a turn of either role mentions.

    As UniCRS released it (`with_response`, "items_and_entities"), the context runs up to
    and including the turn, and the targets are its movies and its other KG entities, so
    the prompt learns to tie what a text says to the entities it names; the context
    entities stay those of the earlier turns. `with_response=False, targets="items"` is the
    paper's description: the context before the turn, its items only.
    """
    if targets not in ("items", "items_and_entities"):
        raise ValueError(f"targets must be 'items' or 'items_and_entities', not {targets!r}")
    samples = []
    for dialogue in dialogues:
        for index, turn, context_entities in _contexts(dialogue):
            wanted = turn.items if targets == "items" else (*turn.items, *turn.entities)
            context = dialogue.turns[: index + 1] if with_response else dialogue.turns[:index]
            samples.extend(
                RecSample(
                    dialogue_id=dialogue.id,
                    turn_index=index,
                    context_turns=context,
                    context_entities=context_entities,
                    target_item=entity,
                )
                for entity in dict.fromkeys(wanted)
            )
    return samples


def render_response(turn: Turn, item_mode: ItemMode, kg: KnowledgeGraph | None = None) -> str:
    """The turn's text with located item mentions as `<movie>`, as item tokens, or as is."""
    if item_mode == "text" or not turn.mentions:
        return turn.text
    if item_mode == "item_token" and kg is None:
        raise ValueError("item_mode='item_token' needs the knowledge graph (catalogue positions)")
    pieces, last = [], 0
    for mention in turn.mentions:
        pieces.append(turn.text[last : mention.start])
        if item_mode == "slot":
            pieces.append(SLOT_TOKEN)
        else:
            assert kg is not None
            pieces.append(item_token(int(kg.item_index[mention.item])))
        last = mention.end
    pieces.append(turn.text[last:])
    return "".join(pieces)


def build_conv_samples(
    dialogues: Iterable[Dialogue],
    *,
    turns: TurnSelection = "recommender",
    item_mode: ItemMode = "slot",
    kg: KnowledgeGraph | None = None,
) -> list[ConvSample]:
    """One sample per selected turn with a non-empty context; the turn is the response.

    item_mode: "slot" replaces item mentions with `<movie>` (UniCRS, STEP, MSCRS: a
    recommender fills the slot), "item_token" with `<item_k>` (ConKD-style unified
    models, needs `kg`), "text" keeps the titles.
    """
    if turns not in ("recommender", "all"):
        raise ValueError(f"turns must be 'recommender' or 'all', not {turns!r}")
    if item_mode not in ("slot", "item_token", "text"):
        raise ValueError(f"item_mode must be 'slot', 'item_token' or 'text', not {item_mode!r}")
    samples = []
    for dialogue in dialogues:
        for index, turn, context_entities in _contexts(dialogue):
            if turns == "recommender" and turn.role != "recommender":
                continue
            samples.append(
                ConvSample(
                    dialogue_id=dialogue.id,
                    turn_index=index,
                    role=turn.role,
                    context_turns=dialogue.turns[:index],
                    context_entities=context_entities,
                    response=render_response(turn, item_mode, kg),
                    response_items=turn.items,
                )
            )
    return samples
