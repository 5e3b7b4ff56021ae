"""The names samplers go by: minidiff's, A1111's and ComfyUI's, with and without a σ spacing."""

import pytest

from minidiff import sampler_names
from minidiff.cli import main
from minidiff.samplers import SAMPLER_NAMES, SAMPLERS, SchedulerConfig, make_sampler


def test_every_sampler_has_its_names_and_no_name_is_listed_without_a_sampler():
    assert set(sampler_names.NAMES) == set(SAMPLER_NAMES)


@pytest.mark.parametrize("spelling, expected", [
    ("DPM++ 2M Karras", ("dpmpp_2m", "karras", {})),
    ("dpmpp_2m", ("dpmpp_2m", None, {})),
    ("Euler a", ("euler_a", None, {})),
    ("euler_ancestral", ("euler_a", None, {})),
    ("LMS Karras", ("lms", "karras", {})),
    ("euler beta", ("euler", "beta", {})),
    ("  ddim ", ("ddim", None, {})),
])
def test_spellings_resolve_to_a_sampler_and_spacing(spelling, expected):
    assert sampler_names.resolve(spelling, SAMPLER_NAMES) == expected


@pytest.mark.parametrize("spelling, expected", [
    ("DPM++ 2M SDE Karras", ("dpmpp_2m_sde", "karras")),
    ("dpmpp_2m_sde_gpu", ("dpmpp_2m_sde", None)),
    ("UniPC", ("unipc", None)),
    ("PLMS", ("pndm", None)),
    ("LCM", ("lcm", None)),
    ("DPM2 a", ("dpm2_a", None)),
    ("DPM++ SDE", ("dpmpp_sde", None)),
])
def test_the_names_users_know_reach_the_new_samplers(spelling, expected):
    assert sampler_names.resolve(spelling)[:2] == expected


def test_comfyui_uni_pc_is_the_bh1_variant():
    assert sampler_names.resolve("uni_pc") == ("unipc", None, {"solver_type": "bh1"})


def test_an_unknown_name_is_one_line_naming_the_choices():
    with pytest.raises(ValueError) as info:
        sampler_names.resolve("dpm_fast", SAMPLER_NAMES)
    assert "\n" not in str(info.value) and "dpmpp_2m" in str(info.value) and "--list" in str(info.value)


@pytest.mark.parametrize("spelling", ["DPM++ 2M Karras", "lms karras", "Euler"])
def test_make_sampler_takes_any_spelling(spelling):
    name, spacing, _ = sampler_names.resolve(spelling, SAMPLER_NAMES)
    ours = make_sampler(spelling, SchedulerConfig(), 10)
    reference = make_sampler(name, SchedulerConfig(), 10, sigmas=spacing)
    assert ours.name == name and ours.spacing == spacing
    assert ours.timesteps.tolist() == reference.timesteps.tolist()


def test_an_explicit_karras_flag_wins_over_the_name():
    assert make_sampler("DPM++ 2M Karras", SchedulerConfig(), 10, karras=False).spacing is None


def test_a1111_names_written_into_pictures():
    assert sampler_names.a1111_name("dpmpp_2m", "karras") == "DPM++ 2M Karras"
    assert sampler_names.a1111_name("euler_a") == "Euler a"


def test_schedule_list_prints_every_sampler_with_its_names_and_class(capsys):
    assert main(["schedule", "--list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line and line.split()[0] in SAMPLERS}
    assert set(rows) == set(SAMPLER_NAMES)
    for name, sampler in SAMPLERS.items():
        assert sampler.diffusers_class in rows[name]
    assert "DPM++ 2M" in rows["dpmpp_2m"] and "euler_ancestral" in rows["euler_a"]


def test_schedule_takes_a1111_names_and_sigmas(capsys):
    assert main(["schedule", "--sampler", "Euler", "--steps", "4", "--sigmas", "exponential"]) == 0
    assert "σ spacing exponential" in capsys.readouterr().out
