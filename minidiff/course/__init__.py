"""The classroom: the exercises of the lessons and the checker that runs a learner's answer against minidiff.

    harness.py      the exercise record, loading a learner's function, running it, comparing, the command line
    forward.py      lesson 1: add_noise
    samplers.py     lesson 3: ddim_step, euler_step, plms_step
    unet.py         lesson 6: cross_attention
    guidance.py     lesson 7: classifier_free_guidance
    controlnet.py   lesson 10: zero_convolution

The course sits on top of minidiff: it imports the schedule, the samplers, the networks and the pipelines, and none
of them imports it. ``python -m minidiff.check NAME`` is its command (minidiff/check.py forwards to ``main``).

Adding an exercise: write the stub and the solution under ``lessons/``, then a checker in the lesson's module here,
decorated with ``@exercise(name, lesson, summary)``: it takes the learner's function and raises ``Mismatch`` on a
wrong answer (``compare`` does the comparing). tests/test_exercises.py then checks that the stub fails and the
solution passes.
"""

# Each lesson module registers its checkers in EXERCISES as it is imported, so this order is the order of --list.
from minidiff.course import forward, samplers, unet, guidance, controlnet  # noqa: F401
from minidiff.course.harness import EXERCISES, main, run_check  # noqa: F401
