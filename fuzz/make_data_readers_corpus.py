#!/usr/bin/env python3
"""Writes the seed corpus of the data_readers fuzz target (fuzz/corpus/data_readers): small
valid .npy/.npz files (seed-ok-*, numpy's own writers, stored and deflated) and broken ones
(seed-bad-*: headers that lie, truncation, a zip bomb, corrupt or unsupported members). The
replay test (tests/data_readers_corpus.rs) expects every seed-ok-* to read and every
seed-bad-* to give an error, under the fuzz target's 16 MiB cap.

Usage: python3 fuzz/make_data_readers_corpus.py
"""
import io
import pathlib
import zipfile

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent / "corpus" / "data_readers"


def npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def header(descr, shape, version=1):
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    text += " " * ((-(10 + len(text) + 1)) % 64) + "\n"
    size = len(text).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + size + text.encode()


def npz(members, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def savez(compressed, **arrays):
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def declare_size(archive, size):
    """The archive with its only member's uncompressed size set to `size` (both headers)."""
    data = bytearray(archive)
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22 : local + 26] = size.to_bytes(4, "little")
    data[central + 24 : central + 28] = size.to_bytes(4, "little")
    return bytes(data)


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    ok = {
        "f32.npy": npy(x),
        "f16-big-endian.npy": npy(np.arange(6, dtype=">f2").reshape(3, 2)),
        "bool-fortran.npy": npy(np.asfortranarray(np.eye(3, dtype=bool))),
        "u8-scalar.npy": npy(np.uint8(7)),
        "i64-empty.npy": npy(np.zeros((0, 4), dtype=np.int64)),
        "v2-header.npy": header("<i4", "(2,)", version=2) + np.array([1, 2], "<i4").tobytes(),
        "savez.npz": savez(False, x=x, tokens=np.arange(4, dtype=np.int64)),
        "savez-compressed.npz": savez(
            True, x=x, tokens=np.arange(4, dtype=np.int32), half=np.ones(3, np.float16), flags=np.ones(2, bool)
        ),
    }
    good = npy(x)
    member = npz([("x.npy", good)])
    crc = bytearray(member)
    crc[member.find(b"PK\x01\x02") + 16] ^= 0xFF  # the central directory's CRC
    zeros = header("<f4", "(16777216,)") + bytes(64 << 20)
    bad = {
        "2pow40-values.npy": header("<f4", "(1099511627776,)") + bytes(100),
        "truncated.npy": good[:-5],
        "extra-bytes.npy": good + b"\0",
        "header-4gib.npy": b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr'",
        "deep-nesting.npy": header("<f4", "(" * 40 + "1," + ")" * 40),
        "complex.npy": npy(np.ones(2, np.complex64)),
        "uint64.npy": npy(np.ones(2, np.uint64)),
        "structured.npy": npy(np.zeros(2, dtype=[("a", "<i4"), ("b", "<f4")])),
        "object.npy": header("|O", "(1,)") + bytes(8),
        "bool-value-7.npy": header("|b1", "(2,)") + b"\x00\x07",
        "shape-overflow.npy": header("<f8", "(4294967296, 4294967296, 4294967296)"),
        "no-magic.npy": b"NUMPY" + good[6:],
        "zip-bomb-64mib.npz": npz([("x.npy", zeros)]),
        "lying-size.npz": declare_size(npz([("x.npy", header("<f4", "(16,)") + bytes(64 + (1 << 20)))]), 192),
        "wrong-crc.npz": bytes(crc),
        "bzip2.npz": npz([("x.npy", good)], zipfile.ZIP_BZIP2),
        "truncated.npz": member[: len(member) // 2],
        "member-truncated.npz": npz([("x.npy", good[:-5])]),
        "not-a-zip.npz": b"PK\x03\x04" + bytes(40),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in ok.items():
        (OUT / f"seed-ok-{name}").write_bytes(data)
    for name, data in bad.items():
        (OUT / f"seed-bad-{name}").write_bytes(data)
    print(f"{len(ok)} valid and {len(bad)} broken seeds in {OUT}")


if __name__ == "__main__":
    main()
