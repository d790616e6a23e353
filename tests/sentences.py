"""Varied English sentences generated deterministically (templates x word lists), for calibration and evaluation.

Nothing is downloaded; the same seed gives the same sentences on every machine.
"""

from __future__ import annotations

import random

_SUBJECTS = [
    "The engineer",
    "A small child",
    "My neighbour",
    "The old fisherman",
    "Our team",
    "The doctor",
    "A curious cat",
    "The committee",
    "The pilot",
    "A young student",
    "The chef",
    "The farmer",
    "Every visitor",
    "The musician",
    "A tired runner",
    "The researcher",
    "The shopkeeper",
    "The river guide",
]
_VERBS = [
    "repaired",
    "painted",
    "described",
    "forgot",
    "discovered",
    "sold",
    "carried",
    "studied",
    "photographed",
    "cleaned",
    "ordered",
    "designed",
    "borrowed",
    "measured",
    "cooked",
    "wrote about",
    "explained",
    "found",
]
_OBJECTS = [
    "the broken bicycle",
    "a bright red kite",
    "the quarterly budget",
    "an ancient map",
    "the garden fence",
    "a loaf of sourdough bread",
    "the new database schema",
    "a letter to the mayor",
    "the mountain trail",
    "the football match",
    "a jar of honey",
    "the train timetable",
    "a violin concerto",
    "the solar panels",
    "the neural network",
    "a pair of hiking boots",
    "the harbour lights",
    "a cup of green tea",
]
_PLACES = [
    "in the morning",
    "before the storm",
    "at the market",
    "near the station",
    "after lunch",
    "in Paris",
    "during the holidays",
    "on a quiet street",
    "late at night",
    "at the conference",
    "in the laboratory",
    "by the lake",
    "under the bridge",
    "at the airport",
    "",
]
_QUESTIONS = [
    "How do I reset my password?",
    "Where is the nearest pharmacy?",
    "What time does the museum open?",
    "Can you recommend a good book about history?",
    "Why is the sky blue?",
    "Is it going to rain tomorrow?",
    "Which train goes to the city centre?",
    "How much does a ticket cost?",
    "Who won the election?",
    "What is the capital of Australia?",
    "How long should I boil an egg?",
    "Are dogs allowed in the park?",
]
_OPINIONS = [
    "This restaurant serves the best pizza in town.",
    "The movie was far too long and rather boring.",
    "I absolutely loved the concert last night!",
    "The service was slow but the food was excellent.",
    "Stocks fell sharply after the announcement.",
    "The new phone has an impressive battery life.",
    "Learning a language takes patience and practice.",
    "Regular exercise improves sleep quality.",
    "The software update fixed most of the bugs.",
    "Traffic was terrible on the motorway this morning.",
]


def sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct-ish sentences: statements, questions and opinions of different lengths."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.6:
            place = rng.choice(_PLACES)
            s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{(' ' + place) if place else ''}."
            if rng.random() < 0.3:
                s += f" Then {rng.choice(_SUBJECTS).lower()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
        elif kind < 0.8:
            s = rng.choice(_QUESTIONS)
        else:
            s = rng.choice(_OPINIONS)
            if rng.random() < 0.5:
                s = f"{s} {rng.choice(_OPINIONS)}"
        out.append(s)
    return out
