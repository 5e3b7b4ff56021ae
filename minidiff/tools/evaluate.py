"""Measure how well a model draws what it is asked for, in the shapes world where the answer can be checked.

    1. prompts    single objects ("a red circle", every colour x shape) and pairs in a relation
                  ("a red circle above a blue square"), drawn from a seeded generator
    2. images     generated in batches, one seed per sample
    3. detection  ``minidiff.data.detect`` reads each picture back into colours, shapes and positions and
                  ``score`` says which requests of the prompt the picture meets; the report keeps both for
                  every sample (``prompt_results``), so a failed prompt can be found and looked at
    4. CLIP score 100 * cos(image embedding, prompt embedding) with the CLIP trained beside the model
                  (weights/clip/), when the model folder has one

Reconstruction: rendered scenes that fit such prompts, passed through the VAE (encode, decode) and read back
the same way. Every generated picture is drawn by that decoder too, so when these rates are low the VAE, not
the U-Net, is what limits the model. (They are a reference, not a strict bound: the scenes have the data's
mix of small and large objects, and a model that draws mostly large ones can score above them.)

ControlNet: edges of rendered scenes are the condition; the Canny edges of the generated picture are compared
with them. Edge F1 = 2PR / (P + R), where an edge pixel counts as matched if the other map has an edge within
one pixel. The same prompts without the ControlNet give the baseline.
"""

import os

import numpy as np
import torch

from minidiff.canny import canny, dilate
from minidiff.data.captions import COLORS, RELATION_PHRASES, RELATIONS, SHAPES, parse_prompt, with_article
from minidiff.data.detect import detect_objects, score
from minidiff.data.shapes import render_scenes, sample_scene

# The per-attribute rates the table shows, for each kind of prompt.
COLUMNS = {"single": ("color", "shape", "count", "all"), "pair": ("color", "shape", "relation", "count", "all")}


def make_prompts(n, seed=0):
    """n prompts, alternating a single object (colour x shape, in turn) and a related pair (random).

    Returns a list of (kind, prompt) with kind "single" or "pair"; the pair's objects differ in colour.
    """
    rng = np.random.default_rng(seed)
    singles = [with_article(f"{c} {s}") for c in COLORS for s in SHAPES]
    prompts = []
    for i in range(n):
        if i % 2 == 0:
            prompts.append(("single", singles[(i // 2) % len(singles)]))
            continue
        a, b = rng.choice(len(COLORS), 2, replace=False)
        s, t = rng.choice(len(SHAPES), 2)
        relation = RELATION_PHRASES[RELATIONS[rng.integers(len(RELATIONS))]][0]
        prompts.append(("pair", f"{with_article(f'{COLORS[a]} {SHAPES[s]}')} {relation} "
                                f"{with_article(f'{COLORS[b]} {SHAPES[t]}')}"))
    return prompts


def to_uint8(images):
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8, as the detector reads pictures."""
    return (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def generate(sd, prompts, seed, sampler, steps, guidance, batch_size=16, control=None):
    """Images (N, 3, H, W) in [0, 1] for N prompts; sample i uses seed + i. control: (N, 3, H, W) edges or None."""
    batch_size = 1 if control is not None else batch_size  # the pipeline takes one control picture per call
    images = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        # One generator per sample, so a sample does not depend on the batch it happens to be in.
        generator = [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(len(batch))]
        options = dict(steps=steps, sampler=sampler, guidance_scale=guidance, generator=generator, progress=False)
        if control is None:
            result = sd.text_to_image(batch, **options)
        else:
            result = sd.control(batch, control[start : start + len(batch)], **options)
        images.append(result.images)
    return torch.cat(images)


class CLIPScorer:
    """The CLIP trained with the model: ``__call__(images in [0, 1], prompts) -> 100 * cos`` per sample."""

    def __init__(self, folder, sd):
        from minidiff.train.clip import load_clip_folder

        self.clip = load_clip_folder(folder, sd.text_encoder)  # float32, on the CPU
        self.tokenizer = sd.tokenizer

    @torch.no_grad()
    def __call__(self, images, prompts):
        v = self.clip.embed_images(images.float() * 2 - 1)  # (N, P) unit vectors
        t = self.clip.embed_text(self.tokenizer(prompts).input_ids)  # (N, P)
        return 100 * (v * t).sum(-1)  # (N,)


def prompt_results(prompts, images, seed=None):
    """Each sample as the JSON report lists it: kind, prompt, seed (seed + i, when ``seed`` is given), what the
    detector read in the picture, and each request of the prompt met (True) or not ("all": every one of them)."""
    results = []
    for i, ((kind, prompt), image) in enumerate(zip(prompts, to_uint8(images))):
        detection = detect_objects(image)
        checks = score(parse_prompt(prompt), detection)
        objects = [{"color": o.color, "shape": o.shape, "size": o.size, "position": o.position}
                   for o in detection.objects]
        results.append({"kind": kind, "prompt": prompt, **({} if seed is None else {"seed": seed + i}),
                        "detected": {"background": detection.background, "objects": objects},
                        "checks": {name: bool(met) for name, met in checks.items()}})
    return results


def rates(results):
    """Per kind of prompt: the fraction of ``prompt_results`` meeting each request, plus the sample count."""
    table = {}
    for result in results:
        kind = result["kind"]
        entry = table.setdefault(kind, {"samples": 0, **{c: 0.0 for c in COLUMNS[kind]}})
        entry["samples"] += 1
        for column in COLUMNS[kind]:
            entry[column] += result["checks"].get(column, False)
    for entry in table.values():
        for column in entry:
            if column != "samples":
                entry[column] /= entry["samples"]
    return table


def attribute_rates(prompts, images):
    """``rates`` of the pictures ``images`` (N, 3, H, W) in [0, 1] against their (kind, prompt)s."""
    return rates(prompt_results(prompts, images))


def captioned_grid(images, results, columns=8):
    """The pictures (N, 3, H, W) in [0, 1] as one PIL image, ``columns`` a row, each above its prompt (wrapped,
    shortened to three lines) and a green "pass" or a red "FAIL": whether it met every request."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    n, _, height, width = images.shape
    line = font.getbbox("Ag")[3] + 2  # pixels a line of text takes
    chars = max(8, int(width / font.getlength("n")))  # about as many characters as fit in a tile's width
    tile_height, gap = height + 4 * line + 4, 2
    rows = -(-n // columns)  # ceil
    grid = Image.new("RGB", ((width + gap) * min(columns, n) - gap, (tile_height + gap) * rows - gap), "grey")
    for i, (picture, result) in enumerate(zip(to_uint8(images.cpu()).numpy(), results)):
        tile = Image.new("RGB", (width, tile_height), "white")  # text past its edge is cut off, not drawn on
        tile.paste(Image.fromarray(picture), (0, 0))
        draw = ImageDraw.Draw(tile)
        passed = result["checks"]["all"]
        draw.text((2, height + 2), "pass" if passed else "FAIL", fill=(0, 140, 0) if passed else (200, 0, 0),
                  font=font)
        for k, text in enumerate(textwrap.wrap(result["prompt"], chars, max_lines=3, placeholder="...")):
            draw.text((2, height + 2 + (k + 1) * line), text, fill="black", font=font)
        grid.paste(tile, ((width + gap) * (i % columns), (tile_height + gap) * (i // columns)))
    return grid


def reconstruction_prompts(samples, seed=0):
    """``samples`` rendered scenes, alternating one object and two in a relation as ``make_prompts`` does, each
    with the prompt ``make_prompts`` would write for it (colours and shapes, and the pair's relation).

    Returns the scenes and a list of (kind, prompt); sizes, positions and backgrounds are the generator's.
    """
    rng = np.random.default_rng(seed)
    scenes, prompts = [], []
    while len(scenes) < samples:
        scene, kind = sample_scene(rng), ("single", "pair")[len(scenes) % 2]
        names = [with_article(f"{o.color} {o.shape}") for o in scene.objects]
        if kind == "single" and len(names) == 1:
            prompt = names[0]
        elif kind == "pair" and len(names) == 2 and scene.objects[0].color != scene.objects[1].color:
            prompt = f"{names[0]} {RELATION_PHRASES[scene.relation][0]} {names[1]}"
        else:
            continue
        scenes.append(scene)
        prompts.append((kind, prompt))
    return scenes, prompts


@torch.no_grad()
def reconstruction_rates(vae, samples, seed=0, batch_size=50):
    """Attribute rates of ``reconstruction_prompts`` scenes after a VAE round trip (the mean latent, decoded):
    what the decoder allows the whole model.

    Returns (rates as ``attribute_rates`` gives them, the reconstructed pictures (N, 3, H, W) in [0, 1]).
    """
    scenes, prompts = reconstruction_prompts(samples, seed)
    size = vae.config.sample_size
    parameter = next(vae.parameters())
    pictures = []
    for start in range(0, samples, batch_size):
        images = render_scenes(scenes[start : start + batch_size], size).to(parameter) * 2 - 1  # (B, 3, H, W)
        decoded = vae.decode(vae.encode(images).mode())  # (B, 3, H, W), roughly in [-1, 1]
        pictures.append(((decoded.float() + 1) / 2).clamp(0, 1).cpu())
    pictures = torch.cat(pictures)
    return attribute_rates(prompts, pictures), pictures


def edge_f1(predicted, target):
    """F1 of two boolean edge maps (B, H, W), with a one-pixel tolerance each way. Returns (B,)."""
    precision = (predicted & dilate(target)).flatten(1).sum(1) / predicted.flatten(1).sum(1).clamp(min=1)
    recall = (target & dilate(predicted)).flatten(1).sum(1) / target.flatten(1).sum(1).clamp(min=1)
    return 2 * precision * recall / (precision + recall).clamp(min=1e-9)


def control_f1(sd, samples, seed, sampler, steps, guidance):
    """Mean edge F1 of generated pictures against the Canny edges of rendered scenes, with and without the ControlNet.

    The prompt is each scene's caption, so both runs are asked for the same picture; only one sees its edges.
    """
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(samples)]
    size = sd.unet.config.sample_size * sd.vae_scale_factor
    target = canny(render_scenes(scenes, size)) > 0  # (N, 1, H, W)
    prompts = [scene.caption for scene in scenes]
    scores = {}
    for name, control in (("controlnet", target.float().expand(-1, 3, -1, -1)), ("no control", None)):
        images = generate(sd, prompts, seed, sampler, steps, guidance, control=control)
        edges = canny(images) > 0
        scores[name] = float(edge_f1(edges[:, 0], target[:, 0]).mean())
    return scores


def evaluate(model, samples=200, seed=0, sampler="dpmpp_2m", steps=20, guidance=5.0, control_samples=0,
             device="cpu", reconstruction_samples=0):
    """Generate ``samples`` pictures from ``make_prompts`` and score them. Returns a JSON-ready dict (the rates,
    then every sample under "prompts", as ``prompt_results`` gives them) and the pictures (N, 3, H, W) in [0, 1].

    reconstruction_samples: also score that many VAE round trips of rendered scenes (``reconstruction_rates``).
    """
    from minidiff.pipelines import StableDiffusion

    sd = StableDiffusion.from_pretrained(model, device=device)
    prompts = make_prompts(samples, seed)
    images = generate(sd, [p for _, p in prompts], seed, sampler, steps, guidance)
    results = prompt_results(prompts, images, seed)
    report = {"model": str(model), "samples": samples, "seed": seed, "sampler": sampler, "steps": steps,
              "guidance": guidance, "attributes": rates(results)}
    if os.path.isdir(os.path.join(model, "clip")):
        clip_score = CLIPScorer(model, sd)(images.cpu(), [p for _, p in prompts])
        report["clip_score"] = {kind: float(clip_score[[k == kind for k, _ in prompts]].mean())
                                for kind in COLUMNS if any(k == kind for k, _ in prompts)}
    if reconstruction_samples:
        report["reconstruction"] = reconstruction_rates(sd.vae, reconstruction_samples, seed)[0]
    if control_samples and sd.controlnet is not None:
        report["edge_f1"] = control_f1(sd, control_samples, seed, sampler, steps, guidance)
    report["prompts"] = results  # last: the long list, after the summary
    return report, images


def format_table(report):
    """The report as a small text table: one row per kind of prompt, one column per request (percent)."""
    lines = [f"{report['samples']} samples, {report['sampler']} {report['steps']} steps, guidance {report['guidance']}, "
             f"seed {report['seed']}"]
    def row(kind, entry):
        cells = "  ".join(f"{c} {100 * entry[c]:5.1f}%" for c in COLUMNS[kind])
        return f"{kind:6s} (n={entry['samples']:3d})  {cells}"

    for kind, entry in report["attributes"].items():
        clip = report.get("clip_score", {}).get(kind)
        lines.append(row(kind, entry) + (f"  clip {clip:5.1f}" if clip else ""))
    for kind, entry in report.get("reconstruction", {}).items():
        lines.append(row(kind, entry) + "  <- rendered scenes through the VAE, not generated")
    if "edge_f1" in report:
        lines.append("edge F1: " + ", ".join(f"{k} {v:.3f}" for k, v in report["edge_f1"].items()))
    return "\n".join(lines)
