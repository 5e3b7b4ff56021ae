"""The names samplers go by: minidiff's, and the ones AUTOMATIC1111's web UI and ComfyUI print.

Image tools name a sampler and its σ spacing together ("DPM++ 2M Karras") or apart (ComfyUI's sampler
"dpmpp_2m" with scheduler "karras"). ``resolve`` turns any of these spellings into minidiff's sampler name, the σ
spacing the name carries (or None) and the scheduler settings it implies (ComfyUI's "uni_pc" is UniPC's bh1
variant). This module imports nothing, so the command line can check names before torch loads.
"""

# minidiff name -> (A1111's name, ComfyUI's names). The first A1111 name is the one written into a picture's
# parameters; an empty string: that tool has no such sampler.
NAMES = {
    "ddpm": ("DDPM", ("ddpm",)),
    "ddim": ("DDIM", ("ddim",)),
    "pndm": ("PLMS", ("plms",)),
    "euler": ("Euler", ("euler",)),
    "euler_a": ("Euler a", ("euler_ancestral",)),
    "heun": ("Heun", ("heun",)),
    "lms": ("LMS", ("lms",)),
    "dpm2": ("DPM2", ("dpm_2",)),
    "dpm2_a": ("DPM2 a", ("dpm_2_ancestral",)),
    "dpmpp_2m": ("DPM++ 2M", ("dpmpp_2m",)),
    "dpmpp_2m_sde": ("DPM++ 2M SDE", ("dpmpp_2m_sde", "dpmpp_2m_sde_gpu")),
    "dpmpp_sde": ("DPM++ SDE", ("dpmpp_sde", "dpmpp_sde_gpu")),
    "dpmpp_2s": ("", ()),
    "deis": ("DEIS", ("deis",)),
    "unipc": ("UniPC", ("uni_pc_bh2",)),
    "lcm": ("LCM", ("lcm",)),
}
# Spellings that imply scheduler settings beside the sampler: name -> (sampler, settings).
# ComfyUI's uni_pc and A1111's UniPC (its default variant) are UniPC's bh1; ComfyUI's uni_pc_bh2 and minidiff's
# unipc (diffusers' default, or the model's solver_type) the bh2.
WITH_SETTINGS = {"uni_pc": ("unipc", {"solver_type": "bh1"})}
# A1111 appends the σ spacing to the sampler's name ("DPM++ 2M Karras", "DPM++ 2M SDE Exponential"); minidiff
# takes the same for every spacing: "euler beta".
SPACING_SUFFIXES = ("karras", "exponential", "beta")


def _key(text):
    """Spellings compare without case, spaces, dashes or underscores: "DPM++ 2M" == "dpm++_2m"."""
    return "".join(ch for ch in text.lower() if ch not in " _-")


def _table(known):
    table = {}
    for name in known:
        a1111, comfy = NAMES.get(name, ("", ()))
        for spelling in (name, a1111, *comfy):
            if spelling:
                table[_key(spelling)] = (name, {})
    for spelling, (name, settings) in WITH_SETTINGS.items():
        if name in known:
            table[_key(spelling)] = (name, settings)
    return table


def resolve(text, known=tuple(NAMES)):
    """(sampler name, σ spacing or None, scheduler settings) for any spelling of a sampler in ``known``.

    >>> resolve("DPM++ 2M Karras")
    ('dpmpp_2m', 'karras', {})
    """
    if text in known:  # minidiff's own name keeps the config's settings ("unipc" and ComfyUI's "uni_pc" share a key)
        return text, None, {}
    table = _table(known)
    key = _key(text)
    if key in table:
        return (*table[key][:1], None, dict(table[key][1]))
    for spacing in SPACING_SUFFIXES:
        if key.endswith(spacing) and key[: -len(spacing)] in table:
            name, settings = table[key[: -len(spacing)]]
            return name, spacing, dict(settings)
    raise ValueError(f"unknown sampler {text!r}; choose one of {', '.join(known)} (or their A1111/ComfyUI names, "
                     f"e.g. \"DPM++ 2M Karras\"; `python -m minidiff schedule --list` shows them all)")


def a1111_name(name, spacing=None):
    """The sampler's name as A1111 writes it in a picture's parameters ("DPM++ 2M Karras"), else minidiff's."""
    a1111 = NAMES.get(name, ("", ()))[0] or name
    return f"{a1111} {spacing.capitalize()}" if spacing else a1111
