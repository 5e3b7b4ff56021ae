"""minidiff's CLIP tokenizer gives the same ids as transformers' CLIPTokenizer, prompt for prompt."""

import json
import random

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from minidiff.models import tokenizer as tokenizer_module
from minidiff.models.tokenizer import (
    BOS,
    EOS,
    CLIPTokenizer,
    byte_tokens,
    find_openclip_vocab,
    load_openclip_bpe,
    reduced_vocabulary,
)

WORDS = [
    "a", "photo", "of", "an", "astronaut", "riding", "horse", "on", "Mars", "highly", "detailed", "octane",
    "render", "trending", "ArtStation", "by", "Greg", "Rutkowski", "portrait", "cyberpunk", "city", "sunset",
    "oil", "painting", "McDonald's", "cat", "dogs", "USA", "iPhone", "x86_64", "e-mail", "state-of-the-art",
    "antidisestablishmentarianism", "Photorealistic", "hyperrealism", "UHD", "f/1.8", "35mm", "bokeh", "the",
]
CONTRACTIONS = [
    "don't", "it's", "you're", "we've", "I'm", "they'll", "he'd", "DON'T", "It'S", "WE'VE", "rock'n'roll",
    "'til", "o'clock", "ain't", "y'all", "''s", "'''", "'", "'S'", "cats'",
]
UNICODE = [
    "café", "naïve", "Ñandú", "Zürich", "Straße", "ẞ", "ΟΔΟΣ", "Москва", "İstanbul", "ı", "ǅungla", "ﬁsh",
    "中文", "日本語のテキスト", "한국어", "\u1100\u1161", "e\u0301", "A\u030a", "ＡＢＣａｂｃ", "Ⅻ", "½", "٣٤", "x²",
    "résumé", "Ωmega", "עברית", "العربية", "हिन्दी", "ไทย", "Ça", "ÉCOLE",
]
# Letters added to Unicode after version 14.0, whose tables Python 3.11's str.lower reads. First line: capitals
# whose lowercase Python does not know (Cyrillic Tje U+1C89, three Latin ones, Garay, Beria Erfe). Second line:
# letters that the `regex` module knows but transformers' `tokenizers` library does not yet (to it, symbols).
NEWER_UNICODE = [
    "\u1c89", "\ua7cb", "\ua7cc", "\ua7da", "\U00010d50", "\U00016ea0",
    "\u0558", "\u088f", "\ua7f1", "\U00010940", "\U00011db0", "\U00018e00", "\U000323b0", "\U0003d000",
]
EMOJI = ["😀", "🐱", "👩\u200d🚀", "🇫🇷", "👍🏽", "❤️", "🎨🖌️", "☕", "✨✨✨", "🙂🙃"]
NUMBERS = ["0", "42", "2024", "3.14159", "1,000,000", "-7", "1e-5", "007", "#1", "50%", "$100", "12:30", "1/2", "8K"]
PUNCTUATION = [
    ",", ".", "!", "!!!", "?", "...", "(", ")", "((masterpiece))", "[best quality]", "{x|y}", ":", ";", "-", "--",
    "_", "&", "@", "*", "/", "\\", '"quoted"', "“curly”", "’", "—", "…", "<", ">", "~", "`", "^", "\x1c", "\x00",
    EOS, BOS, "<|EndOfText|>", "<|STARTOFTEXT|>", "a!b", "!<|endoftext|>",
]
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\r\n", " \u00a0 ", "\u3000", "\u2003", "\x0b", "\x85", "\u200b", ""]
FRAGMENTS = [WORDS, WORDS, WORDS, CONTRACTIONS, UNICODE, NEWER_UNICODE, EMOJI, NUMBERS, PUNCTUATION]
CASES = [str, str, str, str.upper, str.title, str.swapcase]


def generated_prompts(n, seed=0):
    """Random prompts mixing words, contractions, scripts, emoji, numbers, punctuation and odd whitespace."""
    rng = random.Random(seed)
    prompts = ["", " ", "\t\n", "a photo of a cat"]
    while len(prompts) < n:
        length = rng.choice([rng.randint(1, 12)] * 3 + [rng.randint(10, 40)] * 2 + [rng.randint(60, 120)])
        parts = []
        for _ in range(length):
            parts.append(rng.choice(CASES)(rng.choice(rng.choice(FRAGMENTS))))
            parts.append(rng.choice(SPACES))
        prompts.append("".join(parts))
    return prompts


@pytest.fixture(scope="module")
def clip_vocab():
    try:
        path = find_openclip_vocab()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return load_openclip_bpe(path)


@pytest.fixture(scope="module")
def prompts():
    return generated_prompts(2500)


def reference_ids(reference, prompts, max_length=77):
    batch = reference(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    return batch.input_ids


def test_openclip_vocabulary_has_clip_size_and_known_ids(clip_vocab):
    vocab, merges = clip_vocab
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab[BOS] == 49406 and vocab[EOS] == 49407 and vocab["!"] == 0 and vocab["!</w>"] == 256
    tokenizer = CLIPTokenizer(vocab, merges)
    assert tokenizer.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert tokenizer.tokenize("Cats' whiskers") == ["cats</w>", "'</w>", "whis", "kers</w>"]


@pytest.mark.parametrize("pad_token", [EOS, "!"], ids=["pad_endoftext_sd1", "pad_exclamation_sd2"])
def test_ids_equal_transformers_on_generated_prompts(clip_vocab, prompts, pad_token, tmp_path):
    vocab, merges = clip_vocab
    ours = CLIPTokenizer(vocab, merges, pad_token=pad_token)
    ours.save_pretrained(tmp_path)
    out = ours(prompts)
    assert out.input_ids.shape == (len(prompts), 77) and out.input_ids.dtype == torch.long
    assert sum(n > 0 for n in out.truncated[:500]) > 50  # the generator does produce over-long prompts
    reference = transformers.CLIPTokenizer.from_pretrained(tmp_path)
    assert reference.pad_token == pad_token and reference.model_max_length == 77
    expected = reference_ids(reference, prompts)
    mismatches = [p for p, a, b in zip(prompts, out.input_ids, expected) if not torch.equal(a, b)]
    assert not mismatches, f"{len(mismatches)} prompts differ, e.g. {mismatches[:3]!r}"
    untruncated = reference(prompts[:500]).input_ids
    assert out.truncated[:500] == [max(0, len(ids) - 77) for ids in untruncated]


@pytest.fixture(scope="module")
def both_tokenizers(clip_vocab, tmp_path_factory):
    ours = CLIPTokenizer(*clip_vocab)
    folder = tmp_path_factory.mktemp("clip_tokenizer")
    ours.save_pretrained(folder)
    return ours, transformers.CLIPTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("character", NEWER_UNICODE, ids=[f"U+{ord(c):04X}" for c in NEWER_UNICODE])
def test_ids_equal_transformers_on_letters_newer_than_python_unicode_tables(both_tokenizers, character):
    # Lowercasing and the letter class must follow transformers' Unicode tables, not Python's or `regex`'s.
    ours, reference = both_tokenizers
    prompts = [f"a cat {character}", f"{character}1", f"x{character}y", character * 3, f"'{character}!"]
    assert torch.equal(ours(prompts).input_ids, reference_ids(reference, prompts))


ANY_CHARACTER = st.characters(exclude_categories=["Cs"])  # lone surrogates are not text: UTF-8 cannot spell them


@settings(max_examples=300)
@given(st.text(st.one_of(st.sampled_from("aZ1 '!.\t"), st.sampled_from(NEWER_UNICODE), ANY_CHARACTER), max_size=16))
def test_ids_equal_transformers_on_random_text_of_any_characters(both_tokenizers, text):
    ours, reference = both_tokenizers
    assert ours([text]).input_ids.tolist() == reference_ids(reference, [text]).tolist()


def test_transformers_slow_and_fast_requests_give_the_same_ids(clip_vocab, prompts, tmp_path):
    # transformers 5 has one CLIP tokenizer, backed by `tokenizers`: asking for the slow one gives it too.
    CLIPTokenizer(*clip_vocab).save_pretrained(tmp_path)
    slow = transformers.AutoTokenizer.from_pretrained(tmp_path, use_fast=False)
    fast = transformers.AutoTokenizer.from_pretrained(tmp_path, use_fast=True)
    assert type(slow) is type(fast) is transformers.CLIPTokenizer is transformers.CLIPTokenizerFast
    assert torch.equal(CLIPTokenizer(*clip_vocab)(prompts[:500]).input_ids, reference_ids(slow, prompts[:500]))


def test_pad_token_exclamation_is_cut_out_of_the_prompt_like_stable_diffusion_2(clip_vocab):
    # With "!" as pad token, transformers treats every "!" in a prompt as that special token (id 0, not "!</w>").
    vocab, merges = clip_vocab
    sd1, sd2 = CLIPTokenizer(vocab, merges), CLIPTokenizer(vocab, merges, pad_token="!")
    assert sd1.encode("wow!!") == [vocab["wow</w>"], vocab["!!</w>"]]
    assert sd2.encode("wow!!") == [vocab["wow</w>"], 0, 0]
    assert sd2(["cat"]).input_ids[0, :4].tolist() == [49406, vocab["cat</w>"], 49407, 0]


def test_truncation_keeps_start_and_end_tokens(clip_vocab):
    tokenizer = CLIPTokenizer(*clip_vocab)
    out = tokenizer(["cat " * 100, "cat"], max_length=10)
    assert out.input_ids.shape == (2, 10) and out.truncated == [92, 0]
    assert out.input_ids[0].tolist() == [49406] + [2368] * 8 + [49407]
    assert out.input_ids[1].tolist() == [49406, 2368] + [49407] * 8
    assert tokenizer("cat").input_ids.shape == (1, 77)


def test_decode_inverts_encode_up_to_normalisation(clip_vocab):
    tokenizer = CLIPTokenizer(*clip_vocab)
    assert tokenizer.decode(tokenizer.encode("A  Photo of café 😀,  4K")) == "a photo of café 😀, 4 k"


def test_from_pretrained_reads_the_folders_transformers_writes(clip_vocab, prompts, tmp_path):
    vocab, merges = clip_vocab
    CLIPTokenizer(vocab, merges, pad_token="!").save_pretrained(tmp_path / "legacy")
    reference = transformers.CLIPTokenizer.from_pretrained(tmp_path / "legacy")
    reference.save_pretrained(tmp_path / "v5")  # transformers 5 writes tokenizer.json, no vocab.json
    assert not (tmp_path / "v5" / "vocab.json").exists()
    loaded = CLIPTokenizer.from_pretrained(tmp_path / "v5")
    assert loaded.pad_token == "!" and loaded.max_length == 77 and loaded.vocab == vocab
    assert torch.equal(loaded(prompts[:300]).input_ids, reference_ids(reference, prompts[:300]))


def test_from_pretrained_takes_pad_token_from_special_tokens_map_over_tokenizer_config(clip_vocab, tmp_path):
    CLIPTokenizer(*clip_vocab).save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": EOS, "model_max_length": 77}))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": "!"}))
    assert CLIPTokenizer.from_pretrained(tmp_path).pad_token == "!"
    (tmp_path / "special_tokens_map.json").unlink()
    assert CLIPTokenizer.from_pretrained(tmp_path).pad_token == EOS


def test_from_pretrained_without_vocabulary_files_says_what_it_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json and merges.txt"):
        CLIPTokenizer.from_pretrained(tmp_path)


def test_vocabulary_without_byte_tokens_is_rejected():
    with pytest.raises(ValueError, match="512 byte tokens"):
        CLIPTokenizer({"a": 0, BOS: 1, EOS: 2}, [])


def test_missing_openclip_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(tokenizer_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps -r requirements-vocab\.txt"):
        find_openclip_vocab()


REDUCED_WORDS = ["a photo of an astronaut riding a horse on mars", "a cat's portrait, oil painting", "mountains"]


@pytest.fixture(scope="module")
def reduced(clip_vocab):
    return reduced_vocabulary(*clip_vocab, REDUCED_WORDS)


def test_reduced_vocabulary_keeps_bytes_needed_merges_and_specials_last(clip_vocab, reduced):
    small_vocab, small_merges = reduced
    assert len(small_vocab) == 512 + len(small_merges) + 2
    assert sorted(small_vocab.values()) == list(range(len(small_vocab)))
    assert [small_vocab[t] for t in byte_tokens()] == list(range(512))
    assert small_vocab[BOS] == len(small_vocab) - 2 and small_vocab[EOS] == len(small_vocab) - 1
    full_ranks = {tuple(m): rank for rank, m in enumerate(clip_vocab[1])}
    assert [full_ranks[m] for m in small_merges] == sorted(full_ranks[m] for m in small_merges)
    full, small = CLIPTokenizer(*clip_vocab), CLIPTokenizer(small_vocab, small_merges)
    for text in REDUCED_WORDS:
        assert small.tokenize(text) == full.tokenize(text)
    # Exactly the merges needed: without any one of them, some word splits differently.
    for i in range(len(small_merges)):
        without = small_merges[:i] + small_merges[i + 1 :]
        fewer = CLIPTokenizer({**small_vocab}, without)
        assert any(fewer.tokenize(text) != full.tokenize(text) for text in REDUCED_WORDS), small_merges[i]


def test_transformers_loads_a_reduced_vocabulary_and_agrees(reduced, prompts, tmp_path):
    ours = CLIPTokenizer(*reduced)
    ours.save_pretrained(tmp_path)
    reference = transformers.CLIPTokenizer.from_pretrained(tmp_path)
    assert len(reference) == len(reduced[0]) and reference.eos_token_id == len(reduced[0]) - 1
    # Other prompts fall back to shorter pieces; both tokenizers must fall back identically.
    texts = REDUCED_WORDS + prompts[:1000]
    assert torch.equal(ours(texts).input_ids, reference_ids(reference, texts))
