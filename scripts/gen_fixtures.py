#!/usr/bin/python3
"""Developer-only: PyTorch parity fixtures for tests/nn/test_parity.c.

Run with Debian's interpreter (it has torch 1.13 and numpy); CI never runs
this, the generated files are committed:

  /usr/bin/python3 scripts/gen_fixtures.py

The models below are written out in plain torch and follow the Hugging Face
modules line by line (SiglipVisionTransformer with its
SiglipMultiheadAttentionPoolingHead, SiglipTextTransformer, SiglipModel's
sigmoid loss, LlamaForCausalLM with GQA, half-split RoPE, f32 RMSNorm, SwiGLU
and a tied lm_head), plus the fusion block and the captioner exactly as
nn/nn.h documents them. Attention is written as matmul + softmax (no fused
scaled_dot_product_attention); the MAP head uses torch.nn.MultiheadAttention
as HF does and is cross-checked against the explicit formula.

Weights are drawn in f32 from fixed seeds with non-trivial values (norm
weights around 1, biases around 0, linear weights ~ 1/sqrt(fan_in)), stored as
f32, and every reference value is then computed in float64 from exactly those
f32 numbers, so the expected outputs carry no rounding of their own beyond the
final cast to f32.

Writes to tests/nn/fixtures/parity/:
  siglip.json, siglip.safetensors        config ({"model": ...}) and HF-named weights
  siglip_io.safetensors                  inputs, outputs, loss, grad.<param> for every param
  captioner.json, captioner.safetensors  (tied decoder.lm_head.weight is not stored)
  captioner_io.safetensors
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "tests", "nn", "fixtures", "parity"))

# ---- configs (our config format: vlm_model_cfg_fields in nn/config.c) ----------

SIGLIP_CFG = {
    "type": "siglip",
    "vision": {"image_size": 16, "patch": 4, "channels": 3, "width": 24, "layers": 2,
               "heads": 4, "mlp": 32, "ln_eps": 1e-6},
    # text width differs from the vision width (the head maps it to the embedding size)
    "text": {"vocab": 50, "ctx_len": 8, "width": 16, "layers": 2, "heads": 2, "mlp": 32,
             "ln_eps": 1e-6, "pad_id": 1},
}

CAPTIONER_CFG = {
    "type": "captioner",
    # one layer per tower (the towers are covered at two layers by the SigLIP
    # fixture); text width != vision width so the fusion's q and k/v sides differ
    "vision": {"image_size": 16, "patch": 4, "channels": 3, "width": 16, "layers": 1,
               "heads": 2, "mlp": 32, "ln_eps": 1e-6},
    "text": {"vocab": 40, "ctx_len": 8, "width": 20, "layers": 1, "heads": 2, "mlp": 32,
             "ln_eps": 1e-6, "pad_id": 1},
    "fusion": {"heads": 2, "mlp": 32, "ln_eps": 1e-6},
    "decoder": {"vocab": 64, "width": 32, "layers": 2, "heads": 4, "kv_heads": 2, "mlp": 40,
                "max_len": 32, "rms_eps": 1e-5, "rope_theta": 100000.0,
                "tie_embeddings": True},
    "pixel_shuffle": 2,
}

# ---- SigLIP (HF modeling_siglip.py) --------------------------------------------


def attention(q, k, v, heads, kv_heads, mask=None):
    """q [B, Tq, H*hd], k/v [B, Tk, Hkv*hd] -> [B, Tq, H*hd]; explicit matmul +
    softmax; query head h reads kv head h // (H / Hkv) (HF repeat_kv);
    mask: additive, broadcast to [B, H, Tq, Tk]."""
    B, Tq, _ = q.shape
    Tk = k.shape[1]
    hd = q.shape[2] // heads
    q = q.view(B, Tq, heads, hd).transpose(1, 2)
    k = k.view(B, Tk, kv_heads, hd).transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
    v = v.view(B, Tk, kv_heads, hd).transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
    w = torch.matmul(q, k.transpose(2, 3)) * hd ** -0.5
    if mask is not None:
        w = w + mask
    w = F.softmax(w, dim=-1)
    return torch.matmul(w, v).transpose(1, 2).reshape(B, Tq, heads * hd)


def additive_key_mask(key_mask, dtype):
    """u8 [B, Tk] (1 = attend) -> [B, 1, 1, Tk], as HF _prepare_4d_attention_mask."""
    if key_mask is None:
        return None
    return ((1.0 - key_mask.to(dtype)) * torch.finfo(dtype).min)[:, None, None, :]


class SiglipAttention(nn.Module):
    def __init__(self, dim, heads, device=None):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, device=device)
        self.k_proj = nn.Linear(dim, dim, device=device)
        self.v_proj = nn.Linear(dim, dim, device=device)
        self.out_proj = nn.Linear(dim, dim, device=device)

    def forward(self, x, mask=None):
        o = attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, self.heads, mask)
        return self.out_proj(o)


class SiglipMLP(nn.Module):
    def __init__(self, dim, hidden, device=None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, device=device)
        self.fc2 = nn.Linear(hidden, dim, device=device)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))  # gelu_pytorch_tanh


class SiglipEncoderLayer(nn.Module):
    def __init__(self, dim, heads, mlp, eps, device=None):
        super().__init__()
        self.self_attn = SiglipAttention(dim, heads, device)
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps, device=device)
        self.mlp = SiglipMLP(dim, mlp, device)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps, device=device)

    def forward(self, x, mask=None):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.layers = nn.ModuleList(
            SiglipEncoderLayer(c["width"], c["heads"], c["mlp"], c["ln_eps"], device)
            for _ in range(c["layers"]))

    def forward(self, x, mask=None):
        for layer in self.layers:
            x = layer(x, mask)
        return x


class SiglipVisionEmbeddings(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        n = (c["image_size"] // c["patch"]) ** 2
        self.patch_embedding = nn.Conv2d(c["channels"], c["width"], c["patch"], stride=c["patch"],
                                         padding="valid", device=device)
        self.position_embedding = nn.Embedding(n, c["width"], device=device)

    def forward(self, images):
        x = self.patch_embedding(images).flatten(2).transpose(1, 2)  # raster order
        return x + self.position_embedding.weight[None]


class SiglipMultiheadAttentionPoolingHead(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        d = c["width"]
        self.probe = nn.Parameter(torch.randn(1, 1, d, device=device))
        self.attention = nn.MultiheadAttention(d, c["heads"], batch_first=True, device=device)
        self.layernorm = nn.LayerNorm(d, eps=c["ln_eps"], device=device)
        self.mlp = SiglipMLP(d, c["mlp"], device)

    def forward(self, x):
        probe = self.probe.repeat(x.shape[0], 1, 1)
        h = self.attention(probe, x, x)[0]
        h = h + self.mlp(self.layernorm(h))
        return h[:, 0]

    def explicit(self, x):
        """The same head with the fused in_proj split by hand (cross-check)."""
        d = x.shape[2]
        W, b = self.attention.in_proj_weight, self.attention.in_proj_bias
        q = F.linear(self.probe.repeat(x.shape[0], 1, 1), W[:d], b[:d])
        o = attention(q, F.linear(x, W[d:2 * d], b[d:2 * d]), F.linear(x, W[2 * d:], b[2 * d:]),
                      self.attention.num_heads, self.attention.num_heads)
        h = self.attention.out_proj(o)
        h = h + self.mlp(self.layernorm(h))
        return h[:, 0]


class SiglipVisionTransformer(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.embeddings = SiglipVisionEmbeddings(c, device)
        self.encoder = SiglipEncoder(c, device)
        self.post_layernorm = nn.LayerNorm(c["width"], eps=c["ln_eps"], device=device)
        self.head = SiglipMultiheadAttentionPoolingHead(c, device)

    def tokens(self, images):
        return self.post_layernorm(self.encoder(self.embeddings(images)))

    def forward(self, images):
        t = self.tokens(images)
        return t, self.head(t)


class SiglipTextEmbeddings(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.token_embedding = nn.Embedding(c["vocab"], c["width"], device=device)
        self.position_embedding = nn.Embedding(c["ctx_len"], c["width"], device=device)

    def forward(self, ids):
        return self.token_embedding(ids) + self.position_embedding.weight[None, :ids.shape[1]]


class SiglipTextTransformer(nn.Module):
    def __init__(self, c, embed_dim, device=None):
        super().__init__()
        self.embeddings = SiglipTextEmbeddings(c, device)
        self.encoder = SiglipEncoder(c, device)  # bidirectional
        self.final_layer_norm = nn.LayerNorm(c["width"], eps=c["ln_eps"], device=device)
        self.head = nn.Linear(c["width"], embed_dim, device=device)

    def tokens(self, ids, key_mask=None):
        x = self.embeddings(ids)
        return self.final_layer_norm(self.encoder(x, additive_key_mask(key_mask, x.dtype)))

    def forward(self, ids, key_mask=None):
        t = self.tokens(ids, key_mask)
        return t, self.head(t[:, -1, :])  # pooled = last position


class SiglipModel(nn.Module):
    def __init__(self, cfg, device=None):
        super().__init__()
        self.text_model = SiglipTextTransformer(cfg["text"], cfg["vision"]["width"], device)
        self.vision_model = SiglipVisionTransformer(cfg["vision"], device)
        self.logit_scale = nn.Parameter(torch.randn(1, device=device))
        self.logit_bias = nn.Parameter(torch.randn(1, device=device))

    def forward(self, images, ids, key_mask=None):
        _, img = self.vision_model(images)
        _, txt = self.text_model(ids, key_mask)
        img = img / img.norm(p=2, dim=-1, keepdim=True)
        txt = txt / txt.norm(p=2, dim=-1, keepdim=True)
        logits_per_text = torch.matmul(txt, img.t()) * self.logit_scale.exp() + self.logit_bias
        n = logits_per_text.size(0)
        m1_diag1 = -torch.ones_like(logits_per_text) + 2 * torch.eye(n, dtype=img.dtype)
        loglik = F.logsigmoid(m1_diag1 * logits_per_text)
        loss = (-torch.sum(loglik, dim=-1)).mean()
        return loss, img, txt

# ---- LLaMA (HF modeling_llama.py) ----------------------------------------------


class LlamaRMSNorm(nn.Module):
    def __init__(self, dim, eps, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        h = x.to(torch.float32) if dt in (torch.float16, torch.bfloat16) else x  # f32 (or f64)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dt)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(T, hd, theta, dtype):
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).to(dtype) / hd))
    freqs = torch.outer(torch.arange(T, dtype=dtype), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class LlamaAttention(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        d, hd = c["width"], c["width"] // c["heads"]
        self.heads, self.kv_heads, self.hd, self.theta = c["heads"], c["kv_heads"], hd, c["rope_theta"]
        self.q_proj = nn.Linear(d, c["heads"] * hd, bias=False, device=device)
        self.k_proj = nn.Linear(d, c["kv_heads"] * hd, bias=False, device=device)
        self.v_proj = nn.Linear(d, c["kv_heads"] * hd, bias=False, device=device)
        self.o_proj = nn.Linear(c["heads"] * hd, d, bias=False, device=device)

    def forward(self, x, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.hd).transpose(1, 2)
        cos, sin = rope_cos_sin(T, self.hd, self.theta, x.dtype)
        q = q * cos + rotate_half(q) * sin  # apply_rotary_pos_emb
        k = k * cos + rotate_half(k) * sin
        q = q.transpose(1, 2).reshape(B, T, -1)
        k = k.transpose(1, 2).reshape(B, T, -1)
        return self.o_proj(attention(q, k, self.v_proj(x), self.heads, self.kv_heads, mask))


class LlamaMLP(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.gate_proj = nn.Linear(c["width"], c["mlp"], bias=False, device=device)
        self.up_proj = nn.Linear(c["width"], c["mlp"], bias=False, device=device)
        self.down_proj = nn.Linear(c["mlp"], c["width"], bias=False, device=device)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.self_attn = LlamaAttention(c, device)
        self.mlp = LlamaMLP(c, device)
        self.input_layernorm = LlamaRMSNorm(c["width"], c["rms_eps"], device)
        self.post_attention_layernorm = LlamaRMSNorm(c["width"], c["rms_eps"], device)

    def forward(self, x, mask):
        x = x + self.self_attn(self.input_layernorm(x), mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab"], c["width"], device=device)
        self.layers = nn.ModuleList(LlamaDecoderLayer(c, device) for _ in range(c["layers"]))
        self.norm = LlamaRMSNorm(c["width"], c["rms_eps"], device)


class LlamaForCausalLM(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.model = LlamaModel(c, device)
        self.lm_head = nn.Linear(c["width"], c["vocab"], bias=False, device=device)
        if c["tie_embeddings"]:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, embeds, mask):
        x = embeds
        for layer in self.model.layers:
            x = layer(x, mask)
        return self.lm_head(self.model.norm(x))


def lm_mask(T, prefix_len, key_mask, dtype):
    """Additive [B or 1, 1, T, T]: causal, with keys < prefix_len visible to every
    query (prefix-LM), and padding keys (key_mask 0) hidden."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    visible = (j <= i) | (j < prefix_len)
    m = torch.zeros(T, T, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)[None, None]
    if key_mask is not None:
        m = m + additive_key_mask(key_mask, dtype)
        m = m.clamp(min=torch.finfo(dtype).min)
    return m

# ---- fusion block and captioner (nn/nn.h) -----------------------------------------


class FusionAttention(nn.Module):
    def __init__(self, dt, dv, heads, device=None):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dt, dt, device=device)
        self.k_proj = nn.Linear(dv, dt, device=device)
        self.v_proj = nn.Linear(dv, dt, device=device)
        self.out_proj = nn.Linear(dt, dt, device=device)

    def forward(self, t, v):
        return self.out_proj(attention(self.q_proj(t), self.k_proj(v), self.v_proj(v),
                                       self.heads, self.heads))


class FusionBlock(nn.Module):
    def __init__(self, cfg, device=None):
        super().__init__()
        dt, dv, c = cfg["text"]["width"], cfg["vision"]["width"], cfg["fusion"]
        self.ln_q = nn.LayerNorm(dt, eps=c["ln_eps"], device=device)
        self.ln_kv = nn.LayerNorm(dv, eps=c["ln_eps"], device=device)
        self.attn = FusionAttention(dt, dv, c["heads"], device)
        self.ln_mlp = nn.LayerNorm(dt, eps=c["ln_eps"], device=device)
        self.mlp = SiglipMLP(dt, c["mlp"], device)

    def forward(self, t, v, text_mask=None):
        kv = self.ln_kv(v)
        t = t + self.attn(self.ln_q(t), kv)
        t = t + self.mlp(self.ln_mlp(t))
        m = torch.ones(t.shape[:2], dtype=t.dtype) if text_mask is None else text_mask.to(t.dtype)
        pooled = (t * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        return t, pooled


def pixel_shuffle(x, s):
    """autograd.h vlm_pixel_shuffle: [B, g*g, D] -> [B, (g/s)^2, s*s*D]; output token
    (i, j) concatenates input tokens (i*s + di, j*s + dj) in (di, dj) row-major order."""
    B, N, D = x.shape
    g = int(round(math.sqrt(N)))
    x = x.view(B, g // s, s, g // s, s, D).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, (g // s) ** 2, s * s * D)


class Captioner(SiglipModel):
    def __init__(self, cfg, device=None):
        super().__init__(cfg, device)
        s = cfg["pixel_shuffle"]
        dd = cfg["decoder"]["width"]
        self.fusion = FusionBlock(cfg, device)
        self.decoder = LlamaForCausalLM(cfg["decoder"], device)
        self.image_proj = nn.Linear(cfg["vision"]["width"] * s * s, dd, device=device)
        self.fused_proj = nn.Linear(cfg["text"]["width"], dd, device=device)
        self.s = s

    def prefix(self, images, prompt_ids, prompt_mask):
        img = self.vision_model.tokens(images)
        txt = self.text_model.tokens(prompt_ids, prompt_mask)
        fused, _ = self.fusion(txt, img, prompt_mask)  # image tokens at vision width
        im = pixel_shuffle(img, self.s) if self.s > 1 else img
        return torch.cat([self.image_proj(im), self.fused_proj(fused)], dim=1)

    def loss(self, images, prompt_ids, prompt_mask, caption_in, targets):
        pre = self.prefix(images, prompt_ids, prompt_mask)
        x = torch.cat([pre, self.decoder.model.embed_tokens(caption_in)], dim=1)
        B, P, L = x.shape[0], pre.shape[1], caption_in.shape[1]
        # the prompt's padding is hidden as keys from every position
        n_img = P - prompt_ids.shape[1]
        key_mask = torch.cat([torch.ones(B, n_img, dtype=torch.uint8), prompt_mask,
                              torch.ones(B, L, dtype=torch.uint8)], dim=1)
        logits = self.decoder(x, lm_mask(P + L, P, key_mask, x.dtype))
        return F.cross_entropy(logits[:, P:].reshape(B * L, -1), targets.reshape(-1).long(),
                               ignore_index=-100)

# ---- weights ------------------------------------------------------------------------


def fill_params(model, seed):
    """Deterministic, non-trivial f32 values by parameter name (state_dict order)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():  # tied weights appear once
        shape = p.shape
        if name == "logit_scale":
            v = torch.tensor([math.log(10.0) + 0.3])
        elif name == "logit_bias":
            v = torch.tensor([-5.0])
        elif p.ndim == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight"):
            v = 1.0 + 0.2 * torch.randn(shape, generator=g)
        elif name.endswith("bias"):
            v = 0.1 * torch.randn(shape, generator=g)
        elif "embedding" in name and "patch_embedding" not in name or "embed_tokens" in name:
            v = 0.5 * torch.randn(shape, generator=g)
        elif name.endswith("probe"):
            v = torch.randn(shape, generator=g)
        else:  # linear / conv weights [out, in, ...]
            fan_in = int(np.prod(shape[1:]))
            v = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        with torch.no_grad():
            p.copy_(v.to(torch.float32))


def state(model):
    """HF-named f32 tensors without the tied lm_head."""
    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    sd.pop("decoder.lm_head.weight", None)
    return sd

# ---- safetensors (written by hand, the way the HF package writes them) --------------

DTYPES = {torch.float32: ("F32", 4, 11), torch.int32: ("I32", 4, 9), torch.uint8: ("U8", 1, 1)}


def save_safetensors(path, tensors):
    items = sorted(tensors.items(), key=lambda kv: (-DTYPES[kv[1].dtype][2], kv[0]))
    header = {"__metadata__": {"format": "pt", "generator": "scripts/gen_fixtures.py"}}
    blobs, off = [], 0
    for name, t in items:
        t = t.contiguous()
        a = t.numpy()
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": DTYPES[t.dtype][0], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return 8 + len(h) + off


def read_safetensors(path):
    """Independent strict re-read of what was written (offsets contiguous, no
    trailing bytes, aligned), returning f32/i32/u8 torch tensors."""
    buf = open(path, "rb").read()
    n = struct.unpack("<Q", buf[:8])[0]
    assert n % 8 == 0 and 8 + n <= len(buf)
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    assert header.pop("__metadata__")["format"] == "pt"
    npt = {"F32": "<f4", "I32": "<i4", "U8": "u1"}
    out, pos = {}, 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = info["data_offsets"]
        dt = np.dtype(npt[info["dtype"]])
        assert b == pos and e - b == int(np.prod(info["shape"], dtype=np.int64)) * dt.itemsize
        assert (8 + n + b) % dt.itemsize == 0
        out[name] = torch.from_numpy(np.frombuffer(buf[8 + n + b:8 + n + e], dtype=dt)
                                     .reshape(info["shape"]).copy())
        pos = e
    assert pos == len(buf) - 8 - n
    return out


def write_config(path, cfg):
    with open(path, "w") as f:
        json.dump({"model": cfg}, f, indent=2)
        f.write("\n")

# ---- structure checks against the published models -----------------------------------


def check_structure():
    # siglip-base-patch16-224: 408 tensors, 203,155,970 parameters (REFERENCE.md),
    # with the HF defaults; counted on the meta device (no memory)
    base = {"type": "siglip",
            "vision": {"image_size": 224, "patch": 16, "channels": 3, "width": 768, "layers": 12,
                       "heads": 12, "mlp": 3072, "ln_eps": 1e-6},
            "text": {"vocab": 32000, "ctx_len": 64, "width": 768, "layers": 12, "heads": 12,
                     "mlp": 3072, "ln_eps": 1e-6, "pad_id": 1}}
    m = SiglipModel(base, device="meta")
    sd = m.state_dict()
    numel = sum(v.numel() for v in sd.values())
    assert len(sd) == 408 and numel == 203155970, (len(sd), numel)
    for tower in ("vision_model", "text_model"):
        layer0 = [k for k in sd if k.startswith(tower + ".encoder.layers.0.")]
        assert len(layer0) == 16, layer0
    assert list(sd["vision_model.head.attention.in_proj_weight"].shape) == [2304, 768]
    assert list(sd["vision_model.embeddings.patch_embedding.weight"].shape) == [768, 3, 16, 16]
    # SmolLM2-135M: 134,515,008 parameters with the lm_head tied (stored once)
    smol = {"vocab": 49152, "width": 576, "layers": 30, "heads": 9, "kv_heads": 3, "mlp": 1536,
            "rms_eps": 1e-5, "rope_theta": 100000.0, "tie_embeddings": True}
    lm = LlamaForCausalLM(smol, device="meta")
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    assert sum(p.numel() for p in lm.parameters()) == 134515008
    assert list(lm.state_dict()["model.layers.0.self_attn.k_proj.weight"].shape) == [192, 576]
    print("structure: siglip-base 408 tensors / 203,155,970 params, 16 per layer; "
          "SmolLM2-135M 134,515,008 params: ok")

# ---- the fixtures ----------------------------------------------------------------------------


def grads_of(model, loss):
    loss.backward()
    out = {}
    for name, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        out["grad." + name] = g.detach().to(torch.float32)
    return out


def make_siglip():
    cfg = SIGLIP_CFG
    torch.manual_seed(0)
    m = SiglipModel(cfg)
    fill_params(m, 1234)
    weights = state(m)
    m = m.double()
    v, t = cfg["vision"], cfg["text"]
    g = torch.Generator().manual_seed(99)
    B, T = 4, t["ctx_len"]
    images = (torch.rand(B, v["channels"], v["image_size"], v["image_size"], generator=g) * 2 - 1)
    ids = torch.randint(0, t["vocab"], (B, T), generator=g, dtype=torch.int64)
    lens = [8, 5, 8, 3]
    key_mask = torch.zeros(B, T, dtype=torch.uint8)
    for b, n in enumerate(lens):
        key_mask[b, :n] = 1
        ids[b, n:] = t["pad_id"]
    io = {"images": images.float(), "ids": ids.to(torch.int32), "key_mask": key_mask}
    x = images.double()
    with torch.no_grad():
        vt, vp = m.vision_model(x)
        assert torch.allclose(vp, m.vision_model.head.explicit(vt), rtol=0, atol=1e-12)
        tt, tp = m.text_model(ids, key_mask)
        # f32 torch (HF's own precision) agrees with the f64 reference
        m32 = SiglipModel(cfg)
        m32.load_state_dict(weights)
        vt32, vp32 = m32.vision_model(images)
        assert (vt32.double() - vt).abs().max() < 1e-5 and (vp32.double() - vp).abs().max() < 1e-5
    io.update({"vision_tokens": vt, "vision_pooled": vp, "text_tokens": tt, "text_pooled": tp})
    loss, ie, te = m(x, ids, key_mask)
    io.update({"img_emb": ie.detach(), "txt_emb": te.detach(), "loss": loss.detach().reshape(1)})
    io.update(grads_of(m, loss))
    io = {k: (v.float() if v.dtype == torch.float64 else v) for k, v in io.items()}
    print("siglip: %d tensors, %d params, loss %.6f" % (len(weights), sum(w.numel() for w in weights.values()),
                                                          loss.item()))
    return cfg, weights, io


def make_captioner():
    cfg = CAPTIONER_CFG
    torch.manual_seed(0)
    m = Captioner(cfg)
    fill_params(m, 4321)
    weights = state(m)
    assert "decoder.lm_head.weight" not in weights
    m = m.double()
    assert m.decoder.lm_head.weight is m.decoder.model.embed_tokens.weight  # still tied
    v, t, d = cfg["vision"], cfg["text"], cfg["decoder"]
    g = torch.Generator().manual_seed(77)
    B, Tp, L = 2, 4, 6
    io = {}
    n_img = (v["image_size"] // v["patch"]) ** 2
    # fusion block on given token states, with a padded text row
    ft = torch.randn(B, 5, t["width"], generator=g)
    fv = torch.randn(B, n_img, v["width"], generator=g)
    fmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.uint8)
    with torch.no_grad():
        fo, fp = m.fusion(ft.double(), fv.double(), fmask)
    io.update({"fusion.text": ft, "fusion.image": fv, "fusion.text_mask": fmask,
               "fusion.out": fo, "fusion.pooled": fp})
    # decoder on given embeddings: prefix-LM (prefix 4) and causal
    T, P0 = 10, 4
    emb = torch.randn(B, T, d["width"], generator=g)
    with torch.no_grad():
        lp = m.decoder(emb.double(), lm_mask(T, P0, None, torch.float64))
        lc = m.decoder(emb.double(), lm_mask(T, 0, None, torch.float64))
    io.update({"decoder.embeds": emb, "decoder.prefix_len": torch.tensor([P0], dtype=torch.int32),
               "decoder.logits_prefix": lp, "decoder.logits_causal": lc})
    # the whole captioner: prefix and teacher-forced loss
    images = torch.rand(B, v["channels"], v["image_size"], v["image_size"], generator=g) * 2 - 1
    prompt = torch.randint(0, t["vocab"], (B, Tp), generator=g, dtype=torch.int64)
    pmask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.uint8)
    prompt[1, 2:] = t["pad_id"]
    cap = torch.randint(2, d["vocab"], (B, L), generator=g, dtype=torch.int64)
    bos, eos, pad = 0, 0, 1
    lens = [6, 3]  # caption tokens + EOS per row (padded to L)
    caption_in = torch.full((B, L), pad, dtype=torch.int64)
    targets = torch.full((B, L), -100, dtype=torch.int64)
    for b, n in enumerate(lens):
        toks = cap[b, :n - 1]
        caption_in[b, 0] = bos
        caption_in[b, 1:n] = toks
        targets[b, :n - 1] = toks
        targets[b, n - 1] = eos
    x = images.double()
    with torch.no_grad():
        pre = m.prefix(x, prompt, pmask)
    loss = m.loss(x, prompt, pmask, caption_in, targets)
    io.update({"images": images, "prompt_ids": prompt.to(torch.int32), "prompt_mask": pmask,
               "caption_in": caption_in.to(torch.int32), "targets": targets.to(torch.int32),
               "prefix": pre, "loss": loss.detach().reshape(1)})
    io.update(grads_of(m, loss))
    io = {k: (v.float() if v.dtype == torch.float64 else v) for k, v in io.items()}
    print("captioner: %d tensors, %d params, loss %.6f" % (len(weights), sum(w.numel() for w in weights.values()),
                                                             loss.item()))
    return cfg, weights, io


def no_fused_attention(*args, **kwargs):
    raise RuntimeError("fused scaled_dot_product_attention must not be used here")


def main():
    print("torch", torch.__version__)
    # every attention below is explicit matmul + softmax: make sure nothing
    # reaches a fused kernel (torch >= 2 has one; 1.13 has a private one)
    for name in ("scaled_dot_product_attention", "_scaled_dot_product_attention"):
        if hasattr(F, name):
            setattr(F, name, no_fused_attention)
    check_structure()
    os.makedirs(OUT, exist_ok=True)
    total = 0
    for name, make in (("siglip", make_siglip), ("captioner", make_captioner)):
        cfg, weights, io = make()
        write_config(os.path.join(OUT, name + ".json"), cfg)
        for fname, tensors in ((name + ".safetensors", weights), (name + "_io.safetensors", io)):
            path = os.path.join(OUT, fname)
            n = save_safetensors(path, tensors)
            back = read_safetensors(path)
            assert back.keys() == tensors.keys()
            assert all(torch.equal(back[k], tensors[k]) for k in tensors)
            total += n
            print("wrote %s (%d bytes, %d tensors)" % (os.path.relpath(path), n, len(tensors)))
        total += os.path.getsize(os.path.join(OUT, name + ".json"))
    print("total %d bytes" % total)


if __name__ == "__main__":
    sys.exit(main())
