"""A scheduler config minidiff writes back means to diffusers what the file it was read from meant.

Starting from the scheduler files Stable Diffusion 1.5 and 2.1 publish (neither has ``timestep_spacing``), the dict
``save_components`` and ``convert`` write (``scheduler_json``) must build, in every diffusers scheduler class that
``verify`` compares with (and PNDM, which model_index.json names), the same scheduler as the published file itself:
same settings, same timesteps. A key the file did not have stays out, never null, so each class applies its own
default, as minidiff's samplers do.
"""

import inspect
import json

import diffusers
import pytest

from minidiff.loading.saving import scheduler_json
from minidiff.samplers import SchedulerConfig
from minidiff.tools.verify import SCHEDULERS

# scheduler/scheduler_config.json of runwayml/stable-diffusion-v1-5, as published.
SD15_SCHEDULER_FILE = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
# scheduler/scheduler_config.json of stabilityai/stable-diffusion-2-1 (768 px, v-prediction), as published.
SD21_SCHEDULER_FILE = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.8.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
PUBLISHED = {"sd15": SD15_SCHEDULER_FILE, "sd21": SD21_SCHEDULER_FILE}
SCHEDULER_CLASSES = sorted({*SCHEDULERS.values(), "PNDMScheduler"})


def written_back(published):
    """What save_components writes for a model whose scheduler file is ``published``, read back from JSON."""
    return json.loads(json.dumps(scheduler_json(SchedulerConfig.from_dict(published))))


def settings(scheduler):
    """The scheduler's constructor arguments as it was built (what decides its behaviour)."""
    names = inspect.signature(type(scheduler).__init__).parameters.keys() - {"self"}
    return {name: scheduler.config[name] for name in names}


@pytest.mark.parametrize("model", PUBLISHED)
def test_a_written_scheduler_config_holds_no_null_and_no_timestep_spacing_the_file_lacked(model):
    written = written_back(PUBLISHED[model])
    assert None not in written.values()
    assert "timestep_spacing" not in written


@pytest.mark.parametrize("class_name", SCHEDULER_CLASSES)
@pytest.mark.parametrize("model", PUBLISHED)
def test_a_written_scheduler_config_builds_the_published_files_scheduler_in_diffusers(model, class_name):
    scheduler_class = getattr(diffusers, class_name)
    ours = scheduler_class.from_config(written_back(PUBLISHED[model]))
    published = scheduler_class.from_config(PUBLISHED[model])
    assert settings(ours) == settings(published)
    for scheduler in (ours, published):
        scheduler.set_timesteps(3)  # refused ("None is not supported") when timestep_spacing was written as null
    assert ours.timesteps.tolist() == published.timesteps.tolist()

