"""Making the U-Net fast without changing what it computes: three simple means, and a fourth as an option.

An eager PyTorch forward pass of the SD 1.5 U-Net launches about a thousand GPU kernels, each prepared by Python
on the CPU. On a fast GPU most of those kernels finish before the CPU has prepared the next one, so the step
takes as long at batch 8 as at batch 1: the GPU waits for the CPU. The remedies, in the order lesson 12 measures:

1. ``channels_last``: store feature maps as (B, H, W, C) in memory. The GPU's convolution kernels work in that
   layout; with (B, C, H, W) they transpose in and out around every convolution. It also makes the spatial
   transformer's (B, C, H, W) -> (B, H*W, C) reshape free (the memory already is in token order).
2. ``fuse_qkv``: compute q, k and v of self-attention with one matrix product, x [W_q; W_k; W_v]^T, instead of
   three (and k, v of cross-attention with one): fewer, larger products keep the GPU busier.
3. A CUDA graph: record every kernel of one whole guided denoising step once, then replay the recording each
   step with one call. The CPU no longer prepares kernels one by one; the GPU runs them back to back.
   Replay needs fixed shapes and fixed memory: inputs are copied into buffers made at capture time.
4. (option) ``torch.compile``: generates fused kernels (GroupNorm + SiLU + residual add in one pass, ...), at the
   cost of a minute or more of compiling.

    unet = optimize_unet(unet)                     # after loading, moving to the GPU and choosing the dtype
    step = capture_guided_step(unet, (1, 4, 64, 64), context, guidance_scale=7.5)
    eps = step(x, t)                               # = eps_u + s (eps_c - eps_u), one graph replay

Parameter names do not change, so ``state_dict`` and ``load_state_dict`` work as before.
"""

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.models.attention import attention
from minidiff.models.transformer import CrossAttention
from minidiff.pipelines.guidance import classifier_free_guidance, guidance_condition, uses_classifier_free_guidance


class FusedCrossAttention(CrossAttention):
    """CrossAttention whose projections share one weight matrix, so that they run as one matrix product.

    Self-attention: [q | k | v] = x W^T, W = [W_q; W_k; W_v] (3 * inner, D). Cross-attention: q = to_q(x) and
    [k | v] = c W^T, W = [W_k; W_v]. The layers to_q, to_k, to_v keep their weights, which become views into rows
    of W, so ``state_dict`` keys and values are unchanged and ``load_state_dict`` (copying in place) updates W too.
    x: (B, T_q, query_dim); context: (B, T_k, context_dim). Returns (B, T_q, query_dim).
    """

    def __init__(self, layer):
        nn.Module.__init__(self)  # takes over the layers of an existing CrossAttention instead of making new ones
        self.heads, self.head_dim, self.upcast_attention = layer.heads, layer.head_dim, layer.upcast_attention
        self.is_cross_attention, self.recorder = layer.is_cross_attention, layer.recorder
        self.to_q, self.to_k, self.to_v, self.to_out = layer.to_q, layer.to_k, layer.to_v, layer.to_out
        self.fuse()

    def fused_layers(self):
        return (self.to_k, self.to_v) if self.is_cross_attention else (self.to_q, self.to_k, self.to_v)

    @torch.no_grad()
    def fuse(self):
        """Concatenate the weights into ``fused_weight`` and make each layer's weight a view of its rows."""
        layers = self.fused_layers()
        fused = torch.cat([layer.weight for layer in layers])  # (n * inner, in_features)
        rows = layers[0].weight.shape[0]
        for i, layer in enumerate(layers):
            layer.weight = nn.Parameter(fused[i * rows:(i + 1) * rows], requires_grad=layer.weight.requires_grad)
        # Not persistent: the state dict keeps the separate to_q/to_k/to_v weights that checkpoints use.
        self.register_buffer("fused_weight", fused, persistent=False)

    def _apply(self, fn, recurse=True):
        # .to(), .half(), .cuda() convert every tensor separately, which would break the views: fuse again after.
        super()._apply(fn, recurse)
        self.fuse()
        return self

    def forward(self, x, context=None):
        # Recording attention maps needs the plain path's probabilities; training needs gradients for the
        # layers' own weights (the fused buffer has none).
        training = torch.is_grad_enabled() and any(layer.weight.requires_grad for layer in self.fused_layers())
        if self.recorder is not None or training:
            return super().forward(x, context)
        if self.is_cross_attention:
            q = self.to_q(x)  # (B, T_q, inner)
            k, v = F.linear(context, self.fused_weight).chunk(2, dim=-1)  # (B, T_k, inner) each
        else:
            q, k, v = F.linear(x, self.fused_weight).chunk(3, dim=-1)  # (B, T_q, inner) each
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # (B, heads, T, d)
        if self.upcast_attention and q.dtype in (torch.float16, torch.bfloat16):
            q, k, v = q.float(), k.float(), v.float()
        h = attention(q, k, v)  # (B, heads, T_q, d)
        B, _, T_q, _ = h.shape
        h = h.to(x.dtype).transpose(1, 2).reshape(B, T_q, self.heads * self.head_dim)  # concatenate the heads
        return self.to_out[0](h)


def fuse_attention_projections(model):
    """Replace every CrossAttention in ``model`` (a U-Net or ControlNet) by a FusedCrossAttention; returns the
    number replaced. Run it after loading the weights; later ``load_state_dict`` calls still work."""
    count = 0
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, CrossAttention) and not isinstance(child, FusedCrossAttention):
                setattr(parent, name, FusedCrossAttention(child))
                count += 1
    return count


def optimize_unet(unet, channels_last=True, fuse_qkv=True):
    """Apply the layout and fusion speed-ups in place and return ``unet`` (also works for a ControlNet).

    Call it once the model has its device and dtype. Outputs stay equal to the plain model's up to rounding:
    the same arithmetic is done, in another memory layout and grouping of matrix products. Inputs may stay in
    the usual (B, C, H, W) layout; the first convolution converts them.
    """
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if fuse_qkv:
        fuse_attention_projections(unet)
    return unet


class CUDAGraphStep:
    """Capture ``fn(*inputs)`` as a CUDA graph once, then replay it for new inputs of the same shapes and dtypes.

    At capture, ``example_inputs`` are copied into static buffers and ``fn`` runs a few times on a side stream
    (so that libraries pick their kernels and allocate their workspaces), then once more while the graph records.
    Each call copies the new inputs into the static buffers, replays every recorded kernel and returns a copy of
    the output (the static output buffer is overwritten by the next replay). ``fn`` must return one tensor and
    must not synchronise with the CPU (no ``.item()``, no data-dependent Python branches).
    """

    def __init__(self, fn, *example_inputs, warmup=3):
        if not all(torch.is_tensor(x) and x.is_cuda for x in example_inputs):
            raise ValueError("CUDAGraphStep needs CUDA tensors as example inputs: CUDA graphs record GPU work only.")
        self.inputs = [x.clone() for x in example_inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.output = fn(*self.inputs)

    def __call__(self, *inputs):
        for static, x in zip(self.inputs, inputs, strict=True):
            if static.shape != x.shape:
                raise ValueError(
                    f"this CUDA graph was captured for inputs of shape {tuple(static.shape)}, got {tuple(x.shape)}; "
                    f"capture a new step for the new size"
                )
            static.copy_(x)
        self.graph.replay()
        return self.output.clone()


class GuidedStep(CUDAGraphStep):
    """One classifier-free-guided U-Net call as a CUDA graph: step(x, t) -> eps_u + s (eps_c - eps_u).

    x: (B, C, h, w) latents, any float dtype (cast to the U-Net's as they are copied in); t: a number or a 0-d
    tensor. The context (2B, T, D), [unconditional; conditional], is a static buffer: ``set_context`` swaps in a
    new prompt's without capturing again. With guidance_scale <= 1, the context is (B, T, D) and the step is
    the plain U-Net call; so it is for an LCM's U-Net, which gets the scale as its timestep_cond instead
    (``minidiff/pipelines/guidance.py``). Returns (B, C, h, w) in the U-Net's dtype.
    """

    def __init__(self, unet, latents_shape, context, guidance_scale, compile=False, warmup=3):
        device, dtype = context.device, unet.dtype
        self.context = context.to(dtype).clone()
        self.guided = uses_classifier_free_guidance(unet, guidance_scale)
        self.condition = guidance_condition(unet, guidance_scale, latents_shape[0])  # (B, D) for an LCM, else None
        batch = latents_shape[0] * (2 if self.guided else 1)
        if self.context.shape[0] != batch:
            raise ValueError(
                f"context has batch {self.context.shape[0]}, expected {batch}: with classifier-free guidance "
                f"(guidance_scale > 1, not an LCM's U-Net) give [unconditional; conditional] hidden states for each "
                f"of the {latents_shape[0]} latents, else one per latent"
            )
        net = torch.compile(unet) if compile else unet

        def guided_eps(x, t):
            x_in = torch.cat([x] * 2) if self.guided else x  # (2B, C, h, w)
            out = net(x_in, t, self.context, timestep_cond=self.condition)
            if not self.guided:
                return out
            return classifier_free_guidance(*out.chunk(2), guidance_scale)  # (B, C, h, w)

        x = torch.randn(latents_shape, device=device, dtype=dtype)
        t = torch.tensor(500.0, device=device)
        super().__init__(guided_eps, x, t, warmup=warmup)

    def set_context(self, context):
        """Use another prompt's hidden states (same shape) from the next call on."""
        self.context.copy_(context)

    def __call__(self, x, t):
        self.inputs[1].fill_(t)  # a number or 0-d tensor; a CPU value needs no copy from the host
        return super().__call__(x, self.inputs[1])


def capture_guided_step(unet, latents_shape, context, guidance_scale, compile=False):
    """Capture the whole guided denoising step of ``unet`` for latents of ``latents_shape`` (B, C, h, w) and
    ``context`` (2B, T, D) as a CUDA graph; returns a GuidedStep, called as step(x, t) like a sampler's
    model_fn. ``compile=True`` compiles the U-Net with ``torch.compile`` before capturing (slow to start)."""
    return GuidedStep(unet, latents_shape, context, guidance_scale, compile=compile)
