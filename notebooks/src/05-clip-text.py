# %% [markdown]
# # Lesson 5: tokens, embeddings and the CLIP text tower
#
# The U-Net is told what to draw by 77 vectors that CLIP's text encoder computes from the prompt. This notebook
# follows a prompt all the way: byte-pair encoding splits it into vocabulary pieces, start and end tokens and
# padding make 77 ids, token and position embeddings turn them into vectors, and a transformer with a causal
# mask mixes them into the per-token states the U-Net reads. Then the training idea: CLIP learns text features
# by matching captions with pictures (a contrastive loss), and the similarity matrix of captions and pictures
# shows how well the bundled model's CLIP learnt it. The text of the lesson is `lessons/05-clip-text.md`.

# %%
import textwrap

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from minidiff.data.shapes import Scene, SceneObject, render_scenes, sample_batch
from minidiff.loading.components import load_network_folder
from minidiff.models.tokenizer import (BYTE_TO_UNICODE, END_OF_WORD, CLIPTokenizer, find_openclip_vocab, load_openclip_bpe,
                                       merge_pair)
from minidiff.train.clip import clip_loss, load_clip_folder

torch.manual_seed(0)
tokenizer = CLIPTokenizer.from_pretrained(ROOT / "weights" / "tokenizer")
text_encoder = load_network_folder(ROOT / "weights" / "text_encoder", "text_encoder", torch.float32, "cpu",
                                   allow_pickle=False, variant=None)
config = text_encoder.config
print(f"vocabulary {len(tokenizer.vocab)} tokens, {len(tokenizer.merges)} merges; text encoder: width "
      f"{config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} heads, "
      f"{sum(p.numel() for p in text_encoder.parameters()) / 1e6:.1f} M parameters")
PROMPT = "a red circle above a blue square"

# %% [markdown]
# ## Byte-pair encoding, one merge at a time
#
# BPE starts from the single characters of a word (its UTF-8 bytes, each shown as a printable character), marks
# the last one with `</w>` (end of word), then repeatedly joins the adjacent pair that comes *earliest in the
# merge list*, until no adjacent pair is in the list. The merge list was learnt once on a big text corpus by
# counting which pairs occur most often; an early merge is a frequent pair. The loop below does the same as
# `CLIPTokenizer.bpe` and prints every step.

# %%
def bpe_steps(tokenizer, word):
    """The pieces of ``word`` after each merge, as BPE builds them: [[c, h, ...], ..., [final pieces]]."""
    pieces = [BYTE_TO_UNICODE[b] for b in word.encode("utf-8")]
    pieces[-1] += END_OF_WORD
    steps = [pieces]
    while len(pieces) > 1:
        pairs = list(zip(pieces, pieces[1:]))
        best = min(pairs, key=lambda pair: tokenizer.merge_ranks.get(pair, float("inf")))
        if best not in tokenizer.merge_ranks:
            break
        pieces = merge_pair(pieces, best)  # join every occurrence of the best pair
        steps.append(pieces)
    return steps


for word in ("triangle", "triangles", "astronaut"):
    steps = bpe_steps(tokenizer, word)
    assert tuple(steps[-1]) == tokenizer.bpe(word)
    print(f"{word}:")
    for pieces in steps:
        print("   ", " ".join(pieces))

# %% [markdown]
# The bundled tokenizer keeps only the merges that the caption words need (the first cell printed how many;
# CLIP has 48,894), so every caption word is one token as in CLIP, while a word it never needed, such as
# "astronaut", falls apart into small pieces. The full CLIP vocabulary ships with the `open_clip` package, if it
# is installed:

# %%
try:
    full = CLIPTokenizer(*load_openclip_bpe(find_openclip_vocab()))
    for word in ("triangles", "astronaut"):
        print(f"full CLIP vocabulary ({len(full.vocab)} tokens): {word} -> {full.tokenize(word)}")
except FileNotFoundError as error:
    print(error)

# %% [markdown]
# ## 77 ids: start, end and padding
#
# A prompt becomes `<|startoftext|>`, its tokens, `<|endoftext|>`, then padding up to CLIP's fixed length of 77
# (Stable Diffusion 1 pads with the end token itself, SD 2 with "!"). Longer prompts are cut, and the pipeline
# warns about it.

# %%
ids = tokenizer(PROMPT).input_ids  # (1, 77)
pieces = [tokenizer.id_to_token[int(i)] for i in ids[0]]
end = int((ids[0] == tokenizer.eos_id).nonzero()[0])  # the first end token: the prompt's last position
for position in range(end + 3):
    print(f"  position {position:2d}: id {int(ids[0, position]):3d}  {pieces[position]}")
print(f"  ... {77 - end - 3} more padding ids; shape {tuple(ids.shape)}")
long = tokenizer(" and ".join(["a red circle"] * 30))
print(f"a prompt of {len(tokenizer.encode(' and '.join(['a red circle'] * 30)))} tokens: {long.truncated[0]} cut off")

# %% [markdown]
# ## Token and position embeddings, and the causal mask
#
# The ids index a learned table, `token_embedding` (vocabulary × width), and each position adds its own learned
# vector from `position_embedding` (77 × width): x₀ = E_token[ids] + E_pos[0 … 76]. Without the position term a
# transformer would see a bag of words, and "a red circle above a blue square" would equal "a blue circle above
# a red square".
#
# The transformer's self-attention then uses a *causal mask*, as GPT does: position t may only attend to
# positions 0 … t. The mask is added to the attention scores before the softmax, −∞ above the diagonal.

# %%
embeddings = text_encoder.text_model.embeddings
token_table, position_table = embeddings.token_embedding.weight, embeddings.position_embedding.weight
print(f"token_embedding {tuple(token_table.shape)}, position_embedding {tuple(position_table.shape)}")
T = 77
causal_mask = torch.full((T, T), float("-inf")).triu(1)  # (77, 77), as CLIPTextTransformer builds it
with torch.no_grad():
    positions = F.normalize(position_table, dim=-1)
    position_similarity = positions @ positions.T  # (77, 77) cosine similarity of the position vectors
    words = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "star", "above", "below",
             "left", "right"]
    word_vectors = F.normalize(token_table[[tokenizer.vocab[w + END_OF_WORD] for w in words]], dim=-1)
    word_similarity = word_vectors @ word_vectors.T  # (12, 12)

fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
axes[0].imshow(torch.isfinite(causal_mask[:12, :12]).numpy(), cmap="Greens", vmin=0, vmax=1.3)
axes[0].set_xticks(range(12), pieces[:12], rotation=90, fontsize=7)
axes[0].set_yticks(range(12), pieces[:12], fontsize=7)
axes[0].set(title="causal mask (first 12 of 77 positions)\ngreen: may attend", xlabel="key (attended to)",
            ylabel="query (attending)")
im = axes[1].imshow(position_similarity.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
axes[1].set(title="cosine similarity of position embeddings", xlabel="position", ylabel="position")
fig.colorbar(im, ax=axes[1], fraction=0.046)
im = axes[2].imshow(word_similarity.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
axes[2].set_xticks(range(len(words)), words, rotation=90, fontsize=8)
axes[2].set_yticks(range(len(words)), words, fontsize=8)
axes[2].set_title("cosine similarity of token embeddings")
fig.colorbar(im, ax=axes[2], fraction=0.046)
fig.tight_layout()
savefig(fig, "05-embeddings.png")
plt.show()

# %% [markdown]
# What the mask means in practice: two prompts that agree on their first words have *identical* states at those
# positions, whatever follows. The states only differ from the first differing token on.

# %%
pair = tokenizer(["a red circle above a blue square", "a red circle below a green star"]).input_ids
with torch.no_grad():
    states = text_encoder(pair).last_hidden_state  # (2, 77, D)
difference = (states[0] - states[1]).abs().amax(dim=-1)  # (77,) largest difference per position
for position in range(6):
    print(f"  position {position} ({pieces[position]:>18s} vs {tokenizer.id_to_token[int(pair[1, position])]:>18s}): "
          f"largest difference {difference[position]:.2e}")

# %% [markdown]
# ## What the U-Net reads: 77 states of width D
#
# After the last layer and a final LayerNorm, each of the 77 positions has a vector of width D (256 here, 768 in
# Stable Diffusion 1, 1024 in SD 2): `last_hidden_state`, shape (B, 77, D). The U-Net's cross-attention reads all
# 77 of them, padding included. Because of the causal mask, each padding position has seen the whole prompt,
# so the padding states are summaries of it, much like the end token's state.
#
# CLIP itself uses only one vector per prompt, the state at the end token: `pooler_output`, shape (B, D). Its
# position is the one place where every word has been read.

# %%
with torch.no_grad():
    output = text_encoder(ids)
hidden, pooled = output.last_hidden_state[0], output.pooler_output[0]  # (77, D), (D,)
print(f"last_hidden_state {tuple(output.last_hidden_state.shape)}, pooler_output {tuple(output.pooler_output.shape)}, "
      f"{len(output.hidden_states)} hidden_states (the embeddings and each layer's output)")
print(f"pooler_output is the state at position {end}: {torch.equal(pooled, hidden[end])}")
similarity_to_pooled = F.cosine_similarity(hidden, pooled[None], dim=-1)  # (77,)

fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [2.2, 1]})
im = axes[0].imshow(hidden.T.numpy(), aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3, interpolation="nearest")
axes[0].axvline(end, color="k", lw=0.8, ls="--")
axes[0].set_xticks(range(end + 1), pieces[: end + 1], rotation=90, fontsize=7)
axes[0].set(title=f"last_hidden_state for '{PROMPT}' (77 × {config.hidden_size})", ylabel="feature")
fig.colorbar(im, ax=axes[0], fraction=0.03)
axes[1].plot(similarity_to_pooled.numpy(), ".-")
axes[1].axvline(end, color="k", lw=0.8, ls="--", label="end token (pooled)")
axes[1].set(title="cosine similarity with the pooled state", xlabel="position", ylim=(-0.2, 1.05))
axes[1].legend(fontsize=8)
fig.tight_layout()
savefig(fig, "05-hidden-states.png")
plt.show()

# %% [markdown]
# ## The contrastive idea
#
# CLIP trains two towers together: the text encoder (pooled state, then a linear `text_projection`) and an image
# encoder (here a small convnet, then `visual_projection`). Both outputs are normalised to unit length, so for
# N captions and N pictures the similarities s_ij = ⟨v_i, t_j⟩ are cosines. Scaled by a learned inverse
# temperature exp(τ), each row is a softmax over the captions, each column one over the pictures, and the loss
# is the cross-entropy of picking the right partner both ways (InfoNCE):
#
#     L = ½ [ CE(exp(τ) S, I) + CE(exp(τ) Sᵀ, I) ]
#
# The bundled model's CLIP was trained this way (`minidiff/train/clip.py`); its image tower and projections are
# in `weights/clip/`, its text tower is `weights/text_encoder/`, and `load_clip_folder` puts the two together.

# %%
clip = load_clip_folder(ROOT / "weights", text_encoder)  # image tower, both projections and τ from weights/clip/
print(f"inverse temperature exp(τ) = {clip.logit_scale.exp():.1f} (CLIP starts at 1 / 0.07 ≈ 14.3, capped at 100)")

images, captions, _ = sample_batch(5, 8, size=128)  # (8, 3, 128, 128) in [-1, 1], fresh procedural scenes
with torch.no_grad():
    v = clip.embed_images(images)  # (8, P) unit vectors
    t = clip.embed_text(tokenizer(captions).input_ids)  # (8, P)
    S = v @ t.T  # (8, 8): picture i vs caption j
    logits = clip.logit_scale.exp() * S
    by_hand = 0.5 * (F.cross_entropy(logits, torch.arange(8)) + F.cross_entropy(logits.T, torch.arange(8)))
    loss = clip_loss(clip, images, tokenizer(captions).input_ids)
print(f"InfoNCE on this batch: {by_hand:.3f} by hand, {loss:.3f} from clip_loss; chance would be log 8 = "
      f"{torch.log(torch.tensor(8.0)):.3f}")
print(f"each picture's best caption is its own: {(S.argmax(1) == torch.arange(8)).float().mean():.0%} of rows; "
      f"each caption's best picture: {(S.argmax(0) == torch.arange(8)).float().mean():.0%} of columns")


def similarity_figure(images, captions, S, title):
    """The pictures along the top, captions down the side, the cosine similarities (times 100) in between,
    on one fixed colour scale so that figures can be compared."""
    n = len(images)
    fig = plt.figure(figsize=(1.05 * n + 3.2, 1.05 * n + 1.4))
    grid = fig.add_gridspec(2, n, height_ratios=[1, n], hspace=0.05, wspace=0.05, left=0.3)
    for j in range(n):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(((images[j] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy())
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    ax.imshow(100 * S.T.numpy(), cmap="viridis", aspect="auto", vmin=-50, vmax=100)  # rows: captions
    for i in range(n):
        for j in range(n):
            ax.text(i, j, f"{100 * S[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="k" if S[i, j] > 0.5 else "w")
    ax.set_yticks(range(n), [textwrap.fill(c, 36) for c in captions], fontsize=7)
    ax.set_xticks([])
    ax.set_xlabel(title, fontsize=9)
    return fig


fig = similarity_figure(images, captions, S, "100 × cos(picture embedding, caption embedding)")
savefig(fig, "05-similarity.png")
plt.show()

# %% [markdown]
# The softmax at the learned temperature turns each row into a confident choice (rows: pictures, summing to 1):

# %%
print((logits.softmax(dim=1) * 100).round().int())

# %% [markdown]
# ## Harder captions: which word matters?
#
# The pictures above differ in everything. A harder test changes one thing at a time: swap the colours, swap
# the shapes, flip the relation. The four pictures below are built by hand (`Scene` objects rendered with
# `render_scenes`), each drawn to match exactly one of the four captions. A bag of words could not tell them
# apart: "red", "circle", "blue" and "square" occur in each. Compare how much the diagonal stands out here with
# the figure above: if it hardly stands out, the embeddings do not tell these captions apart, as a bag of words
# would not. The cosines between the four caption embeddings, and between the four picture embeddings, say
# where the differences got lost.

# %%
def two_objects(first, second, relation):
    """A Scene with ``first`` above or below ``second`` (each a (colour, shape) pair) on white."""
    top, bottom = (first, second) if relation == "above" else (second, first)
    objects = [SceneObject(shape, color, "large", center, 0.16)
               for (color, shape), center in ((top, (0.5, 0.27)), (bottom, (0.5, 0.73)))]
    return Scene(objects, "white", relation, "", {})


hard = [(("red", "circle"), ("blue", "square"), "above"), (("blue", "circle"), ("red", "square"), "above"),
        (("red", "square"), ("blue", "circle"), "above"), (("red", "circle"), ("blue", "square"), "below")]
hard_captions = [f"a {a[0]} {a[1]} {relation} a {b[0]} {b[1]}" for a, b, relation in hard]
hard_images = render_scenes([two_objects(*h) for h in hard], 128) * 2 - 1  # (4, 3, 128, 128) in [-1, 1]
with torch.no_grad():
    hard_v = clip.embed_images(hard_images)  # (4, P)
    hard_t = clip.embed_text(tokenizer(hard_captions).input_ids)  # (4, P)
fig = similarity_figure(hard_images, hard_captions, hard_v @ hard_t.T, "the same words in different roles")
savefig(fig, "05-hard-captions.png")
plt.show()
print("cosines between the caption embeddings (x 100):\n", (100 * hard_t @ hard_t.T).round().int())
print("cosines between the picture embeddings (x 100):\n", (100 * hard_v @ hard_v.T).round().int())

# %% [markdown]
# ## Clip skip
#
# `clip_skip = k` hands the U-Net the output of the layer k before the last (through the final LayerNorm)
# instead of the last layer's. Some fine-tuned SD 1 models were trained that way, so they want it at inference
# too. Here it simply changes the conditioning a model was never trained on:

# %%
with torch.no_grad():
    skipped = text_encoder(ids, clip_skip=1).last_hidden_state[0]  # (77, D)
print(f"clip_skip=1 vs 0: mean cosine similarity of the 77 states {F.cosine_similarity(skipped, hidden, dim=-1).mean():.3f}")
