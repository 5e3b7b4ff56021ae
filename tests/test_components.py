"""Loading and saving whole models: diffusers folders (read from and written for diffusers), single files, the
``convert`` command, and the errors for missing, malformed or mismatched files."""

import dataclasses
import json
import shutil
import threading
from pathlib import Path

import diffusers
import pytest
import torch
import transformers

import tiny_pipeline
from test_scheduler_config import SD15_SCHEDULER_FILE
from minidiff import cli
from minidiff.commands import model_settings
from minidiff.loading import CheckpointError, load_components, save_components, save_single_file
from minidiff.loading import components as components_module
from minidiff.loading.components import Components, skip_random_init
from minidiff.loading.safetensors_file import read_safetensors, write_safetensors
from minidiff.loading.single_file import join_original_checkpoint
from minidiff.models.clip import CLIPTextModel, clip_text_state_dict
from minidiff.models.config import CLIPTextConfig, UNetConfig, VAEConfig
from minidiff.models.tokenizer import EOS, CLIPTokenizer, find_openclip_vocab, load_openclip_bpe, reduced_vocabulary
from minidiff.models.unet import UNet2DConditionModel
from minidiff.models.vae import AutoencoderKL
from minidiff.samplers import SchedulerConfig
from minidiff.tools.verify import SCHEDULERS

NETWORKS = ("text_encoder", "vae", "unet", "controlnet")
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"  # the bundled model, with a settings file


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny random SD model with a ControlNet, saved by diffusers and transformers themselves."""
    return tiny_pipeline.save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-sd")


@pytest.fixture(scope="module")
def reference(folder):
    return reference_state_dicts(folder)


def reference_state_dicts(path):
    """The weights as diffusers / transformers load them, under minidiff's names."""
    text = transformers.CLIPTextModel.from_pretrained(path / "text_encoder").state_dict()
    return {
        "text_encoder": clip_text_state_dict(text),
        "vae": diffusers.AutoencoderKL.from_pretrained(path / "vae").state_dict(),
        "unet": diffusers.UNet2DConditionModel.from_pretrained(path / "unet").state_dict(),
        "controlnet": diffusers.ControlNetModel.from_pretrained(path / "controlnet").state_dict(),
    }


def assert_same_weights(components, expected, dtype=None):
    for name, want in expected.items():
        got = getattr(components, name).state_dict()
        assert got.keys() == want.keys(), name
        for key in want:
            w = want[key].to(dtype) if dtype is not None and want[key].is_floating_point() else want[key]
            assert got[key].dtype == w.dtype and torch.equal(got[key], w), f"{name}: {key}"


def test_diffusers_folder_loads_every_weight_exactly(folder, reference):
    components = load_components(folder)
    assert_same_weights(components, reference)
    assert components.scheduler_config == SchedulerConfig.from_json(folder / "scheduler")
    assert components.tokenizer.vocab == CLIPTokenizer.from_pretrained(folder / "tokenizer").vocab
    assert components.source == str(folder)
    assert not components.unet.training


def test_saved_folder_loads_in_diffusers_and_in_minidiff(folder, reference, tmp_path):
    components = load_components(folder)
    out = tmp_path / "saved"
    save_components(components, out)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    assert_same_weights(
        Components(None, pipe.text_encoder, pipe.vae, pipe.unet, None),
        {k: reference[k] for k in ("vae", "unet")},
    )
    assert clip_text_state_dict(pipe.text_encoder.state_dict()).keys() == reference["text_encoder"].keys()
    assert pipe.scheduler.config.prediction_type == "epsilon" and pipe.scheduler.config.steps_offset == 1
    ids = transformers.CLIPTokenizer.from_pretrained(out / "tokenizer")("a red circle").input_ids
    assert ids == components.tokenizer(["a red circle"]).input_ids[0, : len(ids)].tolist()
    assert_same_weights(load_components(out), reference)

    with pytest.raises(FileExistsError, match="already exists"):
        save_components(components, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]  # no temporary folder left behind


def test_sharded_networks_load_in_diffusers_and_in_minidiff(folder, reference, tmp_path):
    out = tmp_path / "sharded"
    save_components(load_components(folder), out, max_shard_bytes=20_000)  # the tiny U-Net is ~300 KB
    unet_files = sorted(p.name for p in (out / "unet").iterdir())
    shards = [name for name in unet_files if name.endswith(".safetensors")]
    assert len(shards) > 2 and "diffusion_pytorch_model.safetensors.index.json" in unet_files
    assert all(name.startswith("diffusion_pytorch_model-0") and f"-of-{len(shards):05d}" in name for name in shards)
    weight_map = json.loads((out / "unet" / "diffusion_pytorch_model.safetensors.index.json").read_text())["weight_map"]
    for name in shards:  # at most 20 KB of tensors (+ the header), unless one tensor alone is larger
        held = [key for key, shard in weight_map.items() if shard == name]
        assert (out / "unet" / name).stat().st_size <= 20_000 + 4096 or len(held) == 1, name
    assert_same_weights(load_components(out), reference)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    assert_same_weights(Components(None, None, pipe.vae, pipe.unet, None), {k: reference[k] for k in ("vae", "unet")})


def test_a_broken_shard_index_is_a_clear_error(folder, tmp_path):
    out = tmp_path / "sharded"
    save_components(load_components(folder), out, max_shard_bytes=20_000)
    index_path = out / "unet" / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first_key, first_shard = next(iter(index["weight_map"].items()))

    def broken(change, match):
        weight_map = dict(index["weight_map"])
        change(weight_map)
        index_path.write_text(json.dumps({**index, "weight_map": weight_map}))
        with pytest.raises(CheckpointError, match=match):
            load_components(out)

    broken(lambda m: m.update({first_key: "../vae/diffusion_pytorch_model.safetensors"}), "not a .safetensors file name")
    broken(lambda m: m.pop(first_key), f"{first_shard}: holds '{first_key}'")
    broken(lambda m: m.update({"extra.weight": first_shard}), "1 tensors are in no shard, e.g. 'extra.weight'")
    index_path.write_text("[]")
    with pytest.raises(CheckpointError, match="not a safetensors index"):
        load_components(out)


def test_dtype_and_fp16_variant(folder, reference, tmp_path):
    half = load_components(folder, dtype=torch.float16)
    assert_same_weights(half, reference, dtype=torch.float16)
    out = tmp_path / "fp16"
    save_components(half, out)
    for weights in out.glob("*/*.safetensors"):
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    with pytest.raises(CheckpointError, match=r"text_encoder: no model.safetensors.*variant='fp16'"):
        load_components(out)
    loaded = load_components(out, variant="fp16", dtype=torch.float16)
    assert_same_weights(loaded, reference, dtype=torch.float16)


def copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def settings_in(folder):
    """The JSON object of ``folder``'s minidiff_settings.json, or None when it has none."""
    path = Path(folder) / components_module.SETTINGS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def test_a_saved_model_carries_its_settings_file_and_a_model_without_one_writes_none(folder, tmp_path):
    assert components_module.SETTINGS_FILE == model_settings.SETTINGS_FILE  # the one file, named in two places
    bundled = load_components(WEIGHTS, dtype=torch.float16)
    assert bundled.settings == settings_in(WEIGHTS) and bundled.settings["sampler"] == "euler_a"
    save_components(bundled, tmp_path / "bundled-copy")
    assert settings_in(tmp_path / "bundled-copy") == settings_in(WEIGHTS)
    assert model_settings.read_settings(tmp_path / "bundled-copy") == model_settings.read_settings(WEIGHTS)

    plain = load_components(folder)
    assert plain.settings is None
    save_components(plain, tmp_path / "plain-copy")
    assert not (tmp_path / "plain-copy" / components_module.SETTINGS_FILE).exists()


def test_a_settings_file_that_is_not_a_json_object_is_an_error_naming_it(folder, tmp_path):
    broken = copy_of(folder, tmp_path)
    (broken / components_module.SETTINGS_FILE).write_text('["euler_a", 20]')
    with pytest.raises(CheckpointError, match=rf"{broken / components_module.SETTINGS_FILE}: expected a JSON object"):
        load_components(broken)


def test_missing_paths_and_files_are_clear_errors(folder, tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        load_components(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors: not a Stable Diffusion .* single"):
        load_components(folder / "unet" / "diffusion_pytorch_model.safetensors")
    broken = copy_of(folder, tmp_path)
    shutil.rmtree(broken / "vae")
    with pytest.raises(CheckpointError, match=r"missing the component folders \['vae'\]"):
        load_components(broken)


def test_malformed_and_unsupported_configs_are_clear_errors(folder, tmp_path):
    broken = copy_of(folder, tmp_path)
    config = broken / "unet" / "config.json"
    good = config.read_text()
    config.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"unet/config.json: not valid JSON"):
        load_components(broken)
    config.write_text(json.dumps({**json.loads(good), "class_embed_type": "timestep"}))
    with pytest.raises(CheckpointError, match=r"unet/config.json: UNet config: class_embed_type='timestep'"):
        load_components(broken)
    (broken / "vae" / "config.json").unlink()
    config.write_text(good)
    with pytest.raises(CheckpointError, match=r"vae/config.json: missing"):
        load_components(broken)


def test_config_that_does_not_match_the_weights_lists_the_mismatch(folder, tmp_path):
    broken = copy_of(folder, tmp_path)
    config = broken / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "cross_attention_dim": 32, "layers_per_block": 1}))
    with pytest.raises(CheckpointError) as error:
        load_components(broken)
    message = str(error.value)
    assert "diffusion_pytorch_model.safetensors: the weights do not fit UNet2DConditionModel" in message
    assert "unexpected keys: down_blocks.0.resnets.1.conv1.bias" in message
    to_k = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    assert f"shape mismatches: {to_k} (network [64, 32], file [64, 64])" in message


def test_pickle_weights_in_a_folder_need_opt_in(folder, reference, tmp_path):
    broken = copy_of(folder, tmp_path)
    weights = broken / "vae" / "diffusion_pytorch_model.safetensors"
    torch.save(read_safetensors(weights), weights.with_suffix(".bin"))
    weights.unlink()
    with pytest.raises(CheckpointError, match="pass --allow-pickle to read the .bin file"):
        load_components(broken)
    with pytest.warns(UserWarning, match="pickle"):
        loaded = load_components(broken, allow_pickle=True)
    assert_same_weights(loaded, {"vae": reference["vae"]})


# ------------------------------------------------------------------ single files

def single_file_model(kind, seed=0):
    """A tiny model with everything a single file can describe: SD conventions (32 norm groups, 64-dim CLIP
    heads, the full CLIP vocabulary), so the configs read back from the shapes equal the ones built here."""
    sd1 = kind == "sd1"
    text = CLIPTextModel(CLIPTextConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=1,
        hidden_act="quick_gelu" if sd1 else "gelu", projection_dim=768 if sd1 else 512,
    ))
    unet = UNet2DConditionModel(UNetConfig(
        block_out_channels=(64, 128), layers_per_block=1, cross_attention_dim=64,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8 if sd1 else (1, 2), use_linear_projection=not sd1, upcast_attention=not sd1,
        sample_size=64 if sd1 else 96,  # SD 2.x v-prediction: 768 px
    ))
    vae = AutoencoderKL(VAEConfig(
        block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=512 if sd1 else 768,
    ))
    g = torch.Generator().manual_seed(seed)
    for model in (text, unet, vae):
        for p in model.parameters():
            p.data.normal_(0, 0.05, generator=g)
        model.eval()
    tokenizer = CLIPTokenizer(*load_openclip_bpe(find_openclip_vocab()), pad_token=EOS if sd1 else "!")
    scheduler = SchedulerConfig(prediction_type="epsilon" if sd1 else "v_prediction")
    return Components(tokenizer, text, vae, unet, scheduler)


@pytest.mark.parametrize("kind", ["sd1", "sd2"])
def test_single_file_round_trip(kind, tmp_path):
    model = single_file_model(kind)
    path = tmp_path / "model.safetensors"
    save_single_file(model, path)
    keys = read_safetensors(path).keys()
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert ("cond_stage_model.model.token_embedding.weight" in keys) == (kind == "sd2")

    if kind == "sd2":
        with pytest.raises(CheckpointError, match="model.safetensors: this is an SD 2.x checkpoint.*prediction_type"):
            load_components(path)
    loaded = load_components(path, prediction_type=None if kind == "sd1" else "v_prediction")
    for name in ("text_encoder", "vae", "unet"):
        assert getattr(loaded, name).config == getattr(model, name).config, name
    assert_same_weights(loaded, {name: getattr(model, name).state_dict() for name in ("text_encoder", "vae", "unet")})
    assert loaded.scheduler_config.prediction_type == model.scheduler_config.prediction_type
    assert loaded.tokenizer.pad_token == model.tokenizer.pad_token


def test_single_file_refusals(folder, tmp_path):
    components = load_components(folder)  # has a ControlNet
    with pytest.raises(ValueError, match="ControlNet, which would be lost.*convert --without-controlnet"):
        save_single_file(components, tmp_path / "x.safetensors")
    components.controlnet = None
    with pytest.raises(ValueError, match="only as .safetensors"):
        save_single_file(components, tmp_path / "x.ckpt")
    # A VAE whose widths don't divide into SD's 32 norm groups cannot come back from a config-less single file.
    components.vae = AutoencoderKL(VAEConfig(block_out_channels=(8, 16, 16, 16), norm_num_groups=8, layers_per_block=1))
    save_single_file(components, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match=r"x.safetensors: the VAE's block widths \[8, 16, 16, 16\] are not"):
        load_components(tmp_path / "x.safetensors")  # single files carry no config: SD's 32 norm groups are assumed



def small_vocabulary_model():
    """A single-file-shaped model whose tokenizer and text encoder have a reduced vocabulary, as the bundled
    model's do (683 tokens there)."""
    model = single_file_model("sd1")
    model.tokenizer = CLIPTokenizer(*reduced_vocabulary(*load_openclip_bpe(find_openclip_vocab()), ["a red circle"]))
    model.text_encoder = CLIPTextModel(dataclasses.replace(model.text_encoder.config,
                                                           vocab_size=len(model.tokenizer.vocab)))
    return model


def test_a_model_without_clips_vocabulary_is_refused_as_a_single_file_before_anything_is_written(tmp_path):
    model = small_vocabulary_model()
    n = len(model.tokenizer.vocab)
    with pytest.raises(ValueError, match=f"text encoder has {n} token embeddings and the tokenizer {n} tokens.*"
                                         "read back with CLIP's, of 49408 tokens.*keep this model as a diffusers"):
        save_single_file(model, tmp_path / "y.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_reading_a_single_file_without_clips_vocabulary_says_so_before_asking_for_open_clip(tmp_path, monkeypatch):
    model = small_vocabulary_model()  # written by some other tool: minidiff itself refuses to
    networks = {name: getattr(model, name) for name in ("unet", "vae", "text_encoder")}
    configs = {name: network.config.to_dict() for name, network in networks.items()}
    write_safetensors(join_original_checkpoint({n: m.state_dict() for n, m in networks.items()}, "sd1", configs),
                      tmp_path / "y.safetensors")

    def open_clip_missing():
        raise FileNotFoundError("CLIP's vocabulary file was not found: install open_clip")

    monkeypatch.setattr(components_module, "find_openclip_vocab", open_clip_missing)
    n = len(model.tokenizer.vocab)
    with pytest.raises(CheckpointError, match=f"y.safetensors: the text encoder has {n} token embeddings, not the "
                                              "49408 of CLIP's vocabulary.*whatever is installed"):
        load_components(tmp_path / "y.safetensors")


# ------------------------------------------------------------------ the convert command

def convert(*args, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", {"convert": cli.COMMANDS["convert"]})
    code = cli.main(["convert", *map(str, args)])
    return code, capsys.readouterr()


def test_convert_command(tmp_path, monkeypatch, capsys):
    model = single_file_model("sd1", seed=1)
    save_components(model, tmp_path / "folder")
    weights = {name: getattr(model, name).state_dict() for name in ("text_encoder", "vae", "unet")}

    code, out = convert(tmp_path / "folder", tmp_path / "model.safetensors", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and "wrote" in out.out
    code, out = convert(tmp_path / "model.safetensors", tmp_path / "half", "--dtype", "float16",
                        monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    half_unet = read_safetensors(tmp_path / "half" / "unet" / "diffusion_pytorch_model.safetensors")
    assert half_unet["conv_in.weight"].dtype == torch.float16
    assert_same_weights(load_components(tmp_path / "half", dtype=torch.float16), weights, dtype=torch.float16)

    pickle_file = tmp_path / "model.ckpt"
    torch.save({"state_dict": read_safetensors(tmp_path / "model.safetensors")}, pickle_file)
    code, out = convert(pickle_file, tmp_path / "from-ckpt", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "refusing to read a pickle checkpoint" in out.err and "--allow-pickle" in out.err
    assert not (tmp_path / "from-ckpt").exists()
    with pytest.warns(UserWarning, match="pickle"):
        code, out = convert(pickle_file, tmp_path / "from-ckpt", "--allow-pickle", monkeypatch=monkeypatch,
                            capsys=capsys)
    assert code == 0
    assert_same_weights(load_components(tmp_path / "from-ckpt"), weights)

    code, out = convert(tmp_path / "folder", tmp_path / "half", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "already exists" in out.err


def test_convert_without_controlnet_writes_the_rest_as_a_single_file_or_folder(folder, reference, tmp_path,
                                                                              monkeypatch, capsys):
    code, out = convert(folder, tmp_path / "x.safetensors", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "--without-controlnet" in out.err and not (tmp_path / "x.safetensors").exists()
    code, _ = convert(folder, tmp_path / "x.safetensors", "--without-controlnet", monkeypatch=monkeypatch,
                      capsys=capsys)
    loaded = load_components(tmp_path / "x.safetensors")
    assert code == 0 and loaded.controlnet is None
    assert_same_weights(loaded, {name: reference[name] for name in ("text_encoder", "vae", "unet")})
    code, _ = convert(folder, tmp_path / "x", "--without-controlnet", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and (tmp_path / "x" / "unet").is_dir() and not (tmp_path / "x" / "controlnet").exists()


def test_convert_keeps_a_folders_settings_file_in_a_new_folder_and_says_a_single_file_has_no_room(
        folder, tmp_path, monkeypatch, capsys):
    source = copy_of(folder, tmp_path)
    settings = {"sampler": "ddim", "steps": 2, "cfg": 3.0, "width": 32, "height": 32, "min_steps": {"lms": 30}}
    (source / components_module.SETTINGS_FILE).write_text(json.dumps(settings))
    code, out = convert(source, tmp_path / "half", "--dtype", "float16", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and settings_in(tmp_path / "half") == settings and "minidiff_settings.json" not in out.out
    code, out = convert(source, tmp_path / "x.safetensors", "--without-controlnet", monkeypatch=monkeypatch,
                        capsys=capsys)
    assert code == 0 and f"note: a single file has no room for {source}'s minidiff_settings.json" in out.out


def test_convert_refuses_a_small_vocabulary_model_as_a_single_file_in_one_line(tmp_path, monkeypatch, capsys):
    save_components(small_vocabulary_model(), tmp_path / "folder")
    code, out = convert(tmp_path / "folder", tmp_path / "y.safetensors", "--without-controlnet",
                        monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and out.err.startswith("error: ") and out.err.count("error") == 1
    assert "read back with CLIP's" in out.err.splitlines()[0] and "keep this model as a diffusers folder" in out.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_convert_keeps_a_missing_timestep_spacing_missing_so_every_diffusers_scheduler_samples(folder, tmp_path,
                                                                                               monkeypatch, capsys):
    source = tmp_path / "sd15-scheduler"  # SD 1.5's scheduler file says nothing of timestep_spacing
    shutil.copytree(folder, source, ignore=shutil.ignore_patterns("controlnet"))
    (source / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_FILE))
    code, _ = convert(source, tmp_path / "converted", monkeypatch=monkeypatch, capsys=capsys)
    written = json.loads((tmp_path / "converted" / "scheduler" / "scheduler_config.json").read_text())
    assert code == 0 and "timestep_spacing" not in written and None not in written.values()
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tmp_path / "converted", safety_checker=None)
    for class_name in ("PNDMScheduler", *SCHEDULERS.values()):
        getattr(diffusers, class_name).from_config(pipe.scheduler.config).set_timesteps(3)  # refuses a null spacing


def test_skip_random_init_leaves_every_random_fill_undone():
    torch.manual_seed(0)
    fills = [torch.nn.init.normal_, torch.nn.init.uniform_, torch.nn.init.kaiming_uniform_,
             torch.nn.init.kaiming_normal_, torch.nn.init.xavier_uniform_, torch.nn.init.xavier_normal_,
             torch.nn.init.trunc_normal_, torch.Tensor.normal_, torch.Tensor.uniform_]
    with skip_random_init():
        tensors = [fill(torch.zeros(8, 8)) for fill in fills]
    assert all(torch.equal(t, torch.zeros(8, 8)) for t in tensors)
    assert torch.nn.init.normal_(torch.zeros(8, 8)).std() > 0.5  # and after it, they fill again


def test_skip_random_init_changes_torch_nn_init_for_no_other_thread():
    torch.manual_seed(0)
    init = {name: getattr(torch.nn.init, name) for name in dir(torch.nn.init)}
    filled = []
    with torch.device("meta"), skip_random_init():
        embedding = torch.nn.Embedding(8, 4)  # built for a checkpoint's weights: no values needed
        assert {name: getattr(torch.nn.init, name) for name in dir(torch.nn.init)} == init
        worker = threading.Thread(target=lambda: filled.append(torch.nn.init.normal_(torch.zeros(1000))))
        worker.start()
        worker.join()
    assert embedding.weight.is_meta and filled[0].std() > 0.5  # the other thread's layer got its random values
