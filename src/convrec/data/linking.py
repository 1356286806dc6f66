"""Entity linking for live text: which KG entities and catalogue items a message names.

Datasets come with their turns already linked; a live chat does not, and a knowledge-aware
recommender sees nothing of a message it cannot link. `EntityLinker` is a dictionary
matcher, built once per dataset and cheap per message (no pass over the entities)::

    EntityLinker(kg, item_titles).link("I loved the silent harbor!")
    -> Linked(items=(412,), entities=(), mentions=(Mention(412, 8, 25),))

Names and their normalisation:

- A name is normalised by splitting it into words (runs of letters and digits, with inner
  apostrophes kept in the word: "Bo's" is one word), dropping apostrophes and accents,
  casefolding, and joining the words with one space: "Bo's  Carnival!" -> "bos carnival".
  Other punctuation separates words, so "Sci-Fi" -> "sci fi"; a name with a hyphen also
  gets its joined form ("scifi").
- Full names: the item titles ("The Silent Harbor (1994)") and the KG labels
  (`kg.label`, with a lowercase namespace prefix such as the demo world's "genre:"
  removed). `entity_names` replaces the labels: only the entities it names are linked by
  name (a dataset reader uses it to link non-item entities only, named its own way).
  Aliases: titles without a trailing year ("The Silent Harbor") and labels
  without a trailing parenthesis ("Hanna (film)" -> "Hanna"), since people type neither.
- Skipped, because they would fire on ordinary words: names shorter than 3 characters
  (spaces not counted) and names made only of stop words (`STOP_WORDS`: English function
  words and words every movie chat uses, such as "movie" or "genre").
- Conflicts: a full name beats an alias; among entities with the same name, a catalogue
  item beats other entities; a name still shared by several entities is ambiguous and
  left out (`EntityLinker.ambiguous` counts them) rather than guessed.

Matching: every run of up to `max_words` consecutive words of the message is looked up;
the longest matches are claimed first and a claimed word cannot be reused, so "The Silent
Harbor 2" links the sequel, not the original followed by a stray "2". Results come in order
of appearance, each entity once (`matches` gives every occurrence). Only the lengths of
the names that start with a word are tried from it, so most words cost one lookup.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from convrec.data.kg import KnowledgeGraph
from convrec.data.schema import ConversationDataset, Mention

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
NAMESPACE = re.compile(r"^[a-z][a-z0-9_]*:(?=\S)")  # "genre:drama"; not "Alien: Covenant"
TRAILING_YEAR = re.compile(r"\s*\(\s*\d{4}\s*\)\s*$")
TRAILING_PARENTHESIS = re.compile(r"\s*\([^()]*\)\s*$")
MIN_NAME_CHARS = 3

_STOP_WORDS = """
a about above after again all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers him his how i if in into is it its just me more most my
no nor not now of off on once only or other our out over own same she should so some such
than that the their them then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your yours
yes ok okay hi hello hey thanks thank please maybe really like love liked loved want good
great best nice fun watch watched watching see seen movie movies film films show shows
genre genres favorite favourite something anything one lol haha yeah yep cool sure wow
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())


@dataclass(frozen=True, slots=True)
class Linked:
    """What a message names: catalogue items and other entities, each once, in order of
    appearance; `mentions` locate the items in the text (`Turn.mentions`)."""

    items: tuple[int, ...] = ()
    entities: tuple[int, ...] = ()
    mentions: tuple[Mention, ...] = ()


def _words(text: str) -> Iterator[tuple[str, int, int]]:
    """(normalised word, start, end) for every word of `text`; offsets index `text`."""
    for match in WORD.finditer(text):
        word = match.group()
        if word.isascii():  # NFKD leaves ASCII as it is: the same result, faster
            word = word.replace("'", "")
        else:
            decomposed = unicodedata.normalize("NFKD", word)
            word = "".join(c for c in decomposed if not unicodedata.combining(c) and c not in "'’")
        yield word.casefold(), match.start(), match.end()


def normalise(name: str) -> str:
    """The form names and messages are compared in (see module doc)."""
    return " ".join(word for word, _, _ in _words(name))


def _variants(name: str) -> set[str]:
    """The normalised name and, when it has hyphens, its joined form."""
    if "-" not in name:
        return {normalise(name)}
    return {normalise(name), normalise(re.sub(r"(?<=\w)-(?=\w)", "", name))}


def _usable(name: str) -> bool:
    words = name.split()
    return (
        len(name) - name.count(" ") >= MIN_NAME_CHARS
        and bool(words)
        and not all(w in STOP_WORDS for w in words)
    )


class EntityLinker:
    """Finds KG entities and catalogue items named in free text (see module doc)."""

    def __init__(
        self,
        kg: KnowledgeGraph,
        item_titles: Mapping[int, str],
        entity_names: Mapping[int, str] | None = None,
    ) -> None:
        """`item_titles` name catalogue items; `entity_names` ({entity id: name}) names the
        KG entities linked by name, by default every entity by its `kg.label`."""
        self._is_item = kg.item_index >= 0
        full: dict[str, set[int]] = defaultdict(set)
        alias: dict[str, set[int]] = defaultdict(set)
        for entity, title in item_titles.items():
            self._add(full, alias, title, TRAILING_YEAR.sub("", title), entity)
        if entity_names is None:
            entity_names = {entity: kg.label(entity) for entity in range(kg.num_entities)}
        for entity, name in entity_names.items():
            label = NAMESPACE.sub("", name)
            self._add(full, alias, label, TRAILING_PARENTHESIS.sub("", label), entity)

        self.names: dict[str, int] = {}
        self.ambiguous = 0
        for name in sorted(full.keys() | alias.keys()):
            candidates = full.get(name) or alias[name]
            items = {e for e in candidates if self._is_item[e]}
            chosen = items or candidates
            if len(chosen) == 1:
                self.names[name] = next(iter(chosen))
            else:
                self.ambiguous += 1
        self.max_words = max((len(name.split()) for name in self.names), default=0)
        # first word -> the numbers of words of the names starting with it, longest first
        lengths: dict[str, set[int]] = defaultdict(set)
        for name in self.names:
            words = name.split()
            lengths[words[0]].add(len(words))
        self._lengths = {word: sorted(n, reverse=True) for word, n in lengths.items()}

    @staticmethod
    def _add(
        full: dict[str, set[int]], alias: dict[str, set[int]], name: str, short: str, entity: int
    ) -> None:
        """Enter `name` as a full name of `entity` and `short` as an alias of it."""
        names = _variants(name)
        for variant in names:
            if _usable(variant):
                full[variant].add(entity)
        if short != name:  # an alias equal to the full name would never be consulted
            for variant in _variants(short):
                if _usable(variant):
                    alias[variant].add(entity)

    @classmethod
    def for_dataset(cls, dataset: ConversationDataset) -> EntityLinker:
        """The linker of a dataset (its KG and item titles)."""
        return cls(dataset.kg, dataset.item_titles)

    def link(self, text: str) -> Linked:
        """The items and entities `text` names (see module doc for the matching rule)."""
        words = list(_words(text))
        return self._linked(words, self._kept(words))

    def matches(self, text: str) -> list[tuple[int, int, int]]:
        """Every name found in `text` as (entity or item, start, end), in order of
        appearance, repeats included; `text[start:end]` is the name as written."""
        words = list(_words(text))
        return [
            (entity, words[start][1], words[start + length - 1][2])
            for start, length, entity in self._kept(words)
        ]

    def _kept(self, words: list[tuple[str, int, int]]) -> list[tuple[int, int, int]]:
        """(first word, number of words, entity) of the names kept, in order of appearance."""
        found = []  # (number of words, first word, entity)
        for start, (first, _, _) in enumerate(words):
            for length in self._lengths.get(first, ()):
                if length > len(words) - start:
                    continue
                key = " ".join(w for w, _, _ in words[start : start + length])
                entity = self.names.get(key)
                if entity is not None:
                    found.append((length, start, entity))
        claimed = [False] * len(words)
        kept = []
        for length, start, entity in sorted(found, key=lambda f: (-f[0], f[1])):
            if not any(claimed[start : start + length]):
                claimed[start : start + length] = [True] * length
                kept.append((start, length, entity))
        kept.sort()
        return kept

    def _linked(
        self, words: list[tuple[str, int, int]], kept: Iterable[tuple[int, int, int]]
    ) -> Linked:
        items: dict[int, None] = {}
        entities: dict[int, None] = {}
        mentions = []
        for start, length, entity in kept:
            if self._is_item[entity]:
                items.setdefault(entity, None)
                mentions.append(Mention(entity, words[start][1], words[start + length - 1][2]))
            else:
                entities.setdefault(entity, None)
        return Linked(tuple(items), tuple(entities), tuple(mentions))
