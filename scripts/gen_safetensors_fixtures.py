#!/usr/bin/python3
"""Developer-only: safetensors fixtures for tests/nn/test_safetensors.c.

Run with Debian's interpreter (it has torch and numpy); CI never runs this,
the generated file is committed.

  /usr/bin/python3 scripts/gen_safetensors_fixtures.py
      writes tests/nn/fixtures/hf_tiny.safetensors the way the Hugging Face
      `safetensors` package does (the package itself is not installed here):
      compact JSON header, "__metadata__" first, tensors ordered by dtype
      (larger first) then name, header padded with spaces to a multiple of 8,
      raw little-endian row-major data. BF16 and F16 data come from torch's
      own conversions; each converted tensor has an F32 twin "ref.<name>"
      holding torch's widening back to f32, which the C reader must reproduce,
      and "src.<name>" holds the f32 values before rounding, so the C test can
      check vlm_f32_to_bf16 / vlm_f32_to_f16 against torch's rounding.

  /usr/bin/python3 scripts/gen_safetensors_fixtures.py --check FILE
      parses FILE with the independent reader below (every rule of the
      format) and lists it; a file written by test_safetensors.c's round trip
      (metadata vlm_test=roundtrip, kept with VLM_ST_KEEP=FILE) is also
      checked value by value against the formula the test fills it with.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "nn", "fixtures", "hf_tiny.safetensors")

# Size and the Rust Dtype enum order (the Python writer sorts by it, descending).
DTYPES = {"BOOL": (1, 0), "U8": (1, 1), "I8": (1, 2), "F8_E5M2": (1, 3), "F8_E4M3": (1, 4),
          "I16": (2, 5), "U16": (2, 6), "F16": (2, 7), "BF16": (2, 8), "I32": (4, 9),
          "U32": (4, 10), "F32": (4, 11), "F64": (8, 12), "I64": (8, 13), "U64": (8, 14)}
TORCH = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
         torch.int64: "I64", torch.bool: "BOOL", torch.float64: "F64"}


def tensor_bytes(t):
    """Row-major little-endian bytes of a torch tensor (bf16 via its int16 bits)."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def serialize(tensors, metadata):
    """Same bytes as safetensors.torch.save_file (safetensors 0.4)."""
    items = sorted(tensors.items(), key=lambda kv: (-DTYPES[TORCH[kv[1].dtype]][1], kv[0]))
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name, t in items:
        b = tensor_bytes(t)
        header[name] = {"dtype": TORCH[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def fixture_tensors():
    f32 = torch.float32
    t = {}
    # Exact in f32 so the C test can also check them by formula.
    t["model.layers.0.mlp.up_proj.weight"] = ((torch.arange(12, dtype=f32) - 5.5) * 0.25).reshape(3, 4)
    # Needs rounding to bf16 / f16: torch's round-to-nearest-even is the reference.
    emb = (torch.arange(24, dtype=f32) * 0.1 - 1.0).reshape(6, 4)
    t["model.embed_tokens.weight"] = emb.to(torch.bfloat16)
    t["src.model.embed_tokens.weight"] = emb
    t["ref.model.embed_tokens.weight"] = emb.to(torch.bfloat16).to(f32)
    norm = torch.tensor([1.0, 0.5, -2.0, 65504.0, 1.0 / 3.0, 6e-8, 70000.0, -0.0], dtype=f32)
    t["model.norm.weight"] = norm.to(torch.float16)
    t["src.model.norm.weight"] = norm
    t["ref.model.norm.weight"] = norm.to(torch.float16).to(f32)
    special = torch.tensor([math.nan, math.inf, -math.inf, -0.0, 1e-45, 3.4e38], dtype=f32)
    t["special.f32"] = special
    t["special.bf16"] = special.to(torch.bfloat16)
    t["ref.special.bf16"] = special.to(torch.bfloat16).to(f32)
    t["position_ids"] = torch.arange(5, dtype=torch.int64).reshape(1, 5)  # an HF buffer
    t["mask"] = torch.tensor([True, False, True])
    t["scalar"] = torch.tensor(2.5, dtype=f32)
    t["empty"] = torch.zeros(0, 4, dtype=f32)
    return t


# ---- an independent strict reader, for --check -------------------------------

def fail(msg):
    sys.exit("check failed: " + msg)


def read_strict(path):
    buf = open(path, "rb").read()
    if len(buf) < 8:
        fail("shorter than 8 bytes")
    n = struct.unpack("<Q", buf[:8])[0]
    if n > 100_000_000 or 8 + n > len(buf):
        fail("bad header length %d" % n)
    text = buf[8:8 + n].decode("utf-8")  # raises on invalid UTF-8
    if not text.startswith("{"):
        fail("header does not start with {")
    if n % 8:
        fail("header length %d is not a multiple of 8 (our writer pads)" % n)
    if text.rstrip(" ") != text.rstrip():
        fail("header padding is not spaces")
    header = json.loads(text)
    meta = header.pop("__metadata__", {})
    if not all(isinstance(v, str) for v in meta.values()):
        fail("non-string metadata")
    data, pos = buf[8 + n:], 0
    out = {}
    for name, info in sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        size = DTYPES[info["dtype"]][0]
        b, e = info["data_offsets"]
        numel = int(np.prod(info["shape"], dtype=np.int64)) if info["shape"] else 1
        if b != pos or e - b != numel * size:
            fail("tensor %s: offsets [%d, %d], expected start %d and %d bytes" % (name, b, e, pos, numel * size))
        if (8 + n + b) % size:
            fail("tensor %s is not aligned to its element size" % name)
        pos = e
        out[name] = (info["dtype"], info["shape"], data[b:e])
    if pos != len(data):
        fail("%d trailing bytes" % (len(data) - pos))
    return meta, out


def roundtrip_value(name, numel):
    """What test_safetensors.c fills a round-trip parameter with; "a.bias"
    holds the special values (a NaN with a payload, Inf, -0, the smallest
    denormal, -3.4e38) that must survive bit for bit."""
    if name == "a.bias":
        bits = [0x7FC00123, 0x7F800000, 0x80000000, 0x00000001]
        return np.concatenate([np.array(bits, dtype=np.uint32).view(np.float32),
                               np.array([-3.4e38], dtype=np.float32)])
    seed = sum(name.encode()) % 17
    i = np.arange(numel, dtype=np.int64)
    return (((i * 7 + seed * 13) % 101 - 50) / 64.0).astype(np.float32)


def check(path):
    meta, tensors = read_strict(path)
    print("metadata:", meta)
    if meta.get("format") != "pt":
        fail("metadata format is not pt")
    for name, (dt, shape, raw) in sorted(tensors.items()):
        print("  %-40s %-5s %s" % (name, dt, shape))
    if meta.get("vlm_test") == "roundtrip":
        for name, (dt, shape, raw) in tensors.items():
            got = np.frombuffer(raw, dtype="<f4")
            want = roundtrip_value(name, got.size)
            if dt != "F32" or not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
                fail("tensor %s differs from the test's values" % name)
        print("round-trip values: all %d tensors bit-identical to the formula" % len(tensors))
    print("ok:", path)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
        return
    blob = serialize(fixture_tensors(), {"format": "pt"})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(blob)
    print("wrote %s (%d bytes)" % (os.path.normpath(OUT), len(blob)))
    check(OUT)


if __name__ == "__main__":
    main()
