"""Tools that measure minidiff: bench (speed and memory against diffusers), and, of the same kind, verify (every
component against diffusers) and evaluate (the bundled model's prompt adherence).

The tools sit on top of the package: they import the core (schedule, samplers, models, pipelines, loading), and
the core never imports them, so the learner's path from noise schedule to pipeline holds lesson code only.
"""
