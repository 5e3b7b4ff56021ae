"""The language of the shapes world: its words, the captions written from a scene, and a parser that reads them back.

A caption is assembled from phrases, each optional except the objects:

    object      [size] colour shape                "a large blue square", "an orange star"
    position    where a single object sits         "in the top left corner", "on the left", "in the middle"
    relation    where the first of two objects is  "above", "below", "to the left of", "to the right of"
    background  the colour of everything else      "on a yellow background", "a yellow background with ..."

What a caption states is an *attributes* dict, the format both ``make_caption`` reads and ``parse_prompt`` returns:

    {"objects": [{"color": "red", "shape": "circle", "size": "large" or None}, ...],   # one or two
     "position": "top left" or None, "relation": "above" or None, "background": "yellow" or None}

``parse_prompt(make_caption(attributes, rng)) == attributes`` for every template (tests/test_shapes.py checks it);
the evaluation command uses the same parser on prompts a person wrote.
"""

import re

COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SHAPES = ("circle", "square", "triangle", "star", "heart", "ring")
SIZES = ("small", "large")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
RELATIONS = ("above", "below", "left of", "right of")

# The phrases that may express each attribute; make_caption picks one at random, parse_prompt reads them all.
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
POSITION_PHRASES = {
    "top left": ("in the top left corner", "in the top left", "at the top left"),
    "top right": ("in the top right corner", "in the top right", "at the top right"),
    "bottom left": ("in the bottom left corner", "in the bottom left", "at the bottom left"),
    "bottom right": ("in the bottom right corner", "in the bottom right", "at the bottom right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    "center": ("in the center", "in the middle"),
}
RELATION_PHRASES = {
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
}
BACKGROUND_PHRASES = ("on a {} background", "against a {} background", "with a {} background")
FRAMES = ("{}", "{}", "{}", "there is {}", "a picture of {}", "an image of {}", "a drawing of {}")


def pick(rng, options):
    """One of ``options``, uniformly; rng: a numpy Generator (one draw of rng.random(), its cheapest call)."""
    return options[int(rng.random() * len(options))]


def with_article(phrase):
    """'a' or 'an' before a phrase, by its first letter (enough for this vocabulary): 'an orange star'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def object_phrase(obj, rng):
    """'a large blue square' from {"color": "blue", "shape": "square", "size": "large"}; size only if not None."""
    words = [obj["color"], obj["shape"]]
    if obj["size"] is not None:
        words.insert(0, pick(rng, SIZE_WORDS[obj["size"]]))
    return with_article(" ".join(words))


def make_caption(attributes, rng):
    """An English caption stating exactly ``attributes`` (see the module docstring), wording drawn from ``rng``.

    rng: a numpy Generator. Two objects with no relation are joined by 'and'.
    """
    objects = [object_phrase(obj, rng) for obj in attributes["objects"]]
    if len(objects) == 1:
        scene = objects[0]
        if attributes["position"] is not None:
            scene += " " + pick(rng, POSITION_PHRASES[attributes["position"]])
    elif attributes["relation"] is not None:
        scene = f"{objects[0]} {pick(rng, RELATION_PHRASES[attributes['relation']])} {objects[1]}"
    else:
        scene = f"{objects[0]} and {objects[1]}"

    background = attributes["background"]
    if background is not None and rng.random() < 0.25:
        return f"a {background} background with {scene}"
    caption = pick(rng, FRAMES).format(scene)
    if background is not None:
        caption += " " + pick(rng, BACKGROUND_PHRASES).format(background)
    return caption


def _alternatives(words):
    """A regex alternation, longest first so that 'top left' wins over 'top'."""
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


_SIZE_OF_WORD = {word: size for size, words in SIZE_WORDS.items() for word in words}
_RELATION_OF_PHRASE = {p: rel for rel, phrases in RELATION_PHRASES.items() for p in phrases}
_COLOR, _SHAPE, _SIZE = (_alternatives(words) for words in (COLORS, SHAPES, _SIZE_OF_WORD))
_OBJECT = re.compile(rf"\b(?:({_SIZE}) )?({_COLOR}) ({_SHAPE})s?\b")
_BACKGROUND = re.compile(rf"\b({_COLOR}) background\b")
_POSITION = re.compile(rf"\b(?:in|at|on|near) the ({_alternatives(POSITIONS + ('centre', 'middle'))})\b")
_RELATION = re.compile(rf"\b({_alternatives(_RELATION_OF_PHRASE)})\b")


def parse_prompt(text):
    """The attributes a prompt asks for, in the attributes-dict format of this module (None: not asked).

    Reads objects as '[size] colour shape' in order of appearance (at most two), a relation only between the
    first two objects, a position phrase ('in the top left', 'on the left', 'in the middle', ...) and a
    '<colour> background'. Words outside the shapes vocabulary are ignored, so 'a photo of a big red heart
    in the middle, please' parses to a large red heart at the center.
    """
    text = " ".join(text.lower().replace("-", " ").split())
    background = _BACKGROUND.search(text)
    matches = list(_OBJECT.finditer(text))[:2]
    objects = [{"color": m[2], "shape": m[3], "size": _SIZE_OF_WORD.get(m[1])} for m in matches]
    relation = None
    if len(matches) == 2:
        between = _RELATION.search(text, matches[0].end(), matches[1].start())
        relation = _RELATION_OF_PHRASE[between[1]] if between else None
    position = _POSITION.search(text)
    position = {"centre": "center", "middle": "center"}.get(position[1], position[1]) if position else None
    return {
        "objects": objects,
        "position": position,
        "relation": relation,
        "background": background[1] if background else None,
    }


OPPOSITE_RELATION = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}


def contradict(attributes, rng):
    """Attributes that differ from ``attributes`` in one bound detail, so that a caption made from them is false
    for the scene while using almost the same words: a *hard negative* for contrastive training.

    Two objects: swap their colours, swap their shapes, or turn the relation around ("a red circle above a
    blue square" -> "a blue circle above a red square", "a red square above a blue circle", "a red circle
    below a blue square"; a pair whose words cannot be moved around gets a new colour for its first object).
    One object: another colour, another shape, or another stated position. Such captions rarely meet by
    chance in a batch, and a text encoder can tell a pair's from the true one only by reading word order,
    not just which words occur. rng: a numpy Generator.
    """
    objects = [dict(o) for o in attributes["objects"]]
    changes = []
    if len(objects) == 2:
        a, b = objects
        related = attributes["relation"] is not None
        # Without a relation, "a blue square and a blue ring" says the same with its shapes swapped.
        if a["color"] != b["color"] and (related or a["shape"] != b["shape"]):
            changes.append("swap colours")
        if a["shape"] != b["shape"] and (related or a["color"] != b["color"]):
            changes.append("swap shapes")
        if related:
            changes.append("reverse relation")
    else:
        changes += ["colour", "shape"] + (["position"] if attributes["position"] is not None else [])
    if not changes:
        changes.append("colour")  # e.g. "a blue square and a blue ring": nothing to move around
    change = pick(rng, changes)
    result = {**attributes, "objects": objects}
    if change == "swap colours":
        a["color"], b["color"] = b["color"], a["color"]
    elif change == "swap shapes":
        a["shape"], b["shape"] = b["shape"], a["shape"]
    elif change == "reverse relation":
        result["relation"] = OPPOSITE_RELATION[attributes["relation"]]
    elif change == "colour":
        taken = (*(o["color"] for o in objects), attributes["background"])
        objects[0]["color"] = pick(rng, [c for c in COLORS if c not in taken])
    elif change == "shape":
        objects[0]["shape"] = pick(rng, [s for s in SHAPES if s != objects[0]["shape"]])
    else:
        result["position"] = pick(rng, [p for p in POSITIONS if p != attributes["position"]])
    return result
