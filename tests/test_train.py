"""Training: each stage runs on tiny networks, stopping and resuming changes nothing, a fresh ControlNet adds
nothing, and an exported model loads in minidiff, transformers and diffusers.

Everything runs on 32x32 scenes with networks a few thousand parameters wide, so the file takes seconds.
"""

import dataclasses
import json

import pytest
import torch

from minidiff.models.config import UNetConfig, VAEConfig
from minidiff.models.controlnet import ControlNetModel
from minidiff.models.unet import UNet2DConditionModel
from minidiff.schedule import NoiseSchedule
from minidiff.train import bundled
from minidiff.train.clip import CLIPTrainConfig, ImageTowerConfig, clip_loss, train_clip
from minidiff.train.common import EMA, TrainConfig, fit, learning_rate, load_checkpoint, slim_checkpoint
from minidiff.train.controlnet import ControlNetTrainConfig, edge_condition, train_controlnet
from minidiff.train.unet import LatentBatches, UNetTrainConfig, train_unet
from minidiff.train.vae import VAETrainConfig, train_vae

SIZE = 32  # pixels; the four-block VAE below maps them to 4 x 4 x 4 latents, as the bundled one does 128 -> 16
TINY = dict(batch_size=4, image_size=SIZE, log_every=4, checkpoint_every=1000, warmup_steps=4)


@pytest.fixture(scope="module")
def tokenizer():
    return bundled.make_tokenizer()


def tiny_vae_config():
    return VAEConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=SIZE)


def tiny_text_config(tokenizer):
    return dataclasses.replace(bundled.text_config(tokenizer), hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2, projection_dim=32)


def tiny_unet_config():
    return UNetConfig(sample_size=SIZE // 8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=2)


def tiny_tower_config():
    return ImageTowerConfig(image_size=SIZE, channels=(8, 16, 16), embed_dim=32)


def mean(values):
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def stages(tmp_path_factory, tokenizer):
    """Run the four stages for a few steps each, as the recipe chains them; returns the networks and losses."""
    out = str(tmp_path_factory.mktemp("run"))
    torch.manual_seed(0)
    vae_cfg = VAETrainConfig(steps=24, lr=3e-3, **TINY)
    vae = train_vae(tiny_vae_config(), vae_cfg, out)
    clip_cfg = CLIPTrainConfig(steps=16, lr=2e-3, **{**TINY, "batch_size": 8})
    clip = train_clip(tiny_text_config(tokenizer), tiny_tower_config(), tokenizer, clip_cfg, out, projection_dim=32)
    schedule = NoiseSchedule.from_config(bundled.scheduler_config())
    unet_cfg = UNetTrainConfig(steps=16, lr=2e-3, ema_decay=0.9, **TINY)
    batches = LatentBatches(vae, clip.text_model, tokenizer, unet_cfg)
    unet = train_unet(tiny_unet_config(), batches, schedule, unet_cfg, out)
    cn_cfg = ControlNetTrainConfig(steps=4, lr=1e-3, ema_decay=0.9, **TINY)
    controlnet = train_controlnet(unet, batches, schedule, cn_cfg, out)
    losses = {name: torch.load(f"{out}/{name}.pt", weights_only=True)["losses"]
              for name in ("vae", "clip", "unet", "controlnet")}
    return dict(out=out, vae=vae, clip=clip, unet=unet, controlnet=controlnet, losses=losses)


def test_every_stage_trains_with_finite_falling_losses(stages):
    losses = stages["losses"]
    for name, values in losses.items():
        assert all(torch.isfinite(torch.tensor(values))), name
    assert mean(losses["vae"][-4:]) < 0.9 * mean(losses["vae"][:4])  # reconstruction improves fast
    assert mean(losses["clip"][-4:]) < mean(losses["clip"][:4])  # InfoNCE falls from chance (log 8 ~ 2.1)
    assert mean(losses["unet"][-4:]) < mean(losses["unet"][:4])  # eps-MSE starts near 1 and falls
    assert mean(losses["controlnet"]) < 1.5  # starts where the U-Net left off: nothing explodes
    assert stages["vae"].config.scaling_factor > 0


def test_vae_scaling_factor_gives_unit_variance_latents(stages):
    vae = stages["vae"]
    from minidiff.train.common import draw_scenes, render

    images, _ = render(draw_scenes(123, 0, 32), VAETrainConfig(**TINY), "cpu")
    with torch.no_grad():
        z = vae.scale_latents(vae.encode(images).sample(torch.Generator().manual_seed(0)))
    assert 0.7 < z.std().item() < 1.4


def test_fresh_controlnet_leaves_the_unet_unchanged():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(tiny_unet_config()).eval()
    for p in unet.parameters():  # non-zero everywhere, conv_out included, so a real difference would show
        p.data.normal_(0, 0.1)
    controlnet = ControlNetModel.from_unet(unet).eval()
    z, text = torch.randn(2, 4, 4, 4), torch.randn(2, 77, 32)
    condition = torch.rand(2, 3, SIZE, SIZE)  # the condition image is 8x the latent size
    with torch.no_grad():
        down, mid = controlnet(z, 500, text, condition)
        plain = unet(z, 500, text)
        steered = unet(z, 500, text, down_block_additional_residuals=down, mid_block_additional_residual=mid)
    assert all(r.abs().max() == 0 for r in (*down, mid))
    assert torch.equal(plain, steered)


def test_edge_condition_is_a_white_on_black_canny_map():
    images = -torch.ones(1, 3, 32, 32)
    images[:, 0, 8:24, 8:24] = 1.0  # a red square on black
    edges = edge_condition(images)
    assert edges.shape == (1, 3, 32, 32) and set(edges.unique().tolist()) == {0.0, 1.0}
    assert edges[0, 0, 16, 7:9].max() == 1 and edges[0, 0, 16, 16] == 0  # on the outline, not inside


class FixedEmbeddings(torch.nn.Module):
    """A stand-in CLIP for clip_loss: images embed as themselves, caption ids[:, 1] as row ids[:, 1] of ``table``."""

    def __init__(self, table, logit_scale):
        super().__init__()
        self.table = table
        self.logit_scale = torch.nn.Parameter(torch.tensor(logit_scale))

    def embed_images(self, x):
        return torch.nn.functional.normalize(x, dim=-1)

    def embed_text(self, ids):
        return torch.nn.functional.normalize(self.table[ids[:, 1]], dim=-1)


def test_clip_loss_counts_repeated_captions_as_right_answers():
    """With image i == text i embeddings, duplicates make the plain identity target wrong; ours is not."""
    torch.manual_seed(0)
    table = torch.randn(10, 16)
    model = FixedEmbeddings(table, 4.0)
    ids = torch.tensor([[0, 1], [0, 2], [0, 1], [0, 3]])  # captions 0 and 2 are the same
    images = table[ids[:, 1]]
    loss = clip_loss(model, images, ids)
    s = model.logit_scale.exp() * torch.nn.functional.normalize(images, dim=-1) @ \
        torch.nn.functional.normalize(images, dim=-1).T
    target = torch.tensor([[.5, 0, .5, 0], [0, 1, 0, 0], [.5, 0, .5, 0], [0, 0, 0, 1]])
    expected = -(target * s.log_softmax(1)).sum(1).mean()  # symmetric matrix: both directions equal
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)


def test_clip_loss_with_hard_negatives_adds_them_to_the_image_side_only():
    """Negatives widen each image's softmax to 2N captions; the caption -> image side stays N x N. A negative
    that equals another image's caption counts as right for that image."""
    torch.manual_seed(0)
    table = torch.randn(10, 16)
    model = FixedEmbeddings(table, 3.0)
    ids = torch.tensor([[0, 1], [0, 2], [0, 3]])
    negatives = torch.tensor([[0, 4], [0, 5], [0, 1]])  # the third is image 0's own caption
    images = torch.randn(3, 16)
    loss = clip_loss(model, images, ids, negatives)

    v = torch.nn.functional.normalize(images, dim=-1)
    t = torch.nn.functional.normalize(table[torch.tensor([1, 2, 3, 4, 5, 1])], dim=-1)
    s = model.logit_scale.exp() * v @ t.T  # (3, 6)
    image_target = torch.tensor([[.5, 0, 0, 0, 0, .5], [0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]])
    image_side = -(image_target * s.log_softmax(1)).sum(1).mean()
    text_side = -s[:, :3].T.log_softmax(1).diagonal().mean()
    torch.testing.assert_close(loss, 0.5 * (image_side + text_side), rtol=1e-6, atol=0)
    assert loss > clip_loss(model, images, ids) - 1e-6  # more competitors never make it easier here


def test_clip_stage_with_hard_negatives_trains(tmp_path, tokenizer):
    config = CLIPTrainConfig(steps=3, lr=2e-3, hard_negatives=True, **{**TINY, "batch_size": 8, "log_every": 1})
    train_clip(tiny_text_config(tokenizer), tiny_tower_config(), tokenizer, config, str(tmp_path), projection_dim=32)
    losses = torch.load(tmp_path / "clip.pt", weights_only=True)["losses"]
    assert len(losses) == 3 and all(0 < loss < 10 for loss in losses)


def tiny_fit(out, steps, resume, time_limit=None):
    """A tiny U-Net trained on a toy objective that uses scenes, the generator, autocast-free CPU and the EMA."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 3, 1))
    config = TrainConfig(steps=steps, lr=1e-2, ema_decay=0.9, image_size=16, batch_size=4, warmup_steps=3,
                         checkpoint_every=1000, log_every=2)
    from minidiff.train.common import render

    def loss_fn(scenes, generator):
        images, _ = render(scenes, config, "cpu")
        noise = torch.randn(images.shape, generator=generator)
        return ((model(images + 0.1 * noise) - images) ** 2).mean()

    losses = fit("toy", model, loss_fn, config, out, resume=resume, time_limit=time_limit)
    return model, losses


def test_stop_and_resume_gives_the_uninterrupted_weights(tmp_path):
    straight, straight_losses = tiny_fit(str(tmp_path / "a"), steps=8, resume=False)
    tiny_fit(str(tmp_path / "b"), steps=4, resume=False)
    resumed, resumed_losses = tiny_fit(str(tmp_path / "b"), steps=8, resume=True)
    assert resumed_losses == straight_losses  # same batches, same noise, same optimizer state
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)  # the EMA weights, bit for bit


def test_slim_checkpoint_resumes_from_float16_ema_weights(tmp_path):
    model, _ = tiny_fit(str(tmp_path), steps=4, resume=False)
    slim_checkpoint(str(tmp_path / "toy.pt"), str(tmp_path / "slim.pt"))
    state = torch.load(tmp_path / "slim.pt", weights_only=True)
    assert state["optimizer"] is None and state["ema"] is None and state["step"] == 4
    assert all(v.dtype == torch.float16 for v in state["model"].values())
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 3, 1))
    ema = EMA(fresh, 0.9)
    step, _, has_optimizer = load_checkpoint(str(tmp_path / "slim.pt"), fresh, None, ema)
    assert step == 4 and not has_optimizer
    for k, v in model.state_dict().items():  # the EMA restarts from the (EMA) weights it was given
        torch.testing.assert_close(ema.shadow[k], v.half().float(), rtol=0, atol=0)


def test_time_limit_stops_with_a_checkpoint(tmp_path):
    _, losses = tiny_fit(str(tmp_path), steps=1000, resume=False, time_limit=0)
    assert len(losses) == 1 and torch.load(tmp_path / "toy.pt", weights_only=True)["step"] == 1


def test_reduced_vocabulary_splits_captions_as_full_clip_does(tokenizer):
    from minidiff.models.tokenizer import CLIPTokenizer, find_openclip_vocab, load_openclip_bpe

    full = CLIPTokenizer(*load_openclip_bpe(find_openclip_vocab()))
    caption = "a picture of a big purple heart to the left of a small orange star on a white background"
    assert tokenizer.tokenize(caption) == full.tokenize(caption)
    assert len(tokenizer.vocab) < 1000  # 512 byte tokens, the caption words' merges, 2 specials


def test_export_writes_a_folder_that_minidiff_transformers_and_diffusers_load(stages, tokenizer, tmp_path):
    from diffusers import ControlNetModel as DiffusersControlNet
    from diffusers import UNet2DConditionModel as DiffusersUNet
    from transformers import CLIPTokenizer as HFTokenizer

    from minidiff.loading.components import load_components

    folder = tmp_path / "model"
    bundled.export(folder, tokenizer, stages["clip"].text_model, stages["vae"], stages["unet"],
                   stages["controlnet"], stages["clip"])
    loaded = load_components(folder)
    assert loaded.settings is None  # export was given none: the folder has no minidiff_settings.json
    for name in ("unet", "vae", "text_encoder", "controlnet"):
        ours = dict(text_encoder=stages["clip"].text_model).get(name, stages.get(name))
        for (k, a), b in zip(ours.state_dict().items(), getattr(loaded, name).state_dict().values()):
            assert torch.equal(a.half().float(), b), (name, k)  # float16 on disk, nothing else lost
    prompt = "a red circle above a blue square"
    assert HFTokenizer.from_pretrained(folder / "tokenizer")(prompt)["input_ids"] == \
        tokenizer(prompt).input_ids[0][: len(tokenizer.encode(prompt)) + 2].tolist()
    DiffusersUNet.from_pretrained(folder / "unet")
    DiffusersControlNet.from_pretrained(folder / "controlnet")
    clip_config = json.loads((folder / "clip" / "config.json").read_text())
    assert ImageTowerConfig.from_dict(clip_config["image_tower"]) == tiny_tower_config()


def test_import_of_the_bundled_folder_resumes_at_its_steps_and_exports_it_unchanged(tmp_path):
    from pathlib import Path

    from minidiff.loading.safetensors_file import read_safetensors

    weights = Path(__file__).resolve().parents[1] / "weights"
    steps = bundled.import_folder(weights, tmp_path / "run")
    assert steps == json.loads((weights / "training.json").read_text())["steps"]
    unet = UNet2DConditionModel(bundled.unet_config())
    step, losses, has_optimizer = load_checkpoint(str(tmp_path / "run" / "unet.pt"), unet)
    assert (step, losses, has_optimizer) == (steps["unet"], [], False)  # resumes there, AdamW warms up again

    bundled.export_checkpoints(str(tmp_path / "run"), str(tmp_path / "again"))
    files = [p.relative_to(weights) for p in weights.rglob("*.safetensors")]
    assert {f.parts[0] for f in files} == {"vae", "text_encoder", "clip", "unet", "controlnet"}
    assert (tmp_path / "again" / "unet" / "diffusion_pytorch_model.safetensors.index.json").read_bytes() == \
        (weights / "unet" / "diffusion_pytorch_model.safetensors.index.json").read_bytes()
    for f in files:
        a, b = read_safetensors(weights / f), read_safetensors(tmp_path / "again" / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    assert json.loads((tmp_path / "again" / "training.json").read_text())["steps"] == steps


def test_export_writes_the_imported_models_settings_file_else_the_recipes(tmp_path):
    from pathlib import Path

    from minidiff.loading.components import SETTINGS_FILE

    weights = Path(__file__).resolve().parents[1] / "weights"
    run = tmp_path / "run"
    bundled.import_folder(weights, run)
    assert json.loads((run / SETTINGS_FILE).read_text()) == json.loads((weights / SETTINGS_FILE).read_text())
    edited = {**bundled.SETTINGS, "sampler": "dpmpp_2m", "steps": 12}  # as if the imported folder had said so
    (run / SETTINGS_FILE).write_text(json.dumps(edited))
    bundled.export_checkpoints(str(run), str(tmp_path / "imported"))
    assert json.loads((tmp_path / "imported" / SETTINGS_FILE).read_text()) == edited

    (run / SETTINGS_FILE).unlink()  # trained here from scratch: the recipe's settings
    bundled.export_checkpoints(str(run), str(tmp_path / "fresh"))
    assert json.loads((tmp_path / "fresh" / SETTINGS_FILE).read_text()) == bundled.SETTINGS


def test_a_stage_without_the_stages_it_builds_on_names_the_commands_that_make_them(tmp_path, capsys):
    from minidiff import cli

    out = tmp_path / "run"
    code = cli.main(["train", "unet", "--out", str(out), "--device", "cpu"])  # the README's example, on nothing
    line = capsys.readouterr().err.splitlines()[0]
    assert code == 1 and line.startswith("error: 'unet' builds on the checkpoints of vae and clip, which are not in")
    assert f"(python -m minidiff train vae --out {out}, then clip)" in line
    assert f"(python -m minidiff train import --out {out})" in line
    assert not out.exists()  # refused before anything ran

    out.mkdir()
    for name in ("vae.pt", "vae.json", "clip.pt"):  # only their presence is checked before a stage starts
        (out / name).touch()
    with pytest.raises(FileNotFoundError, match=r"'controlnet' builds on the checkpoints of unet, .*train it first "
                                                r"\(python -m minidiff train unet --out"):
        bundled.run_stage("controlnet", str(out), device="cpu")
    (out / "vae.json").unlink()
    with pytest.raises(FileNotFoundError, match="'vae' --decoder-only builds on the checkpoints of vae, which"):
        bundled.run_stage("vae", str(out), device="cpu", train_encoder=False)


def test_learning_rate_warms_up_holds_and_cools_down_to_zero():
    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10, cooldown_steps=40)
    rates = [learning_rate(config, step) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == 1.0  # warm-up: 1/10 ... 10/10
    assert rates[10:60] == [1.0] * 50  # constant until the cool-down starts at step 60
    assert rates[60] == 1.0 and rates[80] == pytest.approx(0.5) and rates[99] == pytest.approx(1 / 40)
    assert all(a >= b for a, b in zip(rates[60:], rates[61:]))  # falls steadily
    # A resumed run without AdamW moments warms up again from where it resumed, and still ends cooled down.
    assert learning_rate(config, 70, warm_from=70) == pytest.approx(0.1)
    assert learning_rate(config, 95, warm_from=70) == pytest.approx(5 / 40)
    no_cooldown = TrainConfig(steps=100, lr=1.0, warmup_steps=10)
    assert learning_rate(no_cooldown, 99) == 1.0


def test_decoder_fine_tuning_keeps_the_latent_space(tmp_path):
    out = str(tmp_path)
    first = train_vae(tiny_vae_config(), VAETrainConfig(steps=4, lr=3e-3, **TINY), out)
    before = {k: v.clone() for k, v in first.state_dict().items()}
    config = VAETrainConfig(steps=10, lr=3e-3, train_encoder=False, **TINY)
    tuned = train_vae(first.config, config, out)  # resumes at step 4 from out/vae.pt, decoder only
    after = tuned.state_dict()
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and decoder and len(encoder) + len(decoder) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in encoder)  # the same latents for every image
    assert sum(not torch.equal(before[k], after[k]) for k in decoder) > len(decoder) // 2
    assert tuned.config.scaling_factor == first.config.scaling_factor  # not measured again
    assert torch.load(f"{out}/vae.pt", weights_only=True)["step"] == 10
