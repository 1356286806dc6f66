"""KP4SR's text templates: masked personalised prompts (MPP) and relation templates.

An MPP turns (user, history) into a cloze sentence whose masked slot is the next item::

    User_23 has watched 12 , 57 , 301 and will watch <extra_id_0> next .

A relation template turns a KG triple into a sentence, "[X] is directed by [Y] .".

Both render to *segments* rather than one string, so that the knowledge tree
(`convrec.graph.knowledge_tree`) can tokenise each segment on its own and know exactly which
tokens spell which history item, with no offset mapping. Every segment but the first of a
sentence starts with its separating space, and words are separated by single spaces
(punctuation too: "12 , 57"). Byte-level BPE (GPT-2; checked in the tests) and SentencePiece's
Metaspace pre-tokenizer (T5) both split at spaces, so tokenising segment by segment gives the
same ids as tokenising the whole sentence.

Entity text. An item is written as its identifier string, the dataset's item token ("12"),
both in the MPP and in triples, so that a triple about an item and the item's mention in the
MPP share tokens (and match the decoder's target text). A Freebase entity that is not an item
has no name in the RecBole / KB4Rec files, so it is written as a token derived from its KG
entity id, "e" + id ("e1195"; `naming="id"`, the default), or as its Freebase mid as given in
`.kg` ("m.0bxtg"; `naming="mid"`). Both are stable: entity ids are positions in the KG's
sorted names, so the same files always give the same ids (and a run records its data
fingerprint); the mid is the same in every KG cut from Freebase. The id form is the default
because the input budget decides how much of the tree survives: on MovieLens-100k with 5
history items, degree 8 and GPT-2 BPE, a mid costs about 6 tokens and an id about 3, and
within 512 tokens the id form keeps all level-1 sentences and ~15 of ~20 level-2 ones, the mid
form ~1.9 level-2 ones (hop 2 would all but vanish). The "e" prefix keeps an entity from
reading as a numeric item identifier. A mid stays the choice for text that must mean the same
entity across KG versions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from convrec.data.kg import KnowledgeGraph

MASK_TOKEN = "<extra_id_0>"  # T5's first sentinel: the masked slot of an MPP
USER_PREFIX = "User_"
HEAD_SLOT = "[X]"
TAIL_SLOT = "[Y]"
EntityNaming = Literal["mid", "id"]
ItemNaming = Literal["id", "title"]


def user_text(user: str) -> str:
    """How a user is named in an MPP: "User_23" for user token "23"."""
    return f"{USER_PREFIX}{user}"


# -- masked personalised prompts ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of prompt text, or one history item's identifier (`item` = history position)."""

    text: str
    item: int = -1

    @property
    def is_item(self) -> bool:
        return self.item >= 0


@dataclass(frozen=True)
class RenderedPrompt:
    """An MPP as segments; `text` is their concatenation."""

    segments: tuple[Segment, ...]

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments)

    @property
    def num_items(self) -> int:
        return sum(segment.is_item for segment in self.segments)

    def item_spans(self) -> list[tuple[int, int, int]]:
        """(history position, start, end) of each item identifier in `text` (no leading space)."""
        spans = []
        offset = 0
        for segment in self.segments:
            end = offset + len(segment.text)
            if segment.is_item:
                start = end - len(segment.text.lstrip(" "))
                spans.append((segment.item, start, end))
            offset = end
        return spans


_PLACEHOLDERS = ("{user}", "{history}", "{mask}")


@dataclass(frozen=True)
class PromptTemplate:
    """A cloze template: space-separated words with {user}, {history} and {mask} as words.

    {history} expands to the items joined by " , "; {mask} is the masked next item.
    """

    name: str
    pattern: str

    def __post_init__(self) -> None:
        words = self.pattern.split()
        for word in words:
            if "{" in word and word not in _PLACEHOLDERS:
                raise ValueError(
                    f"template {self.name!r}: {word!r} is not one of {_PLACEHOLDERS} "
                    "(placeholders must be whole words)"
                )
        for placeholder in ("{history}", "{mask}"):
            if words.count(placeholder) != 1:
                raise ValueError(f"template {self.name!r} needs exactly one {placeholder}")

    def render(self, user: str, items: Sequence[str], mask: str = MASK_TOKEN) -> RenderedPrompt:
        """The MPP for `user` (its text, see `user_text`) and history identifiers, oldest first."""
        if not len(items):
            raise ValueError("an MPP needs at least one history item")
        words: list[tuple[str, int]] = []  # (word, history position or -1)
        for word in self.pattern.split():
            if word == "{history}":
                for k, item in enumerate(items):
                    if k:
                        words.append((",", -1))
                    words.append((item, k))
            else:
                words.append((user if word == "{user}" else mask if word == "{mask}" else word, -1))
        segments: list[Segment] = []
        for i, (word, item) in enumerate(words):
            text = word if i == 0 else " " + word
            if item < 0 and segments and not segments[-1].is_item:
                segments[-1] = Segment(segments[-1].text + text)  # merge runs of prompt text
            else:
                segments.append(Segment(text, item))
        return RenderedPrompt(tuple(segments))


# Paraphrases sampled in training; the test template is never seen in training, so test
# scores do not reward memorising one wording.
TRAIN_TEMPLATES: tuple[PromptTemplate, ...] = (
    PromptTemplate("watched", "{user} has watched {history} and will watch {mask} next ."),
    PromptTemplate("history", "Given the history {history} , {user} will choose {mask} next ."),
    PromptTemplate("sequence", "{user} chose {history} in this order ; the next one is {mask} ."),
    PromptTemplate("after", "After {history} , {user} picks {mask} ."),
    PromptTemplate("items", "The items of {user} so far are {history} and the next is {mask} ."),
)
TEST_TEMPLATE = PromptTemplate(
    "test", "{user} interacted with {history} ; predict the next item : {mask} ."
)


def mpp_template(rng: np.random.Generator | None = None) -> PromptTemplate:
    """A random training template with `rng`, the held-out test template without."""
    if rng is None:
        return TEST_TEMPLATE
    return TRAIN_TEMPLATES[int(rng.integers(len(TRAIN_TEMPLATES)))]


# -- relation templates ------------------------------------------------------------------


@dataclass(frozen=True)
class RelationTemplate:
    """A triple as a sentence: space-separated words with [X] (head) and [Y] (tail) as words."""

    pattern: str

    def __post_init__(self) -> None:
        words = self.pattern.split()
        if words.count(HEAD_SLOT) != 1 or words.count(TAIL_SLOT) != 1:
            raise ValueError(f"relation template {self.pattern!r} needs one [X] and one [Y]")

    def render(self, head: str, tail: str) -> str:
        """The sentence, starting with its separating space like every non-initial segment."""
        words = self.pattern.split()
        return "".join(
            " " + (head if w == HEAD_SLOT else tail if w == TAIL_SLOT else w) for w in words
        )

    def pieces(self) -> tuple[str, ...]:
        """Literal runs (each with its leading space) and the bare slots "[X]" / "[Y]".

        The tree tokenises each literal run once per relation and each entity once, and
        concatenates the ids.
        """
        pieces: list[str] = []
        for word in self.pattern.split():
            if word in (HEAD_SLOT, TAIL_SLOT):
                pieces.append(word)
            elif pieces and pieces[-1] not in (HEAD_SLOT, TAIL_SLOT):
                pieces[-1] += " " + word
            else:
                pieces.append(" " + word)
        return tuple(pieces)


# The relations of the KB4Rec Freebase KG of MovieLens (all 24 in ml-100k.kg). Freebase
# names read `domain.type.property`: the head has type `type` and `property` points to the
# tail, so `film.director.film` is (director, film) and `film.film.directed_by` its inverse.
RELATION_TEMPLATES: Mapping[str, str] = {
    "film.actor.film": "[X] acted in [Y] .",
    "film.cinematographer.film": "[X] was the cinematographer of [Y] .",
    "film.content_rating.film": "[X] is the content rating of [Y] .",
    "film.director.film": "[X] directed [Y] .",
    "film.film.actor": "[X] stars [Y] .",
    "film.film.award_nomination": "[X] was nominated for [Y] .",
    "film.film.award_won": "[X] won [Y] .",
    "film.film.cinematography": "[X] was shot by the cinematographer [Y] .",
    "film.film.country": "[X] is a film from [Y] .",
    "film.film.directed_by": "[X] is directed by [Y] .",
    "film.film.genre": "[X] belongs to the genre [Y] .",
    "film.film.language": "[X] is in the language [Y] .",
    "film.film.prequel": "[X] has the prequel [Y] .",
    "film.film.produced_by": "[X] is produced by [Y] .",
    "film.film.production_companies": "[X] is made by the production company [Y] .",
    "film.film.rating": "[X] is rated [Y] .",
    "film.film.sequel": "[X] has the sequel [Y] .",
    "film.film.subjects": "[X] is about [Y] .",
    "film.film.written_by": "[X] is written by [Y] .",
    "film.film_genre.films_in_this_genre": "[X] is the genre of [Y] .",
    "film.film_subject.films": "[X] is the subject of [Y] .",
    "film.producer.film": "[X] produced [Y] .",
    "film.production_company.films": "[X] is the production company of [Y] .",
    "film.writer.film": "[X] wrote [Y] .",
}


def fallback_template(relation: str) -> RelationTemplate:
    """ "[X] has <relation words> [Y] .", the words from the relation name's last part.

    "music.artist.genre" -> "[X] has genre [Y] .", "<http://x.org/starring>" -> "has starring".
    """
    last = re.split(r"[./#:]", relation.strip("<>").rstrip("/"))[-1]
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", last).replace("_", " ").replace("-", " ")
    words = " ".join(words.lower().split()) or "relation"
    return RelationTemplate(f"{HEAD_SLOT} has {words} {TAIL_SLOT} .")


def relation_template(
    relation: str, templates: Mapping[str, str] = RELATION_TEMPLATES
) -> RelationTemplate:
    """The written template of `relation`, else the generic fallback."""
    pattern = templates.get(relation)
    return RelationTemplate(pattern) if pattern is not None else fallback_template(relation)


def entity_texts(
    kg: KnowledgeGraph,
    item_texts: Sequence[str],
    item_entity: np.ndarray,
    naming: EntityNaming = "id",
) -> list[str]:
    """Text of every KG entity: its item's identifier when linked, else per `naming`.

    `item_texts[i]` and `item_entity[i]` (-1 when unlinked) describe dataset item i, as in
    `SequentialDataset.items` / `.item_entity`. See the module doc for the choice of names.
    """
    if naming == "mid":
        texts = list(kg.entities)
    elif naming == "id":
        texts = [f"e{i}" for i in range(kg.num_entities)]
    else:
        raise ValueError(f"naming must be 'mid' or 'id', not {naming!r}")
    item_entity = np.asarray(item_entity, dtype=np.int64)
    if len(item_entity) != len(item_texts):
        raise ValueError("item_texts and item_entity must describe the same items")
    for item in np.flatnonzero(item_entity >= 0).tolist():
        texts[int(item_entity[item])] = item_texts[item]
    return texts


__all__ = [
    "MASK_TOKEN",
    "RELATION_TEMPLATES",
    "TEST_TEMPLATE",
    "TRAIN_TEMPLATES",
    "EntityNaming",
    "ItemNaming",
    "PromptTemplate",
    "RelationTemplate",
    "RenderedPrompt",
    "Segment",
    "entity_texts",
    "fallback_template",
    "mpp_template",
    "relation_template",
    "user_text",
]
