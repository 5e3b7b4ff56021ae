"""CLIP's tokenizer: a prompt becomes 77 integers by byte-level byte-pair encoding (BPE).

Stable Diffusion reads a prompt the way CLIP was trained to:

1. normalize: Unicode NFC, every run of whitespace becomes one space, every character is lowercased;
2. pre-tokenize: cut out the special tokens (``<|startoftext|>``, ``<|endoftext|>`` and the padding token),
   then split the rest into words with a regular expression: runs of letters, single digits, runs of other
   symbols, and the English contractions 's 't 're 've 'm 'll 'd (whitespace only separates words and is dropped);
3. BPE: spell each word as its UTF-8 bytes, each byte shown as one printable character (``bytes_to_unicode``),
   mark the last one with ``</w>`` (end of word), then repeatedly join the adjacent pair of pieces that
   comes first in the merge list until no pair of the word is in the list;
4. ids: look the pieces up in the vocabulary, put ``<|startoftext|>`` in front and ``<|endoftext|>`` behind,
   truncate and pad to 77 ids.

Steps 1 and 2 use the normalizer and word splitter of the ``tokenizers`` library, built as transformers builds
them: which characters are capitals, letters or whitespace is read from Unicode's tables, which grow with each
Unicode version (Python 3.11's ``str.lower`` reads Unicode 14; the ``regex`` module reads a newer version than
``tokenizers`` does). Only the tables transformers uses split every text into the same words. Steps 3 and 4 are
written out here.

The ids equal those of Hugging Face's ``CLIPTokenizer`` (which does not use the optional ``ftfy`` text fixer).
One difference on purpose: special tokens are recognised after lowercasing, so ``<|ENDOFTEXT|>`` is an end
token here, as in Stable Diffusion 2's tokenizer files, while Stable Diffusion 1's files match it
case-sensitively.
"""

import gzip
import importlib.util
import json
import math
import re
from pathlib import Path
from typing import NamedTuple

import torch
from tokenizers import Regex, normalizers, pre_tokenizers

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"
# CLIP keeps the first 49,152 - 256 - 2 merges of its merge file: with 2 x 256 byte tokens and 2 specials,
# the vocabulary then has 49,408 entries.
CLIP_NUM_MERGES = 49152 - 256 - 2
OPENCLIP_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"

NORMALIZER = normalizers.Sequence(
    [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
)
# \p{L}: any letter, \p{N}: any digit or numeral, \s: any Unicode whitespace.
WORD = r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"
# invert=True: the pattern matches the words themselves; "removed": what lies between them (whitespace) is dropped.
WORD_SPLITTER = pre_tokenizers.Split(Regex(WORD), behavior="removed", invert=True)


def bytes_to_unicode():
    """The 256 byte values -> 256 printable characters, so that BPE can work on ordinary strings.

    Printable bytes ("!".."~", "¡".."¬", "®".."ÿ") stand for themselves; the other 68 (space, control
    characters, ...) are shifted to the characters 256, 257, ... Ordered printable bytes first: this order
    gives the first 256 ids of CLIP's vocabulary.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {
        **{b: chr(b) for b in printable},
        **{b: chr(256 + n) for n, b in enumerate(others)},
    }


BYTE_TO_UNICODE = bytes_to_unicode()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}


def byte_tokens():
    """The 512 tokens every CLIP vocabulary starts with: each byte, then each byte ending a word."""
    singles = list(BYTE_TO_UNICODE.values())
    return singles + [c + END_OF_WORD for c in singles]


def normalize(text):
    """NFC, whitespace runs -> " ", lowercase (character by character: no special rule for a final sigma)."""
    return NORMALIZER.normalize_str(text)


def split_words(text):
    """Normalised text without special tokens -> its words: "it's 4k!" -> ["it", "'s", "4", "k", "!"].

    transformers' pre-tokenizer then spells each word in bytes (its byte-level step, whose own split cuts no
    CLIP word further); here ``tokenize`` does that, just before BPE.
    """
    return [word for word, _span in WORD_SPLITTER.pre_tokenize_str(text)]


class TokenizerOutput(NamedTuple):
    """input_ids: (B, max_length) LongTensor; truncated: how many tokens of each prompt did not fit."""

    input_ids: torch.Tensor
    truncated: list


def merge_pair(pieces, pair):
    """One BPE merge: join every occurrence of the adjacent ``pair`` in ``pieces``, left to right.

    merge_pair(["a", "a", "a"], ("a", "a")) -> ["aa", "a"].
    """
    merged, i = [], 0
    while i < len(pieces):
        if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
            merged.append(pieces[i] + pieces[i + 1])
            i += 2
        else:
            merged.append(pieces[i])
            i += 1
    return merged


class CLIPTokenizer:
    """Byte-level BPE with CLIP's vocabulary: ``tokenizer(prompts).input_ids`` is (B, 77).

    vocab: token string -> id; merges: pairs of token strings, best first; pad_token: what fills a row after
    ``<|endoftext|>`` (``<|endoftext|>`` in Stable Diffusion 1, ``!`` in Stable Diffusion 2).
    """

    def __init__(self, vocab, merges, pad_token=EOS, max_length=77):
        missing = [t for t in [*byte_tokens(), BOS, EOS, pad_token] if t not in vocab]
        if missing:
            raise ValueError(
                f"A CLIP vocabulary must contain all 512 byte tokens, {BOS}, {EOS} and the pad token "
                f"{pad_token!r}; this one lacks {len(missing)} of them, e.g. {missing[:5]}. "
                "Build it with load_openclip_bpe or reduced_vocabulary."
            )
        self.vocab = dict(vocab)
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.merges = [tuple(m) for m in merges]
        self.merge_ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.pad_token = pad_token
        self.max_length = max_length
        self.bos_id, self.eos_id, self.pad_id = self.vocab[BOS], self.vocab[EOS], self.vocab[pad_token]
        # Special tokens are cut out of the text before words are split (longest first, should one contain another).
        specials = sorted({BOS, EOS, pad_token}, key=len, reverse=True)
        self.special_pattern = re.compile("(" + "|".join(re.escape(t) for t in specials) + ")")
        self.cache = {}  # word -> its BPE pieces; prompts repeat words a lot

    @classmethod
    def from_pretrained(cls, folder):
        """Load a tokenizer folder in Hugging Face's layout (vocab.json + merges.txt, or tokenizer.json).

        The pad token and length come from tokenizer_config.json and special_tokens_map.json (the latter wins).
        """
        folder = Path(folder)
        settings = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if (folder / name).is_file():
                settings.update(json.loads((folder / name).read_text(encoding="utf-8")))
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
            lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
            merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
        elif (folder / "tokenizer.json").is_file():
            model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
            vocab = model["vocab"]
            merges = [tuple(m.split() if isinstance(m, str) else m) for m in model["merges"]]
        else:
            raise FileNotFoundError(
                f"Expected vocab.json and merges.txt (or tokenizer.json) in {folder}, found neither. "
                "Point to the 'tokenizer' folder of a Stable Diffusion model."
            )
        pad = settings.get("pad_token", EOS)
        pad = pad["content"] if isinstance(pad, dict) else pad
        return cls(vocab, merges, pad_token=pad, max_length=settings.get("model_max_length", 77))

    def save_pretrained(self, folder):
        """Write vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json.

        Hugging Face's ``CLIPTokenizer.from_pretrained(folder)`` reads them and gives the same ids.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        merges = "".join(f"{a} {b}\n" for a, b in self.merges)
        (folder / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")

        def special(token):  # "normalized": matched after lowercasing, as this tokenizer does
            return {"content": token, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

        specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": self.pad_token}
        specials = {key: special(token) for key, token in specials.items()}
        (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
        config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": self.max_length, "do_lower_case": True}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")

    def bpe(self, word):
        """Byte-pair encoding of one word, already spelt in ``bytes_to_unicode`` characters.

        Start from single characters (the last one ending in ``</w>``); while some adjacent pair is in the merge
        list, join every occurrence of the best-ranked pair. "cats" -> c a t s</w> -> ... -> ("cats</w>",).
        """
        if word in self.cache:
            return self.cache[word]
        pieces = [*word[:-1], word[-1] + END_OF_WORD]
        while len(pieces) > 1:
            best = min(zip(pieces, pieces[1:]), key=lambda pair: self.merge_ranks.get(pair, math.inf))
            if best not in self.merge_ranks:
                break
            pieces = merge_pair(pieces, best)
        self.cache[word] = tuple(pieces)
        return self.cache[word]

    def tokenize(self, text):
        """Text -> list of vocabulary pieces (strings), without start and end tokens."""
        text = normalize(text)  # 1. normalize
        pieces = []
        # 2. pre-tokenize. With one capture group, split() alternates: text, special token, text, special token, ...
        for i, part in enumerate(self.special_pattern.split(text)):
            if i % 2 == 1:
                pieces.append(part)
                continue
            for word in split_words(part):
                # 3. BPE, on the word's UTF-8 bytes spelt as printable characters
                pieces.extend(self.bpe("".join(BYTE_TO_UNICODE[b] for b in word.encode("utf-8"))))
        return pieces

    def encode(self, text):
        """Text -> list of token ids (4. each piece looked up), without start and end tokens or truncation."""
        return [self.vocab[piece] for piece in self.tokenize(text)]

    def decode(self, ids):
        """Token ids -> text: join the pieces, turn ``</w>`` back into spaces, read the bytes as UTF-8."""
        text = "".join(self.id_to_token[int(i)] for i in ids)
        text = text.replace(END_OF_WORD, BYTE_TO_UNICODE[ord(" ")])
        data = bytes(UNICODE_TO_BYTE[c] for c in text)
        return data.decode("utf-8", errors="replace").strip()

    def __call__(self, prompts, max_length=None):
        """prompts: str or list of str -> TokenizerOutput with input_ids (B, max_length).

        Each row is ``<|startoftext|>`` ids ``<|endoftext|>`` pad ...; a prompt longer than max_length - 2
        tokens is cut, and ``truncated`` says by how many tokens (so a pipeline can warn).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        max_length = max_length or self.max_length
        rows, truncated = [], []
        for prompt in prompts:
            ids = self.encode(prompt)
            room = max_length - 2
            truncated.append(max(0, len(ids) - room))
            row = [self.bos_id, *ids[:room], self.eos_id]
            rows.append(row + [self.pad_id] * (max_length - len(row)))
        input_ids = torch.tensor(rows, dtype=torch.long).reshape(len(rows), max_length)
        return TokenizerOutput(input_ids, truncated)


def load_openclip_bpe(path):
    """CLIP's 49,408-token vocabulary from OpenAI's merge file -> (vocab, merges).

    Ids: the 256 bytes, the 256 bytes ending a word, one token per merge (its two halves joined), in the order
    of the first 48,894 merges, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407).
    """
    lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + CLIP_NUM_MERGES]]  # line 0 is a version header
    tokens = byte_tokens() + ["".join(m) for m in merges] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def find_openclip_vocab():
    """Path of ``bpe_simple_vocab_16e6.txt.gz`` inside the installed open_clip package (which is never imported)."""
    spec = importlib.util.find_spec("open_clip")
    folders = (spec.submodule_search_locations or []) if spec is not None else []
    path = Path(folders[0]) / OPENCLIP_VOCAB_FILE if folders else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"CLIP's vocabulary file {OPENCLIP_VOCAB_FILE} was not found: it ships inside the open_clip package. "
            "Install it (without its dependencies) with: pip install --no-deps -r requirements-vocab.txt"
        )
    return path


def reduced_vocabulary(vocab, merges, words):
    """A small vocabulary under which each of ``words`` splits into the same pieces as under ``vocab``.

    Keeps the 512 byte tokens, exactly the merges those pieces are built from (in their original order, so BPE
    picks them in the same sequence) and the two special tokens, renumbered densely with the specials last.
    ``words`` may be whole prompts: they are normalised and split as the tokenizer does. Returns (vocab, merges).
    """
    full = CLIPTokenizer(vocab, merges)
    merge_making = {a + b: (a, b) for a, b in merges}  # each merged token is made by exactly one merge
    needed = set()
    todo = [piece for word in words for piece in full.tokenize(word)]
    while todo:
        merge = merge_making.get(todo.pop())
        if merge is not None and merge not in needed:
            needed.add(merge)
            todo.extend(merge)
    kept = [tuple(m) for m in merges if tuple(m) in needed]
    tokens = byte_tokens() + ["".join(m) for m in kept] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, kept
