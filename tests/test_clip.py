"""minidiff's CLIP text encoder equals transformers' CLIPTextModel, weight for weight and output for output."""

import json

import pytest
import safetensors.torch
import torch
import transformers

from minidiff.models import attention as attention_module
from minidiff.models.clip import CLIPTextModel, clip_text_state_dict
from minidiff.models.config import CLIPTextConfig
from minidiff.tools.bench.configs import SD15_TEXT_ENCODER, SD21_TEXT_ENCODER

VOCAB = 1000
SMALL_CONFIGS = {
    # Like SD 1.x: quick_gelu, the legacy eos_token_id 2 (end token found by argmax), padded with <|endoftext|>.
    "sd1_like": dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=3,
                     hidden_act="quick_gelu", eos_token_id=2, projection_dim=64),
    # Like SD 2.x: gelu, legacy eos_token_id 2, padded with "!" (id 0).
    "sd2_like": dict(hidden_size=80, intermediate_size=160, num_attention_heads=5, num_hidden_layers=2,
                     hidden_act="gelu", eos_token_id=2, projection_dim=32),
    # A corrected config: the end token is id 7, found as its first occurrence (argmax of ids would be wrong).
    "eos_id_7": dict(hidden_size=48, intermediate_size=96, num_attention_heads=3, num_hidden_layers=2,
                     hidden_act="quick_gelu", eos_token_id=7, projection_dim=48),
}
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-6}


def rel_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def randomize(model, seed):
    """Weights far from any initialisation scheme: embeddings ~ N(0, 1), layers ~ N(0, 0.2), norms 1 + N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if "embedding" in name:
                p.copy_(noise)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def prompt_ids(config_name, batch=4, length=77, seed=0):
    """Token rows shaped like the tokenizer's: start token, random ids, end token, padding."""
    g = torch.Generator().manual_seed(seed)
    bos, eos = VOCAB - 2, (VOCAB - 1 if SMALL_CONFIGS[config_name]["eos_token_id"] == 2 else 7)
    pad = 0 if config_name == "sd2_like" else eos
    ids = torch.randint(8, VOCAB - 2, (batch, length), generator=g)
    for row, n in enumerate([3, 20, length - 2, 40][:batch]):
        ids[row, 0], ids[row, n + 1] = bos, eos
        ids[row, n + 2 :] = pad
    return ids


@pytest.fixture(scope="module", params=list(SMALL_CONFIGS))
def pair(request, tmp_path_factory):
    """(config name, transformers model, minidiff model) with the same random weights, loaded from the saved file."""
    torch.manual_seed(0)
    kwargs = SMALL_CONFIGS[request.param]
    hf_config = transformers.CLIPTextConfig(vocab_size=VOCAB, bos_token_id=VOCAB - 2, pad_token_id=1, **kwargs)
    reference = transformers.CLIPTextModel(hf_config)
    randomize(reference, seed=1)
    folder = tmp_path_factory.mktemp(request.param)
    reference.save_pretrained(folder)
    config = CLIPTextConfig.from_dict(json.loads((folder / "config.json").read_text()))
    ours = CLIPTextModel(config)
    ours.load_state_dict(clip_text_state_dict(safetensors.torch.load_file(folder / "model.safetensors")), strict=True)
    reference = transformers.CLIPTextModel.from_pretrained(folder, attn_implementation="sdpa")
    return request.param, reference.eval(), ours.eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_equal_transformers(pair, dtype):
    name, reference, ours = pair
    reference, ours = reference.to(dtype), ours.to(dtype)
    ids = prompt_ids(name)
    with torch.no_grad():
        expected = reference(ids, output_hidden_states=True)
        skip1 = reference.final_layer_norm(expected.hidden_states[-2])  # diffusers' encode_prompt with clip_skip=1
        got = ours(ids)
        got_skip1 = ours(ids, clip_skip=1).last_hidden_state
    tol = TOLERANCE[dtype]
    assert got.last_hidden_state.shape == (4, 77, ours.config.hidden_size)
    assert rel_error(got.last_hidden_state, expected.last_hidden_state) <= tol
    assert rel_error(got.pooler_output, expected.pooler_output) <= tol
    assert rel_error(got_skip1, skip1) <= tol
    assert len(got.hidden_states) == len(expected.hidden_states) == ours.config.num_hidden_layers + 1
    for a, b in zip(got.hidden_states, expected.hidden_states):
        assert rel_error(a, b) <= tol


def test_pooler_output_is_taken_at_the_end_token(pair):
    name, _, ours = pair
    ids = prompt_ids(name)
    with torch.no_grad():
        out = ours(ids)
    end_positions = [4, 21, 76, 41]  # where prompt_ids put the end token
    for row, position in enumerate(end_positions):
        assert torch.equal(out.pooler_output[row], out.last_hidden_state[row, position])


def test_fused_and_reference_attention_agree(pair, monkeypatch):
    name, _, ours = pair
    ours = ours.float()
    ids = prompt_ids(name)
    with torch.no_grad():
        fused = ours(ids).last_hidden_state
        monkeypatch.setattr(attention_module, "USE_FUSED_ATTENTION", False)
        plain = ours(ids).last_hidden_state
    assert rel_error(plain, fused) <= 1e-5


def test_tokens_never_see_later_tokens():
    config = CLIPTextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                            num_hidden_layers=2, eos_token_id=7)
    torch.manual_seed(0)
    model = CLIPTextModel(config).eval()
    ids = prompt_ids("eos_id_7", batch=1)
    changed = ids.clone()
    changed[0, 30:] = 9
    with torch.no_grad():
        a, b = model(ids).last_hidden_state, model(changed).last_hidden_state
    assert torch.equal(a[:, :30], b[:, :30]) and not torch.allclose(a[:, 30:], b[:, 30:])


def test_transformers_loads_minidiff_config_and_weights(tmp_path):
    config = CLIPTextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                            num_hidden_layers=2, hidden_act="gelu", projection_dim=32)
    ours = CLIPTextModel(config).eval()
    randomize(ours, seed=3)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    safetensors.torch.save_file(ours.state_dict(), tmp_path / "model.safetensors")
    reference, info = transformers.CLIPTextModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert reference.config.hidden_act == "gelu" and reference.config.eos_token_id == 2
    ids = prompt_ids("sd2_like")
    with torch.no_grad():
        assert rel_error(ours(ids).last_hidden_state, reference.eval()(ids).last_hidden_state) <= 1e-5


def test_state_dicts_of_both_file_layouts_load():
    config = CLIPTextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                            num_hidden_layers=1)
    weights = CLIPTextModel(config).state_dict()
    assert all(key.startswith("text_model.") for key in weights)
    transformers5 = {key.removeprefix("text_model."): value for key, value in weights.items()}
    old_hub_file = {**weights, "text_model.embeddings.position_ids": torch.arange(77)[None]}
    for state_dict in (weights, transformers5, old_hub_file):
        assert clip_text_state_dict(state_dict).keys() == weights.keys()
        CLIPTextModel(config).load_state_dict(clip_text_state_dict(state_dict), strict=True)


@pytest.mark.parametrize("sd_config", [SD15_TEXT_ENCODER, SD21_TEXT_ENCODER], ids=["sd15", "sd21"])
def test_full_size_names_and_shapes_equal_transformers(sd_config):
    with torch.device("meta"):
        ours = CLIPTextModel(CLIPTextConfig.from_dict(sd_config))
        reference = transformers.CLIPTextModel(transformers.CLIPTextConfig(**sd_config))
    ours_shapes = {key: tuple(p.shape) for key, p in ours.state_dict().items()}
    # transformers 5 drops the "text_model." prefix that Stable Diffusion's files (and minidiff) use.
    reference_shapes = {"text_model." + key: tuple(p.shape) for key, p in reference.state_dict().items()}
    assert ours_shapes == reference_shapes
    assert ours_shapes["text_model.embeddings.token_embedding.weight"] == (49408, sd_config["hidden_size"])


def test_config_round_trips_and_ignores_unrelated_keys():
    config = CLIPTextConfig.from_dict({**SD21_TEXT_ENCODER, "transformers_version": "4.25", "dropout": 0.0})
    assert config.hidden_act == "gelu" and config.num_hidden_layers == 23
    assert CLIPTextConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["model_type"] == "clip_text_model"
    assert CLIPTextConfig() == CLIPTextConfig.from_dict(SD15_TEXT_ENCODER)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_act": "relu"}, "hidden_act must be one of"),
        ({"num_attention_heads": 5}, "split evenly"),
        ({"model_type": "clip"}, "clip_text_model"),
        ({"eos_token_id": [2, 3]}, "single integer"),
    ],
)
def test_config_rejects_unsupported_values(change, message):
    with pytest.raises(ValueError, match=message):
        CLIPTextConfig.from_dict({**SD15_TEXT_ENCODER, **change})


def test_clip_skip_out_of_range_is_rejected():
    config = CLIPTextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                            num_hidden_layers=2)
    with pytest.raises(ValueError, match="clip_skip"):
        CLIPTextModel(config)(torch.zeros(1, 77, dtype=torch.long), clip_skip=2)
