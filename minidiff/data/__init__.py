"""The captioned-shapes data: scenes and their captions (``shapes``, ``captions``); ``detect`` reads images back."""

from minidiff.data.captions import COLORS, POSITIONS, RELATIONS, SHAPES, SIZES, make_caption, parse_prompt
from minidiff.data.shapes import Scene, SceneObject, make_dataset_grid, render_scenes, sample_batch, sample_scene
