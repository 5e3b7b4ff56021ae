"""A model folder's recommended settings: the small JSON file ``minidiff_settings.json`` beside its
model_index.json, which every image command reads, so that a copy of a folder draws as the original does.

Options given on the command line win over the file; a folder without it, or a single checkpoint file, gets
the settings Stable Diffusion is usually run with (``ModelSettings()``). The checks here say what a run asks of
the model that it was not made for; they warn, and the run goes on.
"""

import json
import re
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

from minidiff import sampler_names

SETTINGS_FILE = "minidiff_settings.json"
VOCABULARIES = ("shapes",)  # "shapes": the caption language of minidiff/data/captions.py (the bundled model)


@dataclass(frozen=True)
class ModelSettings:
    """The fields of ``minidiff_settings.json``, each optional (a missing one keeps the default shown):

    sampler     "euler"  the sampler a run uses without --sampler (one of minidiff.samplers.SAMPLER_NAMES); without
                         it, the sampler of the scheduler class the model's scheduler_config.json names (SD 1.5's
                         PNDMScheduler: pndm, as diffusers), else euler
    steps       25       sampler steps without --steps
    cfg         7.5      classifier-free guidance scale without --cfg
    width       null     the picture width the model was trained at, in pixels (a multiple of 8); it is also
    height      null     generate's size without --width/--height; other sizes warn. Give both or neither.
    min_steps   {}       sampler (or "sampler spacing") -> fewest steps at which this model's pictures hold,
                         e.g. {"lms": 50, "lms karras": 50}; fewer warn
    vocabulary  null     "shapes": the model speaks only the caption language of minidiff/data/captions.py, so
                         prompt words outside it and prompts of more than two objects warn
    """

    sampler: str = "euler"
    steps: int = 25
    cfg: float = 7.5
    width: int | None = None
    height: int | None = None
    min_steps: dict = field(default_factory=dict)
    vocabulary: str | None = None


def read_settings(model):
    """The ModelSettings of a model folder (or file) ``model``: its minidiff_settings.json, else the defaults.

    A file that is not valid JSON, names an unknown field or holds a value of the wrong kind raises a ValueError
    naming the file (resolved) and the field.
    """
    path = Path(model).resolve() / SETTINGS_FILE
    if not path.is_file():
        return ModelSettings(**scheduler_sampler(model))
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix it or delete it to use the default settings")
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object of settings, got {type(values).__name__}")
    known = [f.name for f in fields(ModelSettings)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{path} has unknown fields {', '.join(unknown)}; the fields are {', '.join(known)}")
    settings = ModelSettings(**{**({} if "sampler" in values else scheduler_sampler(model)), **values})
    problem = settings_problem(settings)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return settings


def scheduler_sampler(model):
    """{"sampler": name} for the sampler that is the scheduler class the model folder's scheduler_config.json
    names (diffusers' pipelines run that class), or {} where there is none or minidiff has no such sampler; an
    LCMScheduler brings LCM's 4 steps and guidance 8.5 too."""
    path = Path(model) / "scheduler" / "scheduler_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # no readable scheduler file: loading the model reports a broken one
    from minidiff.samplers import default_sampler_for

    name = default_sampler_for(config.get("_class_name"), config) if isinstance(config, dict) else None
    if name == "lcm":  # a consistency-distilled model: diffusers' LatentConsistencyModelPipeline's defaults
        return {"sampler": name, "steps": 4, "cfg": 8.5}
    return {"sampler": name} if name else {}


def settings_problem(settings):
    """What is wrong with ``settings``' values, in a few words, or None."""
    SAMPLER_NAMES = tuple(sampler_names.NAMES)  # minidiff.samplers.SAMPLER_NAMES, without importing torch

    def count(value):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    s = settings
    if s.sampler not in SAMPLER_NAMES:
        return f"sampler must be one of {', '.join(SAMPLER_NAMES)}, got {s.sampler!r}"
    if not count(s.steps):
        return f"steps must be a positive integer, got {s.steps!r}"
    if isinstance(s.cfg, bool) or not isinstance(s.cfg, (int, float)) or s.cfg < 0:
        return f"cfg must be a number of at least 0, got {s.cfg!r}"
    if (s.width is None) != (s.height is None):
        return "give both width and height (the native size), or neither"
    for name, size in (("width", s.width), ("height", s.height)):
        if size is not None and not (count(size) and size % 8 == 0):
            return f"{name} must be a positive multiple of 8 pixels, got {size!r}"
    def sampler_key(key):  # "lms", or "lms karras": a sampler with a σ spacing
        name, _, spacing = key.partition(" ")
        return name in SAMPLER_NAMES and spacing in ("", *sampler_names.SPACING_SUFFIXES)

    if not isinstance(s.min_steps, dict) or any(not sampler_key(k) or not count(v) for k, v in s.min_steps.items()):
        return f"min_steps must map sampler names (\"lms\", \"lms karras\") to positive integers, got {s.min_steps!r}"
    if s.vocabulary is not None and s.vocabulary not in VOCABULARIES:
        return f"vocabulary must be one of {', '.join(VOCABULARIES)} or null, got {s.vocabulary!r}"
    return None


def warn_about_steps(settings, sampler, steps):
    """Warn when ``steps`` is below the model's ``min_steps`` for ``sampler``."""
    name, spacing, _ = sampler_names.resolve(sampler)
    fewest = settings.min_steps.get(f"{name} {spacing}" if spacing else name, settings.min_steps.get(name))
    if fewest is not None and steps < fewest:
        warnings.warn(f"{sampler} needs at least {fewest} steps with this model (its {SETTINGS_FILE} says so), got "
                      f"{steps}: pass --steps {fewest} or more, or another --sampler")


def warn_about_size(settings, width, height, what="leave out --width/--height"):
    """Warn when width x height is not the size the model was trained at (when its settings say); ``what``: how
    to get that size."""
    native = (settings.width, settings.height)
    if settings.width is not None and (width, height) != native:
        warnings.warn(f"this model was trained at {native[0]}x{native[1]} px only, and {width}x{height} px may come "
                      f"out broken or repeated: {what} to draw at {native[0]}x{native[1]}")


def warn_about_prompt(settings, prompt):
    """Warn, for a model that speaks the shapes vocabulary, about words it has never seen and about more objects
    than its scenes ever had (two)."""
    if settings.vocabulary != "shapes":
        return
    from minidiff.data.captions import SHAPES
    from minidiff.train.bundled import caption_words

    words = re.findall(r"[^\W_]+", prompt.lower())
    known = set(caption_words())
    unseen = sorted(set(w for w in words if w not in known))
    if unseen:
        warnings.warn(f"this model was trained only on captions of coloured shapes and has never seen the words "
                      f"{', '.join(unseen)}: its picture will not follow them")
    objects = sum(w.removesuffix("s") in SHAPES for w in words)
    if objects > 2:
        warnings.warn(f"the prompt names {objects} objects, but this model was trained on scenes of one or two: "
                      f"it will draw at most two")
