#!/usr/bin/python3
"""PyTorch baseline for `vlm bench model` and `vlm bench generate`.

Run with Debian's interpreter (python3-torch 1.13):

  /usr/bin/python3 scripts/bench_torch.py model --config configs/bench-siglip.json \\
      [--precision f32|bf16] [--steps N] [--warmup W] [--threads T] [--batch B]
  /usr/bin/python3 scripts/bench_torch.py generate --config configs/bench-caption.json \\
      [--batch B] [--tokens N] [--steps R] [--warmup W] [--threads T]

The same architectures and sizes as nn/ (adapted from scripts/gen_fixtures.py,
which follows the Hugging Face modules): SigLIP towers (conv patch embedding,
pre-LN blocks, MAP head via the fused in_proj, last-position text pooling),
the sigmoid loss, the captioner's fusion block, projections and LLaMA decoder
(GQA via repeat_kv, half-split RoPE, RMSNorm in f32, SwiGLU, tied lm_head).
Standard modules: nn.Linear, nn.LayerNorm, nn.Conv2d, nn.Embedding,
F.gelu(approximate="tanh"); attention is matmul + softmax (HF's eager path;
torch 1.13 has no public scaled_dot_product_attention).

It does what our benchmark does, step for step: the same synthetic batch
shapes (random images in [-1, 1]; SigLIP text ids with no mask; captioner:
an 8-token prompt with a full mask, 32 caption ids and random targets), the
same loss (the captioner's lm_head runs on the caption positions only, as
nn/captioner.c does), AdamW (torch.optim.AdamW, lr 3e-4, betas (0.9, 0.999),
eps 1e-8, weight decay 0.01 on weights, 0 on biases / norm gains /
embeddings / probe / logit scale and bias, as optim/groups.c; foreach left
at its default), zero_grad, and for bf16 the forward under
torch.autocast("cpu", dtype=torch.bfloat16). Generation: greedy decoding with
a past_key_values style cache (keys/values concatenated per step), prefill of
[prefix; BOS] under the prefix-LM mask, then one token per step.

Prints a human-readable report and, last, one JSON line with the same fields
as ours (model FLOPs computed with the same formula; MFU against the GEMM
peak measured in this process with torch.mm)."""
import argparse
import ctypes
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PROMPT, CAPTION = 8, 32  # captioner bench sizes (prompt = min(text ctx_len, 8))


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def blas_core():
    """OpenBLAS kernel set of the libblas.so.3 torch links (Debian: OpenBLAS)."""
    for name in ("libblas.so.3", "libopenblas.so.0"):
        try:
            lib = ctypes.CDLL(name)
            f = lib.openblas_get_corename
            f.restype = ctypes.c_char_p
            return "%s (%s)" % (f().decode(), name)
        except (OSError, AttributeError):
            continue
    return "unknown"

# ---- modules ------------------------------------------------------------------------


def attention(q, k, v, heads, kv_heads, mask=None):
    """q [B, Tq, H*hd], k/v [B, Tk, Hkv*hd] -> [B, Tq, H*hd]; explicit matmul + softmax,
    kv heads repeated as HF repeat_kv; mask additive, broadcast to [B, H, Tq, Tk]."""
    B, Tq, _ = q.shape
    Tk = k.shape[1]
    hd = q.shape[2] // heads
    q = q.view(B, Tq, heads, hd).transpose(1, 2)
    k = k.view(B, Tk, kv_heads, hd).transpose(1, 2)
    v = v.view(B, Tk, kv_heads, hd).transpose(1, 2)
    if kv_heads != heads:
        r = heads // kv_heads
        k = k[:, :, None].expand(B, kv_heads, r, Tk, hd).reshape(B, heads, Tk, hd)
        v = v[:, :, None].expand(B, kv_heads, r, Tk, hd).reshape(B, heads, Tk, hd)
    w = torch.matmul(q, k.transpose(2, 3)) * hd ** -0.5
    if mask is not None:
        w = w + mask
    w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(w, v).transpose(1, 2).reshape(B, Tq, heads * hd)


def additive_key_mask(key_mask, dtype):
    if key_mask is None:
        return None
    return ((1.0 - key_mask.to(dtype)) * torch.finfo(dtype).min)[:, None, None, :]


class SiglipAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        o = attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, self.heads, mask)
        return self.out_proj(o)


class SiglipMLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class EncoderLayer(nn.Module):
    def __init__(self, dim, heads, mlp, eps):
        super().__init__()
        self.self_attn = SiglipAttention(dim, heads)
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps)
        self.mlp = SiglipMLP(dim, mlp)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x, mask=None):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(c["width"], c["heads"], c["mlp"], c["ln_eps"])
                                    for _ in range(c["layers"]))

    def forward(self, x, mask=None):
        for layer in self.layers:
            x = layer(x, mask)
        return x


class MAPHead(nn.Module):
    """SiglipMultiheadAttentionPoolingHead with the fused in_proj split (as ours)."""

    def __init__(self, c):
        super().__init__()
        d = c["width"]
        self.heads = c["heads"]
        self.probe = nn.Parameter(torch.empty(1, 1, d))
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d))
        self.out_proj = nn.Linear(d, d)
        self.layernorm = nn.LayerNorm(d, eps=c["ln_eps"])
        self.mlp = SiglipMLP(d, c["mlp"])

    def forward(self, x):
        d = x.shape[2]
        W, b = self.in_proj_weight, self.in_proj_bias
        q = F.linear(self.probe.expand(x.shape[0], 1, d), W[:d], b[:d])
        o = attention(q, F.linear(x, W[d:2 * d], b[d:2 * d]), F.linear(x, W[2 * d:], b[2 * d:]),
                      self.heads, self.heads)
        h = self.out_proj(o).float()  # f32 under autocast too: 1.13's CPU layer_norm wants
        h = h + self.mlp(self.layernorm(h))  # input and weight in one dtype
        return h[:, 0]


class VisionTower(nn.Module):
    def __init__(self, c, head=True):
        super().__init__()
        n = (c["image_size"] // c["patch"]) ** 2
        self.patch_embedding = nn.Conv2d(c["channels"], c["width"], c["patch"], stride=c["patch"])
        self.position_embedding = nn.Embedding(n, c["width"])
        self.encoder = Encoder(c)
        self.post_layernorm = nn.LayerNorm(c["width"], eps=c["ln_eps"])
        self.head = MAPHead(c) if head else None

    def tokens(self, images):
        x = self.patch_embedding(images).flatten(2).transpose(1, 2)
        x = x + self.position_embedding.weight[None]
        return self.post_layernorm(self.encoder(x))


class TextTower(nn.Module):
    def __init__(self, c, embed_dim, head=True):
        super().__init__()
        self.token_embedding = nn.Embedding(c["vocab"], c["width"])
        self.position_embedding = nn.Embedding(c["ctx_len"], c["width"])
        self.encoder = Encoder(c)
        self.final_layer_norm = nn.LayerNorm(c["width"], eps=c["ln_eps"])
        self.head = nn.Linear(c["width"], embed_dim) if head else None

    def tokens(self, ids, key_mask=None):
        x = self.token_embedding(ids) + self.position_embedding.weight[None, :ids.shape[1]]
        return self.final_layer_norm(self.encoder(x, additive_key_mask(key_mask, x.dtype)))


class Siglip(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.vision_model = VisionTower(cfg["vision"])
        self.text_model = TextTower(cfg["text"], cfg["vision"]["width"])
        self.logit_scale = nn.Parameter(torch.empty(1))
        self.logit_bias = nn.Parameter(torch.empty(1))

    def loss(self, images, ids):
        img = self.vision_model.head(self.vision_model.tokens(images))
        txt = self.text_model.head(self.text_model.tokens(ids)[:, -1, :])
        img = img / img.norm(p=2, dim=-1, keepdim=True)
        txt = txt / txt.norm(p=2, dim=-1, keepdim=True)
        logits = torch.matmul(txt, img.t()) * self.logit_scale.exp() + self.logit_bias
        n = logits.shape[0]
        labels = 2 * torch.eye(n, dtype=logits.dtype) - 1
        return -F.logsigmoid(labels * logits).sum() / n


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dt)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["width"], c["width"] // c["heads"]
        self.heads, self.kv_heads, self.hd = c["heads"], c["kv_heads"], hd
        self.q_proj = nn.Linear(d, c["heads"] * hd, bias=False)
        self.k_proj = nn.Linear(d, c["kv_heads"] * hd, bias=False)
        self.v_proj = nn.Linear(d, c["kv_heads"] * hd, bias=False)
        self.o_proj = nn.Linear(c["heads"] * hd, d, bias=False)

    def forward(self, x, mask, cos, sin, past=None):
        """cos/sin [T, hd] for this call's positions; past = (k, v) [B, Hkv, Tpast, hd]
        or None; returns (out, (k, v)) with the new keys appended (torch.cat)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        Tk = k.shape[2]
        o = attention(q.transpose(1, 2).reshape(B, T, -1), k.transpose(1, 2).reshape(B, Tk, -1),
                      v.transpose(1, 2).reshape(B, Tk, -1), self.heads, self.kv_heads, mask)
        return self.o_proj(o), (k, v)


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["width"], c["mlp"], bias=False)
        self.up_proj = nn.Linear(c["width"], c["mlp"], bias=False)
        self.down_proj = nn.Linear(c["mlp"], c["width"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = LlamaAttention(c)
        self.mlp = LlamaMLP(c)
        self.input_layernorm = RMSNorm(c["width"], c["rms_eps"])
        self.post_attention_layernorm = RMSNorm(c["width"], c["rms_eps"])

    def forward(self, x, mask, cos, sin, past=None):
        a, kv = self.self_attn(self.input_layernorm(x), mask, cos, sin, past)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class Decoder(nn.Module):
    """LlamaForCausalLM with a tied lm_head; cos/sin cached for max_len positions."""

    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab"], c["width"])
        self.layers = nn.ModuleList(LlamaLayer(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["width"], c["rms_eps"])
        self.lm_head = nn.Linear(c["width"], c["vocab"], bias=False)
        if c.get("tie_embeddings", True):
            self.lm_head.weight = self.embed_tokens.weight
        hd = c["width"] // c["heads"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        f = torch.outer(torch.arange(c["max_len"], dtype=torch.float32), inv)
        emb = torch.cat((f, f), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def trunk(self, x, mask, pos=0, past=None):
        T = x.shape[1]
        cos, sin = self.cos[pos:pos + T], self.sin[pos:pos + T]
        new = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, mask, cos, sin, None if past is None else past[i])
            new.append(kv)
        return x, new

    def head(self, x):
        return self.lm_head(self.norm(x))


def prefix_lm_mask(T, prefix_len, key_mask, dtype):
    """Additive [B, 1, T, T]: causal, keys < prefix_len visible to all, padding keys hidden."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    visible = (j <= i) | (j < prefix_len)
    m = torch.zeros(T, T, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)[None, None]
    if key_mask is not None:
        m = (m + additive_key_mask(key_mask, dtype)).clamp(min=torch.finfo(dtype).min)
    return m


class Fusion(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        dt, dv, c = cfg["text"]["width"], cfg["vision"]["width"], cfg["fusion"]
        self.heads = c["heads"]
        self.ln_q = nn.LayerNorm(dt, eps=c["ln_eps"])
        self.ln_kv = nn.LayerNorm(dv, eps=c["ln_eps"])
        self.q_proj, self.k_proj = nn.Linear(dt, dt), nn.Linear(dv, dt)
        self.v_proj, self.out_proj = nn.Linear(dv, dt), nn.Linear(dt, dt)
        self.ln_mlp = nn.LayerNorm(dt, eps=c["ln_eps"])
        self.mlp = SiglipMLP(dt, c["mlp"])

    def forward(self, t, v):
        kv = self.ln_kv(v)
        t = t + self.out_proj(attention(self.q_proj(self.ln_q(t)), self.k_proj(kv),
                                        self.v_proj(kv), self.heads, self.heads))
        return t + self.mlp(self.ln_mlp(t))


class Captioner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        s, dd = cfg.get("pixel_shuffle", 1), cfg["decoder"]["width"]
        self.s = s
        self.vision_model = VisionTower(cfg["vision"], head=False)
        self.text_model = TextTower(cfg["text"], cfg["vision"]["width"], head=False)
        self.fusion = Fusion(cfg)
        self.decoder = Decoder(cfg["decoder"])
        self.image_proj = nn.Linear(cfg["vision"]["width"] * s * s, dd)
        self.fused_proj = nn.Linear(cfg["text"]["width"], dd)

    def prefix(self, images, prompt, pmask):
        img = self.vision_model.tokens(images)
        txt = self.text_model.tokens(prompt, pmask)
        fused = self.fusion(txt, img)
        if self.s > 1:
            B, N, D = img.shape
            g, s = int(round(math.sqrt(N))), self.s
            img = img.view(B, g // s, s, g // s, s, D).permute(0, 1, 3, 2, 4, 5)
            img = img.reshape(B, (g // s) ** 2, s * s * D)
        return torch.cat([self.image_proj(img), self.fused_proj(fused)], dim=1)

    def loss(self, images, prompt, pmask, caption_in, targets):
        pre = self.prefix(images, prompt, pmask)
        x = torch.cat([pre, self.decoder.embed_tokens(caption_in)], dim=1)
        B, P, L = x.shape[0], pre.shape[1], caption_in.shape[1]
        n_img = P - prompt.shape[1]
        key_mask = torch.cat([torch.ones(B, n_img, dtype=torch.uint8), pmask,
                              torch.ones(B, L, dtype=torch.uint8)], dim=1)
        h, _ = self.decoder.trunk(x, prefix_lm_mask(P + L, P, key_mask, torch.float32))
        logits = self.decoder.head(h[:, P:])  # caption positions only, as ours
        return F.cross_entropy(logits.reshape(B * L, -1).float(), targets.reshape(-1),
                               ignore_index=-100)

# ---- init, groups, FLOPs --------------------------------------------------------------


def init_params(model, seed):
    """As vlm_init_params: biases 0, 1-D weights (norm gains) 1, logit_scale log 10,
    logit_bias -10, everything else N(0, 0.02^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(math.log(10.0))
            elif name == "logit_bias":
                p.fill_(-10.0)
            elif name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1 and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def no_decay(name, p):
    """optim/groups.c vlm_param_no_decay."""
    return (name.endswith("bias") or (p.ndim == 1 and name.endswith("weight"))
            or "token_embedding" in name or "position_embedding" in name
            or "embed_tokens" in name or name.endswith("head.probe")
            or name in ("logit_scale", "logit_bias"))


def model_flops(cfg, B, L):
    """The formula of train/bench_model.c: 6 * rows * in * out per GEMM and
    12 * B * Tq * Tk * Dqk per attention, masks not discounted."""
    f = {"gemm": 0.0, "attn": 0.0}

    def gemm(rows, i, o):
        f["gemm"] += 6.0 * rows * i * o

    def attn(b, tq, tk, d):
        f["attn"] += 12.0 * b * tq * tk * d
    v, t = cfg["vision"], cfg["text"]
    g = v["image_size"] // v["patch"]
    N, dv, dt, T = g * g, v["width"], t["width"], t["ctx_len"]
    gemm(B * N, v["channels"] * v["patch"] ** 2, dv)
    for _ in range(v["layers"]):
        for _ in range(4):
            gemm(B * N, dv, dv)
        gemm(B * N, dv, v["mlp"])
        gemm(B * N, v["mlp"], dv)
        attn(B, N, N, dv)
    if cfg["type"] == "captioner":
        T = min(T, PROMPT)
    for _ in range(t["layers"]):
        for _ in range(4):
            gemm(B * T, dt, dt)
        gemm(B * T, dt, t["mlp"])
        gemm(B * T, t["mlp"], dt)
        attn(B, T, T, dt)
    if cfg["type"] != "captioner":
        gemm(B, dv, dv)
        gemm(2 * B * N, dv, dv)
        attn(B, 1, N, dv)
        gemm(B, dv, dv)
        gemm(B, dv, v["mlp"])
        gemm(B, v["mlp"], dv)
        gemm(B, dt, dv)
        return f["gemm"] + f["attn"]
    d, fu = cfg["decoder"], cfg["fusion"]
    s = cfg.get("pixel_shuffle", 1)
    Ni, dd = N / (s * s), d["width"]
    hd = dd // d["heads"]
    gemm(2 * B * T, dt, dt)
    gemm(2 * B * N, dv, dt)
    attn(B, T, N, dt)
    gemm(B * T, dt, fu["mlp"])
    gemm(B * T, fu["mlp"], dt)
    gemm(B * Ni, dv * s * s, dd)
    gemm(B * T, dt, dd)
    Td = Ni + T + L
    for _ in range(d["layers"]):
        gemm(B * Td, dd, d["heads"] * hd)
        gemm(2 * B * Td, dd, d["kv_heads"] * hd)
        gemm(B * Td, d["heads"] * hd, dd)
        gemm(2 * B * Td, dd, d["mlp"])
        gemm(B * Td, d["mlp"], dd)
        attn(B, Td, Td, d["heads"] * hd)
    gemm(B * L, dd, d["vocab"])
    return f["gemm"] + f["attn"]


def peak(dtype, n=2048, reps=5):
    a = torch.rand(n, n).mul_(2).sub_(1).to(dtype)
    b = torch.rand(n, n).mul_(2).sub_(1).to(dtype)
    best = float("inf")
    for r in range(reps + 1):
        t0 = time.perf_counter()
        torch.mm(a, b)
        dt = time.perf_counter() - t0
        if r:
            best = min(best, dt)
    return 2.0 * n ** 3 / best * 1e-9

# ---- the benchmarks -------------------------------------------------------------------


def load_cfg(path):
    with open(path) as f:
        cfg = json.load(f)["model"]
    if cfg["type"] not in ("siglip", "captioner"):
        raise SystemExit("error: %s: model.type %s is neither siglip nor captioner" % (path, cfg["type"]))
    return cfg


def make_batch(cfg, B, seed):
    g = torch.Generator().manual_seed(seed)
    v = cfg["vision"]
    b = {"images": torch.rand(B, v["channels"], v["image_size"], v["image_size"], generator=g) * 2 - 1}
    if cfg["type"] == "siglip":
        b["ids"] = torch.randint(0, cfg["text"]["vocab"], (B, cfg["text"]["ctx_len"]), generator=g)
        return b
    Tp = min(cfg["text"]["ctx_len"], PROMPT)
    b["prompt"] = torch.randint(0, cfg["text"]["vocab"], (B, Tp), generator=g)
    b["pmask"] = torch.ones(B, Tp, dtype=torch.uint8)
    b["caption_in"] = torch.randint(0, cfg["decoder"]["vocab"], (B, CAPTION), generator=g)
    b["targets"] = torch.randint(0, cfg["decoder"]["vocab"], (B, CAPTION), generator=g)
    return b


def build(cfg, seed):
    torch.manual_seed(seed)
    m = Siglip(cfg) if cfg["type"] == "siglip" else Captioner(cfg)
    init_params(m, seed)
    return m


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def bench_model(a):
    cfg = load_cfg(a.config)
    cap = cfg["type"] == "captioner"
    B = a.batch or (32 if cap else 64)
    rss_start = rss_mib()
    m = build(cfg, a.seed)
    m.train()
    params = sum(p.numel() for p in m.parameters())
    groups = [{"params": [p for n, p in m.named_parameters() if not no_decay(n, p)], "weight_decay": 0.01},
              {"params": [p for n, p in m.named_parameters() if no_decay(n, p)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.999), eps=1e-8)
    b = make_batch(cfg, B, a.seed)
    bf16 = a.precision == "bf16"
    flops = model_flops(cfg, B, CAPTION)
    print("torch bench model: %s (%s), %.2fM parameters, batch %d, precision %s, threads %d, "
          "torch %s, BLAS %s, AdamW foreach %s" % (cfg["type"], a.config, params / 1e6, B, a.precision,
                                                   torch.get_num_threads(), torch.__version__, blas_core(),
                                                   opt.defaults.get("foreach")))
    print("model FLOPs: %.1f GFLOP/step" % (flops * 1e-9))
    sys.stdout.flush()

    def loss_fn():
        if cap:
            return m.loss(b["images"], b["prompt"], b["pmask"], b["caption_in"], b["targets"])
        return m.loss(b["images"], b["ids"])

    times, cpus, losses = [], [], []
    for i in range(a.warmup + a.steps):
        w0, c0 = time.perf_counter(), time.process_time()
        if bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_fn()
        else:
            loss = loss_fn()
        loss = loss.float()
        loss.backward()
        opt.step()
        opt.zero_grad()
        l = loss.item()
        dw, dc = time.perf_counter() - w0, time.process_time() - c0
        timed = i >= a.warmup
        if timed:
            times.append(dw)
            cpus.append(dc)
        losses.append(l)
        print("%s %3d: %.4f s  (cpu %.2f s)  loss %.4f" % ("step  " if timed else "warmup",
                                                           i - a.warmup + 1 if timed else i + 1, dw, dc, l))
        sys.stdout.flush()
    rss_peak = rss_mib()
    pk32, pk16 = peak(torch.float32), peak(torch.bfloat16)
    med, mn = median(times), min(times)
    th = torch.get_num_threads()
    gflops = flops / med * 1e-9
    pk = pk16 if bf16 else pk32
    print("step time: median %.4f s, min %.4f s over %d steps (after %d warm-up); cpu/(wall x %d threads) %.2f"
          % (med, mn, a.steps, a.warmup, th, median(cpus) / med / th))
    print("throughput: %.2f images/s (median), %.2f images/s (min)" % (B / med, B / mn))
    print("achieved: %.1f GFLOP/s; peak (torch.mm 2048^3, best of 5): f32 %.1f, bf16 %.1f GFLOP/s; MFU %.1f%%"
          % (gflops, pk32, pk16, 100 * gflops / pk))
    print("memory: peak RSS %.1f MiB (%.1f MiB at start)" % (rss_peak, rss_start))
    print(json.dumps({
        "bench": "model", "framework": "torch", "model": cfg["type"], "config": a.config,
        "precision": a.precision, "checkpoint": False, "threads": th, "batch": B,
        "steps": a.steps, "warmup": a.warmup, "params": params, "step_s_median": med,
        "step_s_min": mn, "step_s": times, "cpu_util": median(cpus) / med / th,
        "images_per_s": B / med, "gflop_per_step": flops * 1e-9, "gflops": gflops,
        "peak_gflops_f32": pk32, "peak_gflops_bf16": pk16, "mfu": gflops / pk,
        "peak_rss_mib": rss_peak, "start_rss_mib": rss_start, "arena_peak_mib": None,
        "first_loss": losses[0], "last_loss": losses[-1], "blas": blas_core(),
        "torch": torch.__version__, "foreach": opt.defaults.get("foreach")}))
    return 0


@torch.no_grad()
def generate_once(m, b, n):
    d = m.decoder
    t0 = time.perf_counter()
    pre = m.prefix(b["images"], b["prompt"], b["pmask"])
    t1 = time.perf_counter()
    B, P = pre.shape[0], pre.shape[1]
    ids = torch.zeros(B, 1, dtype=torch.long)  # BOS
    x = torch.cat([pre, d.embed_tokens(ids)], dim=1)
    h, past = d.trunk(x, prefix_lm_mask(P + 1, P, None, torch.float32), 0, None)
    logits = d.head(h)
    ids = logits[:, -1].argmax(-1, keepdim=True)
    out = [ids]
    t2 = time.perf_counter()
    for t in range(1, n):
        h, past = d.trunk(d.embed_tokens(ids), None, P + t, past)
        ids = d.head(h)[:, -1].argmax(-1, keepdim=True)
        out.append(ids)
    t3 = time.perf_counter()
    return (t1 - t0, t2 - t1, t3 - t2), torch.cat(out, dim=1)


def bench_generate(a):
    cfg = load_cfg(a.config)
    if cfg["type"] != "captioner":
        raise SystemExit("error: %s: generate needs a captioner config" % a.config)
    B, n = a.batch or 1, a.tokens
    rss_start = rss_mib()
    m = build(cfg, a.seed)
    m.eval()
    b = make_batch(cfg, B, a.seed)
    g = cfg["vision"]["image_size"] // cfg["vision"]["patch"] // cfg.get("pixel_shuffle", 1)
    P = g * g + b["prompt"].shape[1]
    if P + n > cfg["decoder"]["max_len"]:
        raise SystemExit("error: prefix %d + %d tokens exceed model.decoder.max_len" % (P, n))
    bf16 = a.precision == "bf16"
    print("torch bench generate: captioner (%s), %.2fM parameters, batch %d, %d new tokens after a "
          "%d-position prefix, greedy with a past_key_values cache, precision %s, threads %d, BLAS %s"
          % (a.config, sum(p.numel() for p in m.parameters()) / 1e6, B, n, P, a.precision,
             torch.get_num_threads(), blas_core()))
    sys.stdout.flush()
    pre, fill, dec, tot = [], [], [], []
    for r in range(a.warmup + a.steps):
        if bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                (tp, tf, td), toks = generate_once(m, b, n)
        else:
            (tp, tf, td), toks = generate_once(m, b, n)
        timed = r >= a.warmup
        print("%s %2d: prefix %.4f s, prefill %.4f s, %d decode steps %.4f s (%.2f ms/step, %.1f tokens/s)"
              % ("run   " if timed else "warmup", r - a.warmup + 1 if timed else r + 1, tp, tf, n - 1, td,
                 1e3 * td / max(n - 1, 1), B * (n - 1) / td if n > 1 else float("nan")))
        sys.stdout.flush()
        if timed:
            pre.append(tp)
            fill.append(tf)
            dec.append(td)
            tot.append(tp + tf + td)
    mdec = median(dec)
    tps = B * (n - 1) / mdec if n > 1 else None
    e2e = B * n / median(tot)
    rss_peak = rss_mib()
    print("decode: %.1f tokens/s; end to end: %.1f tokens/s; peak RSS %.1f MiB" % (tps or 0, e2e, rss_peak))
    print("first sequence: " + " ".join(str(int(x)) for x in toks[0]))
    print(json.dumps({
        "bench": "generate", "framework": "torch", "config": a.config, "precision": a.precision,
        "threads": torch.get_num_threads(), "batch": B, "tokens": n, "prefix_len": P,
        "repeats": a.steps, "prefix_s": median(pre), "prefill_s": median(fill), "decode_s": mdec,
        "ms_per_step": 1e3 * mdec / (n - 1) if n > 1 else None, "decode_tokens_per_s": tps,
        "e2e_tokens_per_s": e2e, "peak_rss_mib": rss_peak, "start_rss_mib": rss_start,
        "blas": blas_core(), "torch": torch.__version__}))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("model", "generate"))
    p.add_argument("--config", required=True)
    p.add_argument("--precision", choices=("f32", "bf16"), default="f32")
    p.add_argument("--steps", type=int, default=None, help="timed steps (model, default 10) or repeats (generate, 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps / repeats first (2 / 1)")
    p.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    gen = a.mode == "generate"
    if a.steps is None:
        a.steps = 5 if gen else 10
    if a.warmup is None:
        a.warmup = 1 if gen else 2
    if a.steps < 1 or a.warmup < 0 or a.batch < 0 or a.tokens < 1 or a.threads < 0:
        p.error("--steps, --tokens >= 1; --warmup, --batch, --threads >= 0")
    if a.threads:
        torch.set_num_threads(a.threads)
    for name in ("scaled_dot_product_attention", "_scaled_dot_product_attention"):
        if hasattr(F, name):  # everything here is explicit matmul + softmax
            setattr(F, name, None)
    return bench_generate(a) if gen else bench_model(a)


if __name__ == "__main__":
    sys.exit(main())
