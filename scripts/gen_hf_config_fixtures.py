#!/usr/bin/python3
"""Developer-only: tiny Hugging Face style checkpoints for tests/nn/test_hf_config.c.

Run with Debian's interpreter (numpy is all it needs); CI never runs this, the
generated files are committed:

  /usr/bin/python3 scripts/gen_hf_config_fixtures.py

Each folder under tests/nn/fixtures/hf/ is laid out like a hub snapshot: a
config.json as transformers writes it (sparse: save_pretrained drops the keys
that equal the class defaults, so sizes must come from the tensor shapes) and a
model.safetensors with the HF parameter names and shapes (REFERENCE.md).
Values are random (fixed seeds); the test only checks that they arrive where
they belong.

  siglip/         SiglipModel: nested text_config / vision_config, vision heads
                  left at the default (12), vision intermediate_size and
                  image_size absent, text layer_norm_eps 1e-5, 3 vision layers
                  and 2 text layers; F32, with the (I64) position_ids buffers
                  that older exports persisted
  siglip_vision/  SiglipVisionModel: flat config, vision_model.* tensors only
  llama/          LlamaForCausalLM as SmolLM2 ships it: full config, tied
                  embeddings (no lm_head.weight), "model." prefix, BF16, and
                  the rotary_emb.inv_freq buffers older transformers saved
  llama_untied/   a sparse Llama config (GQA off, tie_word_embeddings left at
                  its default false), names without the "model." prefix, with
                  lm_head.weight, F32
"""
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "tests", "nn", "fixtures", "hf"))


# ---- safetensors, written by hand (the python package is not installed) -----

def bf16_bits(a):
    """f32 -> bf16 bit patterns, round to nearest even (no NaNs here)."""
    u = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype("<u2")


def save_safetensors(path, tensors):
    """tensors: {name: (dtype, np.ndarray)}; larger dtypes first, then by name,
    header padded with spaces to a multiple of 8, __metadata__ format pt."""
    size = {"F32": 4, "I64": 8, "BF16": 2}
    items = sorted(tensors.items(), key=lambda kv: (-size[kv[1][0]], kv[0]))
    header = {"__metadata__": {"format": "pt", "generator": "scripts/gen_hf_config_fixtures.py"}}
    blobs, off = [], 0
    for name, (dt, a) in items:
        if dt == "F32":
            b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        elif dt == "BF16":
            b = bf16_bits(a).tobytes()
        else:
            b = np.ascontiguousarray(a, dtype="<i8").tobytes()
        assert len(b) == int(np.prod(a.shape, dtype=np.int64)) * size[dt]
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


# ---- parameter lists with the HF names ---------------------------------------

def encoder_layers(prefix, n, d, mlp):
    out = {}
    for l in range(n):
        p = "%s.encoder.layers.%d." % (prefix, l)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[p + "self_attn.%s.weight" % proj] = [d, d]
            out[p + "self_attn.%s.bias" % proj] = [d]
        for ln in ("layer_norm1", "layer_norm2"):
            out[p + ln + ".weight"] = [d]
            out[p + ln + ".bias"] = [d]
        out[p + "mlp.fc1.weight"] = [mlp, d]
        out[p + "mlp.fc1.bias"] = [mlp]
        out[p + "mlp.fc2.weight"] = [d, mlp]
        out[p + "mlp.fc2.bias"] = [d]
    return out


def vision_shapes(image, patch, ch, d, layers, mlp):
    n = (image // patch) ** 2
    s = {"vision_model.embeddings.patch_embedding.weight": [d, ch, patch, patch],
         "vision_model.embeddings.patch_embedding.bias": [d],
         "vision_model.embeddings.position_embedding.weight": [n, d],
         "vision_model.post_layernorm.weight": [d], "vision_model.post_layernorm.bias": [d],
         "vision_model.head.probe": [1, 1, d],
         "vision_model.head.attention.in_proj_weight": [3 * d, d],
         "vision_model.head.attention.in_proj_bias": [3 * d],
         "vision_model.head.attention.out_proj.weight": [d, d],
         "vision_model.head.attention.out_proj.bias": [d],
         "vision_model.head.layernorm.weight": [d], "vision_model.head.layernorm.bias": [d],
         "vision_model.head.mlp.fc1.weight": [mlp, d], "vision_model.head.mlp.fc1.bias": [mlp],
         "vision_model.head.mlp.fc2.weight": [d, mlp], "vision_model.head.mlp.fc2.bias": [d]}
    s.update(encoder_layers("vision_model", layers, d, mlp))
    return s


def text_shapes(vocab, ctx, d, layers, mlp, embed):
    s = {"text_model.embeddings.token_embedding.weight": [vocab, d],
         "text_model.embeddings.position_embedding.weight": [ctx, d],
         "text_model.final_layer_norm.weight": [d], "text_model.final_layer_norm.bias": [d],
         "text_model.head.weight": [embed, d], "text_model.head.bias": [embed]}
    s.update(encoder_layers("text_model", layers, d, mlp))
    return s


def llama_shapes(prefix, vocab, d, layers, heads, kv, inter, tied):
    hd = d // heads
    s = {prefix + "embed_tokens.weight": [vocab, d], prefix + "norm.weight": [d]}
    for l in range(layers):
        p = "%slayers.%d." % (prefix, l)
        s[p + "self_attn.q_proj.weight"] = [d, d]
        s[p + "self_attn.k_proj.weight"] = [kv * hd, d]
        s[p + "self_attn.v_proj.weight"] = [kv * hd, d]
        s[p + "self_attn.o_proj.weight"] = [d, d]
        s[p + "mlp.gate_proj.weight"] = [inter, d]
        s[p + "mlp.up_proj.weight"] = [inter, d]
        s[p + "mlp.down_proj.weight"] = [d, inter]
        s[p + "input_layernorm.weight"] = [d]
        s[p + "post_attention_layernorm.weight"] = [d]
    if not tied:
        s["lm_head.weight"] = [vocab, d]
    return s


def random_tensors(shapes, dtype, seed):
    rng = np.random.default_rng(seed)
    return {k: (dtype, rng.standard_normal(v).astype(np.float32)) for k, v in sorted(shapes.items())}


# ---- the fixtures ------------------------------------------------------------------

def make_siglip():
    d = os.path.join(OUT, "siglip")
    os.makedirs(d, exist_ok=True)
    # what save_pretrained writes for a SiglipModel: only non-default values,
    # plus the bookkeeping keys every hub config has
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["SiglipModel"],
        "initializer_factor": 1.0,
        "model_type": "siglip",
        "text_config": {"hidden_size": 16, "intermediate_size": 40, "layer_norm_eps": 1e-5,
                        "max_position_embeddings": 8, "model_type": "siglip_text_model",
                        "num_attention_heads": 2, "num_hidden_layers": 2, "projection_size": 24,
                        "vocab_size": 50},
        "torch_dtype": "float32",
        "transformers_version": "4.47.0",
        "vision_config": {"hidden_size": 24, "model_type": "siglip_vision_model",
                          "num_hidden_layers": 3, "patch_size": 4},
    })
    shapes = vision_shapes(16, 4, 3, 24, 3, 32)
    shapes.update(text_shapes(50, 8, 16, 2, 40, 24))
    shapes["logit_scale"] = [1]
    shapes["logit_bias"] = [1]
    t = random_tensors(shapes, "F32", 1)
    t["vision_model.embeddings.position_ids"] = ("I64", np.arange(16, dtype=np.int64)[None])
    t["text_model.embeddings.position_ids"] = ("I64", np.arange(8, dtype=np.int64)[None])
    save_safetensors(os.path.join(d, "model.safetensors"), t)
    return len(t)


def make_siglip_vision():
    d = os.path.join(OUT, "siglip_vision")
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["SiglipVisionModel"], "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 16, "image_size": 16, "intermediate_size": 32, "layer_norm_eps": 1e-6,
        "model_type": "siglip_vision_model", "num_attention_heads": 2, "num_channels": 3,
        "num_hidden_layers": 1, "patch_size": 4, "torch_dtype": "float32",
        "transformers_version": "4.47.0", "vision_use_head": True,
    })
    t = random_tensors(vision_shapes(16, 4, 3, 16, 1, 32), "F32", 2)
    save_safetensors(os.path.join(d, "model.safetensors"), t)
    return len(t)


def make_llama():
    d = os.path.join(OUT, "llama")
    os.makedirs(d, exist_ok=True)
    # SmolLM2-135M's config.json with tiny sizes
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 32,
        "initializer_range": 0.041666666666666664, "intermediate_size": 40,
        "is_llama_config": True, "max_position_embeddings": 64, "model_type": "llama",
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": False,
        "rope_scaling": None, "rope_theta": 100000, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16", "transformers_version": "4.40.1", "use_cache": True,
        "vocab_size": 64,
    })
    t = random_tensors(llama_shapes("model.", 64, 32, 2, 4, 2, 40, True), "BF16", 3)
    hd = 32 // 4
    inv = (100000.0 ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)).astype(np.float32)
    for l in range(2):
        t["model.layers.%d.self_attn.rotary_emb.inv_freq" % l] = ("F32", inv)
    save_safetensors(os.path.join(d, "model.safetensors"), t)
    return len(t)


def make_llama_untied():
    d = os.path.join(OUT, "llama_untied")
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 40,
        "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
        "torch_dtype": "float32", "transformers_version": "4.47.0", "vocab_size": 64,
    })
    t = random_tensors(llama_shapes("", 64, 32, 2, 4, 4, 40, False), "F32", 4)
    save_safetensors(os.path.join(d, "model.safetensors"), t)
    return len(t)


def main():
    for name, make in (("siglip", make_siglip), ("siglip_vision", make_siglip_vision),
                       ("llama", make_llama), ("llama_untied", make_llama_untied)):
        n = make()
        path = os.path.join(OUT, name, "model.safetensors")
        print("wrote %s (%d tensors, %d bytes)" % (os.path.relpath(path), n, os.path.getsize(path)))


if __name__ == "__main__":
    sys.exit(main())
