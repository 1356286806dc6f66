"""The built-in `demo` world: a small synthetic movie KG and simulated dialogues.

It exists so that quickstart and the tests run offline in about a minute on a CPU, and so
that tests know the ground truth. Everything is generated from one seed; nothing is read.

World (`num_movies` movies; people and decades scale with it)::

    movie:The Silent Harbor (1994) -genre->     genre:drama        1-2 genres per movie
                                   -director->  person:Ann Lee     one director
                                   -starring->  person:Bo Park     three actors
                                   -decade->    decade:1990s
    movie:The Silent Harbor 2 (1998) -sequel_of-> movie:The Silent Harbor (1994)

Every person has a home genre and works mostly in it, so people and genres correlate as
they do in real film data and a KG encoder has structure to exploit.

Dialogues: each seeker has latent tastes (1-2 genres; maybe a favourite person and a
decade; one movie they loved). They reveal them a piece at a time, unprompted or when
asked; the recommender knows only what has been said and suggests the unmentioned movies
that best match it (with noise, popularity and an occasional off-taste pick), sometimes
two at once, sometimes anchored on a movie already mentioned ("Since you liked X, try
Y"). Seekers accept suggestions that fit their latent taste and mostly reject the rest.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from convrec.data.datasets.base import DatasetReader, register_reader
from convrec.data.kg import KnowledgeGraph
from convrec.data.schema import (
    SPLITS,
    ConversationDataset,
    Dialogue,
    Mention,
    Role,
    TaskKind,
    Turn,
)

# -- the world's vocabulary -----------------------------------------------------------------

# fmt: off
# (genre, relative frequency of movies with it as primary genre)
GENRES: tuple[tuple[str, float], ...] = (
    ("drama", 3.0), ("comedy", 3.0), ("action", 2.5), ("thriller", 2.0), ("romance", 2.0),
    ("horror", 1.5), ("sci-fi", 1.5), ("crime", 1.5), ("adventure", 1.5), ("animation", 1.0),
    ("fantasy", 1.0), ("mystery", 1.0), ("family", 1.0), ("documentary", 0.7), ("war", 0.6),
    ("western", 0.5),
)
FIRST_NAMES = (
    "Ann", "Bo", "Carla", "Dev", "Elena", "Felix", "Greta", "Hugo", "Iris", "Jonas", "Kira",
    "Liam", "Maya", "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tess", "Umar", "Vera",
    "Wes", "Xena", "Yusuf", "Zoe", "Aldo", "Bianca", "Cyrus", "Dana", "Emil", "Freya", "Gus",
    "Hana", "Ivo", "June", "Kai", "Lena", "Milo", "Nora",
)
LAST_NAMES = (
    "Lee", "Park", "Novak", "Okafor", "Rossi", "Santos", "Berg", "Chen", "Dubois", "Eriksen",
    "Fischer", "Garcia", "Haddad", "Ito", "Jansen", "Kowalski", "Larsen", "Moreau", "Nakamura",
    "Oliveira", "Petrov", "Quist", "Romero", "Schmidt", "Tanaka", "Ueda", "Varga", "Weber", "Xu",
    "Yilmaz", "Zeller", "Ahmed", "Brandt", "Costa", "Diaz", "Evans", "Ford", "Gray", "Hale",
    "Ibsen",
)
TITLE_ADJECTIVES = (
    "Silent", "Broken", "Golden", "Hidden", "Last", "Lost", "Crimson", "Endless", "Frozen",
    "Distant", "Burning", "Quiet", "Wild", "Hollow", "Secret", "Shattered", "Forgotten",
    "Restless", "Fading", "Iron", "Velvet", "Paper", "Glass", "Electric", "Scarlet", "Lonely",
    "Northern", "Savage", "Gentle", "Stolen", "Midnight", "Sunday", "Final", "Bright", "Dark",
    "Long", "Little", "Perfect", "Hungry", "Crooked",
)
TITLE_NOUNS = (
    "Harbor", "Garden", "Mirror", "River", "Kingdom", "Promise", "Horizon", "Shadow", "Letter",
    "Road", "Summer", "Winter", "Storm", "Island", "Machine", "Frontier", "Echo", "Lantern",
    "Orchard", "Voyage", "Signal", "Crown", "Circus", "Compass", "Empire", "Highway", "Hotel",
    "Ocean", "Station", "Valley", "Witness", "Bridge", "Canyon", "Carnival", "Daughter",
    "Detective", "Heist", "Run", "Tide", "Fever",
)
TITLE_PLACES = (
    "Paris", "Tokyo", "Avalon", "Marrakesh", "Brooklyn", "Nowhere", "Coldwater", "Eldridge",
    "Sierra Vista", "Havana", "Juniper Falls", "Red Rock", "Moon Bay", "Ashford", "Lisbon",
    "Vienna", "Rio", "Kingsport", "Mars", "Atlantis",
)
# fmt: on
GENRE_P = np.array([weight for _, weight in GENRES]) / sum(weight for _, weight in GENRES)

# -- the world's shape ----------------------------------------------------------------------

YEARS = (1960, 2024)  # inclusive release-year range
CAST_SIZE = 3
SECOND_GENRE_RATE = 0.5  # movies with a second genre
HOME_GENRE_RATE = 0.85  # a director / last cast member comes from the primary genre's pool
SEQUEL_RATE = 0.06  # share of movies that are "<title> 2" of another movie

# -- the simulated people -------------------------------------------------------------------

SEEKER_OPENS = 0.2  # otherwise the recommender greets first
TWO_GENRES = 0.5  # seekers with two favourite genres (else one)
HAS_PERSON = 0.6  # seekers with a favourite director or actor
HAS_DECADE = 0.3  # seekers with a favourite decade
ACCEPT_IF_FITS = 0.85  # P(accept) of a suggestion that fits the latent taste ...
ACCEPT_OTHERWISE = 0.2  # ... and of one that does not
ASK_RATE = 0.3  # recommender asks a question instead of suggesting
ASK_AFTER_REJECT = 0.5
TWO_SUGGESTIONS = 0.2
ANCHOR_ON_LIKED = 0.25  # "Since you liked X, try Y": re-mentions a context item
ANCHOR_ON_REJECTED = 0.3  # "If X wasn't for you, maybe Y?"
MORE_AFTER_REJECT = 0.7  # seeker adds a preference after rejecting

# Recommender's scoring of a movie given what the seeker has said. Choices take the argmax of
# score + NOISE * Gumbel noise, i.e. sample from softmax(score / NOISE); with hundreds of
# movies unit noise would drown a genre match, hence the low temperature.
W_GENRE, W_PERSON, W_DECADE, W_SIMILAR, W_POPULAR = 3.0, 3.0, 1.0, 2.0, 0.5
NOISE = 0.5

# -- templates: every {field} is an entity or item, linked in the turn -----------------------

REC_HELLO = (
    "Hi there! What kind of movies do you like?",
    "Hello! What are you in the mood to watch today?",
    "Hey! What sort of films do you usually enjoy?",
    "Hi! I'd love to help you find a movie. What genres do you like?",
    "Good evening! What kind of movie are you looking for?",
)
REC_ASK = {
    "person": (
        "Do you have a favourite actor or director?",
        "Is there an actor or a director you especially like?",
        "Any actors you always enjoy watching?",
    ),
    "loved": (
        "What's a movie you really enjoyed lately?",
        "Can you tell me a film you loved?",
        "What was the last movie you really liked?",
    ),
    "decade": (
        "Do you prefer older classics or newer movies?",
        "Is there a particular era of film you like?",
    ),
}
REC_SUGGEST = (
    "You might like {m0}.",
    "Have you seen {m0}?",
    "I'd recommend {m0}.",
    "{m0} could be a good fit for you.",
    "How about {m0}?",
)
REC_SUGGEST_GENRE = (
    "Have you seen {m0}? It's one of my favourite {g} movies.",
    "If you like {g}, {m0} is a must.",
    "How about {m0}? It's a great pick for {g} fans.",
)
REC_SUGGEST_DIRECTOR = (
    "I'd recommend {m0}, directed by {p}.",
    "{p} directed {m0}, you might enjoy it.",
)
REC_SUGGEST_ACTOR = (
    "How about {m0}? {p} is excellent in it.",
    "You should try {m0}, starring {p}.",
)
REC_SUGGEST_TWO = (
    "How about {m0} or {m1}?",
    "I'd suggest {m0}, or maybe {m1}.",
    "Two picks for you: {m0} and {m1}.",
)
REC_SINCE_LIKED = (
    "Since you liked {m0}, you should try {m1}.",
    "If you enjoyed {m0}, {m1} is very similar.",
    "Fans of {m0} usually love {m1}.",
)
REC_AFTER_REJECT = (
    "If {m0} wasn't for you, maybe {m1}?",
    "Fair enough, {m0} isn't for everyone. How about {m1}?",
)
REC_BYE_ITEM = ("Enjoy {m0}!", "Have fun watching {m0}!", "Glad I could help. Enjoy {m0}!")
REC_BYE = ("Glad I could help. Enjoy your movie night!", "Have a great evening!")

SEEKER_HELLO = ("Hi!", "Hello!", "Hey there.", "Hi, thanks for helping.")
SEEKER_GENRE_ONE = (
    "I really like {g0} movies.",
    "I'm in the mood for some {g0}.",
    "I'm looking for a good {g0} movie.",
    "Mostly {g0}, to be honest.",
    "I've been watching a lot of {g0} lately and want more.",
)
SEEKER_GENRE_TWO = (
    "I love {g0} and {g1}.",
    "Something {g0} or {g1} would be great.",
    "Mostly {g0}, but I also enjoy {g1}.",
    "I'm a big {g0} fan, and I like {g1} too.",
)
SEEKER_ACTOR = (
    "I'm a big fan of {p}.",
    "Anything with {p} in it is great.",
    "I'll watch anything starring {p}.",
    "{p} is my favourite actor.",
)
SEEKER_DIRECTOR = (
    "I like films directed by {p}.",
    "{p} is my favourite director.",
    "I enjoy everything {p} has directed.",
)
SEEKER_DECADE = (
    "I prefer movies from the {d}.",
    "Something from the {d} would be nice.",
    "I have a soft spot for the {d}.",
)
SEEKER_LOVED = (
    "I recently watched {m0} and loved it.",
    "One of my favourites is {m0}.",
    "I really enjoyed {m0}.",
    "Have you seen {m0}? I loved that one.",
)
SEEKER_NO_ANSWER = {  # asked about a taste the seeker does not have
    "person": ("Not really, I'm open to anything.", "No one in particular."),
    "loved": ("Hmm, nothing comes to mind.",),
    "decade": ("No preference, really.", "Not really, old or new is fine."),
}
SEEKER_MORE = ("Any other ideas?", "What else would you suggest?", "Anything else like that?")
SEEKER_ACCEPT_ITEM = (
    "Oh, {m0} sounds great! I'll check it out.",
    "I haven't seen {m0} yet, adding it to my list.",
    "Yes! I saw {m0} last year and loved it.",
    "{m0} looks like exactly my kind of movie.",
)
SEEKER_SEEN_LOVED = ("Yes! I saw {m0} and loved it.", "{m0} is one of my favourites!")
SEEKER_ACCEPT = (
    "That sounds perfect, thanks!",
    "Ooh, I haven't seen that one. Sounds good!",
    "Great suggestion, I'll watch it.",
)
SEEKER_REJECT_ITEM = (
    "I've seen {m0} and didn't really like it.",
    "Hmm, {m0} isn't really my thing.",
    "I already watched {m0}, it was just okay.",
)
SEEKER_REJECT = (
    "Hmm, I'm not sure that's for me.",
    "I've seen that one already, it wasn't great.",
    "Not really my style.",
)
SEEKER_ACCEPT_ONE_OF_TWO = (
    "{m0} sounds more like my thing!",
    "I'll go with {m0}, thanks.",
    "I haven't seen {m0}, that one sounds good.",
)
SEEKER_REJECT_BOTH = (
    "I'm not really into either of those.",
    "I've seen both and they weren't for me.",
)
SEEKER_BYE_ITEM = (
    "Great, I'll watch {m0} tonight. Thanks!",
    "Perfect, {m0} it is. Thanks for the help!",
)
SEEKER_BYE_REJECT = ("Okay, thanks anyway! Have a good one.", "Hmm, maybe another time. Bye!")
SEEKER_BYE = ("Thanks for the suggestions, bye!", "Thanks, that's all I needed.")

ZERO_COUNTERS = ("dropped_entity_links", "dropped_item_links", "unmasked_item_mentions")


# -- the world --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _World:
    """Movies as parallel arrays (index = movie number), people, and the KG built on them."""

    titles: tuple[str, ...]  # surface titles, without the year
    years: np.ndarray  # [M]
    decade: np.ndarray  # [M] index into `decades`
    genres: np.ndarray  # bool [M, G]
    primary: np.ndarray  # [M] primary genre
    director: np.ndarray  # [M] person index
    cast: np.ndarray  # [M, CAST_SIZE] person indices
    sequel_of: np.ndarray  # [M] movie index or -1
    log_pop: np.ndarray  # [M] log popularity
    people: tuple[str, ...]  # people[:num_directors] direct, the rest act
    num_directors: int
    person_movies: np.ndarray  # bool [P, M]
    decades: tuple[str, ...]  # "1990s", ...
    kg: KnowledgeGraph
    movie_ids: tuple[int, ...]  # KG entity id per movie / genre / person / decade
    genre_ids: tuple[int, ...]
    person_ids: tuple[int, ...]
    decade_ids: tuple[int, ...]

    @property
    def num_movies(self) -> int:
        return len(self.titles)

    def catalogue_title(self, movie: int) -> str:
        return f"{self.titles[movie]} ({self.years[movie]})"


@cache
def _title_candidates() -> tuple[str, ...]:
    """Every title the word lists can make; no title is another one plus an article."""
    return (
        *(f"The {a} {n}" for a in TITLE_ADJECTIVES for n in TITLE_NOUNS),
        *(f"{f}'s {n}" for f in FIRST_NAMES for n in TITLE_NOUNS),
        *(f"{n} in {p}" for n in TITLE_NOUNS for p in TITLE_PLACES),
        *(f"Return to {p}" for p in TITLE_PLACES),
        *(f"Escape from {p}" for p in TITLE_PLACES),
    )


def _pick_from_pools(
    rng: np.random.Generator, home: np.ndarray, wanted: np.ndarray, k: int
) -> np.ndarray:
    """For each row i, k distinct members whose `home` equals `wanted[i]`: [len(wanted), k].

    Random sort keys, with +inf beyond each pool's size, pick a random k-subset of every
    pool at once.
    """
    order = np.argsort(home, kind="stable")
    sizes = np.bincount(home, minlength=len(GENRES))
    starts = np.cumsum(sizes) - sizes
    width = int(sizes.max())
    keys = rng.random((len(wanted), width))
    keys[np.arange(width) >= sizes[wanted][:, None]] = np.inf
    offsets = np.argsort(keys, axis=1)[:, :k]
    return order[starts[wanted][:, None] + offsets]


def _make_world(rng: np.random.Generator, num_movies: int) -> _World:
    m, g = num_movies, len(GENRES)
    num_directors = max(m // 5, g)
    num_actors = max(m // 2, (CAST_SIZE + 1) * g)
    num_people = num_directors + num_actors
    if num_people > len(FIRST_NAMES) * len(LAST_NAMES):
        raise ValueError(f"num_movies={m} needs more people than the name lists can make")
    n_sequels = round(SEQUEL_RATE * m)
    n_originals = m - n_sequels
    candidates = _title_candidates()
    if n_originals > len(candidates):
        raise ValueError(f"num_movies={m} needs more titles than the word lists can make")

    picked = rng.choice(len(FIRST_NAMES) * len(LAST_NAMES), size=num_people, replace=False)
    people = tuple(
        f"{FIRST_NAMES[i // len(LAST_NAMES)]} {LAST_NAMES[i % len(LAST_NAMES)]}"
        for i in picked.tolist()
    )
    # Every genre gets its share of directors and of actors.
    director_home = rng.permutation(np.arange(num_directors) % g)
    actor_home = rng.permutation(np.arange(num_actors) % g)

    primary = rng.choice(g, size=m, p=GENRE_P)
    secondary = (primary + rng.integers(1, g, size=m)) % g
    second = np.flatnonzero(rng.random(m) < SECOND_GENRE_RATE)
    director = _pick_from_pools(rng, director_home, primary, 1)[:, 0]
    stray = rng.random(m) > HOME_GENRE_RATE
    director[stray] = rng.integers(num_directors, size=int(stray.sum()))
    cast = num_directors + _pick_from_pools(rng, actor_home, primary, CAST_SIZE)
    stray = rng.random(m) > HOME_GENRE_RATE
    cast[stray, -1] = num_directors + rng.integers(num_actors, size=int(stray.sum()))
    years = rng.integers(YEARS[0], YEARS[1] + 1, size=m)
    log_pop = rng.normal(0.0, 1.0, size=m)
    titles = [candidates[i] for i in rng.choice(len(candidates), n_originals, replace=False)]

    # Sequels (the last n_sequels movies) share genres, director and most of the cast.
    sequels = np.arange(n_originals, m)
    originals = rng.choice(n_originals, size=n_sequels, replace=False)
    primary[sequels] = primary[originals]
    secondary[sequels] = secondary[originals]
    second = np.union1d(second[second < n_originals], sequels[np.isin(originals, second)])
    director[sequels] = director[originals]
    cast[sequels, :-1] = cast[originals, :-1]
    gaps = rng.integers(2, 7, size=n_sequels)
    years[sequels] = np.minimum(years[originals] + gaps, YEARS[1])
    titles += [f"{titles[i]} 2" for i in originals.tolist()]
    sequel_of = np.full(m, -1)
    sequel_of[sequels] = originals

    genres = np.zeros((m, g), dtype=bool)
    genres[np.arange(m), primary] = True
    genres[second, secondary[second]] = True
    person_movies = np.zeros((num_people, m), dtype=bool)
    person_movies[director, np.arange(m)] = True
    person_movies[cast, np.arange(m)[:, None]] = True
    decade_years, decade = np.unique(years // 10 * 10, return_inverse=True)
    decades = tuple(f"{y}s" for y in decade_years.tolist())

    # The KG, by name; ids are sorted-name positions (KnowledgeGraph.from_named_triples).
    movie_names = [f"movie:{t} ({y})" for t, y in zip(titles, years.tolist(), strict=True)]
    genre_names = [f"genre:{name}" for name, _ in GENRES]
    person_names = [f"person:{p}" for p in people]
    decade_names = [f"decade:{d}" for d in decades]
    movies_, genres_ = np.nonzero(genres)
    starring = np.nonzero(person_movies[num_directors:].T)
    triples = [
        *(
            (movie_names[a], "genre", genre_names[b])
            for a, b in zip(movies_.tolist(), genres_.tolist(), strict=True)
        ),
        *((movie_names[a], "director", person_names[b]) for a, b in enumerate(director.tolist())),
        *(
            (movie_names[a], "starring", person_names[num_directors + b])
            for a, b in zip(starring[0].tolist(), starring[1].tolist(), strict=True)
        ),
        *((movie_names[a], "decade", decade_names[b]) for a, b in enumerate(decade.tolist())),
        *(
            (movie_names[a], "sequel_of", movie_names[b])
            for a, b in zip(sequels.tolist(), originals.tolist(), strict=True)
        ),
    ]
    kg = KnowledgeGraph.from_named_triples(
        triples, items=movie_names, extra_entities=[*genre_names, *person_names, *decade_names]
    )
    return _World(
        titles=tuple(titles),
        years=years,
        decade=decade,
        genres=genres,
        primary=primary,
        director=director,
        cast=cast,
        sequel_of=sequel_of,
        log_pop=log_pop,
        people=people,
        num_directors=num_directors,
        person_movies=person_movies,
        decades=decades,
        kg=kg,
        movie_ids=tuple(kg.entity_id(n) for n in movie_names),
        genre_ids=tuple(kg.entity_id(n) for n in genre_names),
        person_ids=tuple(kg.entity_id(n) for n in person_names),
        decade_ids=tuple(kg.entity_id(n) for n in decade_names),
    )


# -- utterances -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ref:
    """What fills a template field: its surface text and the KG entity it links to."""

    text: str
    entity: int
    is_item: bool


@cache
def _parse(template: str) -> tuple[tuple[str, str | None], ...]:
    return tuple((literal, name) for literal, name, _, _ in string.Formatter().parse(template))


@dataclass
class _Utterance:
    """A turn's text built sentence by sentence, recording links and item spans as it goes."""

    parts: list[str] = field(default_factory=list)
    length: int = 0
    items: dict[int, None] = field(default_factory=dict)  # insertion-ordered sets
    entities: dict[int, None] = field(default_factory=dict)
    mentions: list[Mention] = field(default_factory=list)

    def say(self, template: str, **refs: _Ref) -> None:
        if self.parts:
            self._append(" ")
        for literal, name in _parse(template):
            self._append(literal)
            if name is None:
                continue
            ref = refs[name]
            start = self.length
            self._append(ref.text)
            if ref.is_item:
                self.items.setdefault(ref.entity, None)
                self.mentions.append(Mention(ref.entity, start, self.length))
            else:
                self.entities.setdefault(ref.entity, None)

    def _append(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def turn(self, role: Role) -> Turn:
        return Turn(
            role=role,
            text="".join(self.parts),
            items=tuple(self.items),
            entities=tuple(self.entities),
            mentions=tuple(self.mentions),
        )


# -- simulated seekers and recommenders ---------------------------------------------------------


@dataclass
class _Seeker:
    """Latent tastes; `fits[m]` says whether movie m would please this seeker."""

    genres: list[int]
    person: int | None
    decade: int | None
    loved: int
    fits: np.ndarray  # bool [M]


@dataclass
class _Talk:
    """What has been said so far: all the recommender may use."""

    seeker: _Seeker
    agenda: list[str]  # topics the seeker has yet to reveal, in order
    mentioned: np.ndarray  # bool [M]
    genres: list[int] = field(default_factory=list)
    people: list[int] = field(default_factory=list)
    decades: list[int] = field(default_factory=list)
    liked: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # suggested, awaiting a reaction
    question: str | None = None
    asked: list[str] = field(default_factory=list)
    rejected: int | None = None
    accepted: int | None = None
    num_suggested: int = 0


class _Simulator:
    """Generates dialogues in a fixed world; all randomness comes from the two generators."""

    def __init__(
        self,
        world: _World,
        rng: np.random.Generator,
        py: random.Random,
        turns: tuple[int, int],
        off_preference_rate: float,
    ) -> None:
        self.world, self.rng, self.py = world, rng, py
        self.turns = turns
        self.off_preference_rate = off_preference_rate

    # references to KG entities, as they appear in text
    def _movie(self, m: int) -> _Ref:
        return _Ref(self.world.titles[m], self.world.movie_ids[m], True)

    def _genre(self, g: int) -> _Ref:
        return _Ref(GENRES[g][0], self.world.genre_ids[g], False)

    def _person(self, p: int) -> _Ref:
        return _Ref(self.world.people[p], self.world.person_ids[p], False)

    def _decade(self, d: int) -> _Ref:
        return _Ref(self.world.decades[d], self.world.decade_ids[d], False)

    def dialogue(self) -> tuple[Turn, ...]:
        num_turns = self.py.randint(*self.turns)
        seeker = self._new_seeker()
        agenda = ["loved"] + (["person"] if seeker.person is not None else [])
        agenda += ["decade"] if seeker.decade is not None else []
        self.py.shuffle(agenda)
        talk = _Talk(seeker, ["genre", *agenda], np.zeros(self.world.num_movies, dtype=bool))
        role: Role = "seeker" if self.py.random() < SEEKER_OPENS else "recommender"
        turns = []
        for index in range(num_turns):
            first, last = index == 0, index == num_turns - 1
            if role == "seeker":
                turns.append(self._seeker_turn(talk, first=first, last=last))
                role = "recommender"
            else:
                may_ask = index < num_turns - 2  # a question needs an answer
                turns.append(self._recommender_turn(talk, first=first, last=last, may_ask=may_ask))
                role = "seeker"
        return tuple(turns)

    def _new_seeker(self) -> _Seeker:
        w, rng = self.world, self.rng
        n_genres = 2 if self.py.random() < TWO_GENRES else 1
        genres = rng.choice(len(GENRES), size=n_genres, replace=False, p=GENRE_P)
        in_genre = w.genres[:, genres].any(axis=1)
        fits = in_genre.copy()
        # The movie they loved: drawn from their taste (the same shape as a recommender's).
        affinity = 2.0 * w.genres[:, genres].sum(axis=1) + W_POPULAR * w.log_pop
        person = decade = None
        if self.py.random() < HAS_PERSON:  # someone who works in the favourite genres
            m = self._sample(in_genre)
            person = int(w.director[m]) if self.py.random() < 0.4 else int(w.cast[m, 0])
            fits |= w.person_movies[person]
            affinity += 2.0 * w.person_movies[person]
        if self.py.random() < HAS_DECADE:
            decade = int(w.decade[self._sample(in_genre)])
            affinity += 1.0 * (w.decade == decade)
        loved = int(np.argmax(affinity + rng.gumbel(scale=NOISE, size=w.num_movies)))
        return _Seeker([int(g) for g in genres], person, decade, loved, fits)

    def _sample(self, allowed: np.ndarray) -> int:
        """A movie among `allowed`, weighted by popularity."""
        score = np.where(allowed, self.world.log_pop, -np.inf)
        return int(np.argmax(score + self.rng.gumbel(size=len(score))))

    # -- the seeker ----------------------------------------------------------------------

    def _seeker_turn(self, talk: _Talk, *, first: bool, last: bool) -> Turn:
        u, py = _Utterance(), self.py
        if first:
            u.say(py.choice(SEEKER_HELLO))
        reaction = self._react(talk, u, closing=last) if talk.pending else None
        if last:
            if reaction is None:
                u.say(py.choice(SEEKER_BYE))
            return u.turn("seeker")
        if talk.question is not None:
            topic, talk.question = talk.question, None
            if topic in talk.agenda:
                talk.agenda.remove(topic)
                self._reveal(talk, u, topic)
            else:
                u.say(py.choice(SEEKER_NO_ANSWER[topic]))
        elif talk.agenda and (
            reaction is None or (not reaction and py.random() < MORE_AFTER_REJECT)
        ):
            self._reveal(talk, u, talk.agenda.pop(0))
        elif not u.parts:
            u.say(py.choice(SEEKER_MORE))
        return u.turn("seeker")

    def _reveal(self, talk: _Talk, u: _Utterance, topic: str) -> None:
        seeker, py = talk.seeker, self.py
        if topic == "genre":
            refs = {f"g{i}": self._genre(g) for i, g in enumerate(seeker.genres)}
            u.say(py.choice(SEEKER_GENRE_TWO if len(refs) == 2 else SEEKER_GENRE_ONE), **refs)
            talk.genres += seeker.genres
        elif topic == "person":
            assert seeker.person is not None
            directs = seeker.person < self.world.num_directors
            u.say(
                py.choice(SEEKER_DIRECTOR if directs else SEEKER_ACTOR),
                p=self._person(seeker.person),
            )
            talk.people.append(seeker.person)
        elif topic == "decade":
            assert seeker.decade is not None
            u.say(py.choice(SEEKER_DECADE), d=self._decade(seeker.decade))
            talk.decades.append(seeker.decade)
        else:
            u.say(py.choice(SEEKER_LOVED), m0=self._movie(seeker.loved))
            talk.liked.append(seeker.loved)
            talk.mentioned[seeker.loved] = True

    def _react(self, talk: _Talk, u: _Utterance, *, closing: bool) -> bool:
        """Accept or reject the pending suggestion(s); True when one was accepted."""
        py, seeker = self.py, talk.seeker
        liked = [
            m
            for m in talk.pending
            if m == seeker.loved
            or py.random() < (ACCEPT_IF_FITS if seeker.fits[m] else ACCEPT_OTHERWISE)
        ]
        liked.sort(key=lambda m: m != seeker.loved)  # stable: their favourite first
        rejected = [m for m in talk.pending if m not in liked]
        two = len(talk.pending) == 2
        talk.pending = []
        if liked:
            talk.accepted = liked[0]
            talk.liked += liked
            if liked[0] == seeker.loved:  # the recommender found it first: nothing to reveal
                u.say(py.choice(SEEKER_SEEN_LOVED), m0=self._movie(liked[0]))
                talk.agenda = [t for t in talk.agenda if t != "loved"]
                if closing:
                    u.say(py.choice(SEEKER_BYE))
            elif closing:
                u.say(py.choice(SEEKER_BYE_ITEM), m0=self._movie(liked[0]))
            elif two:
                u.say(py.choice(SEEKER_ACCEPT_ONE_OF_TWO), m0=self._movie(liked[0]))
            elif py.random() < 0.5:
                u.say(py.choice(SEEKER_ACCEPT_ITEM), m0=self._movie(liked[0]))
            else:
                u.say(py.choice(SEEKER_ACCEPT))
            return True
        talk.rejected = rejected[0]
        if closing:
            u.say(py.choice(SEEKER_BYE_REJECT))
        elif two:
            u.say(py.choice(SEEKER_REJECT_BOTH))
        elif py.random() < 0.5:
            u.say(py.choice(SEEKER_REJECT_ITEM), m0=self._movie(rejected[0]))
        else:
            u.say(py.choice(SEEKER_REJECT))
        return False

    # -- the recommender -----------------------------------------------------------------

    def _recommender_turn(self, talk: _Talk, *, first: bool, last: bool, may_ask: bool) -> Turn:
        u, py = _Utterance(), self.py
        known = {"person": talk.people, "loved": talk.liked, "decade": talk.decades}
        open_topics = [t for t in REC_ASK if not known[t] and t not in talk.asked]
        ask_rate = ASK_AFTER_REJECT if talk.rejected is not None else ASK_RATE
        if first or not (talk.genres or talk.people or talk.liked):
            u.say(py.choice(REC_HELLO))
            talk.question = "genre"
        elif last and talk.num_suggested:
            if talk.accepted is not None and py.random() < 0.5:
                u.say(py.choice(REC_BYE_ITEM), m0=self._movie(talk.accepted))
            else:
                u.say(py.choice(REC_BYE))
        elif may_ask and open_topics and py.random() < ask_rate:
            topic = py.choice(open_topics)
            u.say(py.choice(REC_ASK[topic]))
            talk.question = topic
            talk.asked.append(topic)
        else:
            self._suggest(talk, u)
        return u.turn("recommender")

    def _suggest(self, talk: _Talk, u: _Utterance) -> None:
        py = self.py
        picks = self._pick(talk, 2 if py.random() < TWO_SUGGESTIONS else 1)
        m0 = picks[0]
        if talk.liked and py.random() < ANCHOR_ON_LIKED:
            u.say(py.choice(REC_SINCE_LIKED), m0=self._movie(talk.liked[-1]), m1=self._movie(m0))
            picks = [m0]
        elif talk.rejected is not None and py.random() < ANCHOR_ON_REJECTED:
            u.say(py.choice(REC_AFTER_REJECT), m0=self._movie(talk.rejected), m1=self._movie(m0))
            picks = [m0]
        elif len(picks) == 2:
            u.say(py.choice(REC_SUGGEST_TWO), m0=self._movie(m0), m1=self._movie(picks[1]))
        else:
            self._describe(talk, u, m0)
        talk.rejected = None
        talk.pending = picks
        talk.mentioned[picks] = True
        talk.num_suggested += len(picks)

    def _describe(self, talk: _Talk, u: _Utterance, m: int) -> None:
        """Suggest one movie, naming a genre or a person of it (the one the seeker named)."""
        w, py = self.world, self.py
        cast = w.cast[m].tolist()
        named = [p for p in talk.people if p == w.director[m] or p in cast]
        style = "person" if named else py.choice(("plain", "genre", "genre", "person"))
        if style == "plain":
            u.say(py.choice(REC_SUGGEST), m0=self._movie(m))
        elif style == "genre":
            said = [g for g in talk.genres if w.genres[m, g]]
            g = said[0] if said else int(w.primary[m])
            u.say(py.choice(REC_SUGGEST_GENRE), m0=self._movie(m), g=self._genre(g))
        else:
            p = named[0] if named else py.choice((int(w.director[m]), cast[0]))
            templates = REC_SUGGEST_DIRECTOR if p == w.director[m] else REC_SUGGEST_ACTOR
            u.say(py.choice(templates), m0=self._movie(m), p=self._person(p))

    def _pick(self, talk: _Talk, k: int) -> list[int]:
        """The k best unmentioned movies for what has been said (noisy, sometimes off-taste)."""
        w = self.world
        noise = self.rng.gumbel(scale=NOISE, size=w.num_movies)
        if self.py.random() < self.off_preference_rate:
            score = w.log_pop + noise
        else:
            score = W_POPULAR * w.log_pop + noise
            if talk.genres:
                score += W_GENRE * w.genres[:, talk.genres].sum(axis=1)
            if talk.people:
                score += W_PERSON * w.person_movies[talk.people].sum(axis=0)
            if talk.decades:
                score += W_DECADE * np.isin(w.decade, talk.decades)
            for m in talk.liked[-3:]:  # same director, or a sequel / original of it
                similar = (w.director == w.director[m]) | (w.sequel_of == m)
                if w.sequel_of[m] >= 0:
                    similar[w.sequel_of[m]] = True
                score += W_SIMILAR * similar
        score[talk.mentioned] = -np.inf
        best = np.argpartition(-score, k)[:k]
        return [int(m) for m in best[np.argsort(-score[best], kind="stable")]]


# -- public API -------------------------------------------------------------------------------


def generate_demo_world(
    seed: int = 0,
    *,
    num_movies: int = 300,
    num_dialogues: int = 1000,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    min_turns: int = 6,
    max_turns: int = 12,
    off_preference_rate: float = 0.1,
) -> ConversationDataset:
    """The synthetic demo dataset, a pure function of its arguments (see module doc).

    Dialogues are split in generation order: the first ~80% train, then valid, then test.
    `off_preference_rate` is the share of suggestions that ignore what the seeker said.
    """
    if num_movies < 20:
        raise ValueError(f"num_movies must be at least 20, not {num_movies}")
    if num_dialogues < 1:
        raise ValueError(f"num_dialogues must be positive, not {num_dialogues}")
    if min(valid_fraction, test_fraction) < 0 or valid_fraction + test_fraction >= 1:
        raise ValueError("valid_fraction and test_fraction must be >= 0 and sum to less than 1")
    if not 2 <= min_turns <= max_turns:
        raise ValueError(f"need 2 <= min_turns <= max_turns, got {min_turns}, {max_turns}")
    if num_movies <= 2 * max_turns:  # a dialogue introduces at most 2 new movies per turn
        raise ValueError(f"num_movies={num_movies} is too few for max_turns={max_turns}")
    if not 0 <= off_preference_rate <= 1:
        raise ValueError(f"off_preference_rate must be in [0, 1], not {off_preference_rate}")

    world_seed, talk_seed = np.random.SeedSequence(seed).spawn(2)
    world = _make_world(np.random.default_rng(world_seed), num_movies)
    simulator = _Simulator(
        world,
        np.random.default_rng(talk_seed),
        random.Random(int(talk_seed.generate_state(1)[0])),
        (min_turns, max_turns),
        off_preference_rate,
    )
    n_valid = round(num_dialogues * valid_fraction)
    n_test = round(num_dialogues * test_fraction)
    sizes = {"train": num_dialogues - n_valid - n_test, "valid": n_valid, "test": n_test}
    splits = {
        split: tuple(
            Dialogue(f"demo-{split}-{n}", simulator.dialogue()) for n in range(sizes[split])
        )
        for split in SPLITS
    }
    return ConversationDataset(
        name="demo",
        kg=world.kg,
        splits=splits,
        counters={
            split: {
                **dict.fromkeys(ZERO_COUNTERS, 0),
                "utterances": sum(len(d.turns) for d in dialogues),
            }
            for split, dialogues in splits.items()
        },
        item_titles={world.movie_ids[m]: world.catalogue_title(m) for m in range(num_movies)},
        synthetic=True,
    )


@register_reader
class DemoReader(DatasetReader):
    """The `demo` dataset: generated from its options, no files needed."""

    name: ClassVar[str] = "demo"
    version: ClassVar[int] = 1
    description: ClassVar[str] = (
        "Built-in SYNTHETIC movie world (KG of movies, genres, people, decades; simulated "
        "dialogues with known seeker preferences), for quickstart and tests"
    )
    needs_data_dir: ClassVar[bool] = False
    task_kind: ClassVar[TaskKind] = "conversational"

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return {
            "seed": 0,
            "num_movies": 300,
            "num_dialogues": 1000,
            "valid_fraction": 0.1,
            "test_fraction": 0.1,
            "min_turns": 6,
            "max_turns": 12,
            "off_preference_rate": 0.1,
        }

    def input_files(self) -> list[Path]:
        return []

    def read(self) -> ConversationDataset:
        return generate_demo_world(**self.options)
