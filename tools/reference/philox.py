"""Independent Python Philox4x32-10 and the standard-normal stream of tim (include/tim/core/random.hpp).

Written from the published definition (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC11; Random123's philox4x32): 10 rounds of
    (c0, c1, c2, c3) -> (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0))
with M0 = 0xD2511F53, M1 = 0xCD9E8D57, and the key bumped by (0x9E3779B9, 0xBB67AE85) between
rounds. Used to cross-check the C++ generator and to draw the stochastic-sampling noise of the
sampler golden files. Run `python philox.py` for the known-answer self-test.

tim's layout (docs/sampling.md): key = (seed lo32, seed hi32), counter = (element // 4, step,
sample lo32, sample hi32); output words (w0, w1) -> normals of lanes 0, 1 and (w2, w3) -> lanes
2, 3 by Box-Muller in double with u = (w + 0.5) / 2^32: R = sqrt(-2 ln u_a), theta = 2 pi u_b,
lane 0/2 = R cos theta, lane 1/3 = R sin theta.
"""

from __future__ import annotations

import math

import numpy as np

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF
ROUNDS = 10

# Random123 kat_vectors, philox4x32 with 10 rounds: (counter, key, expected output).
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

INITIAL_NOISE_STEP = 0xFFFFFFFF  # the step word of the initial noise stream (tim::random::initial_noise_step)


def philox4x32(counter, key, rounds: int = ROUNDS):
    """One Philox4x32 block: 4 counter words and 2 key words (ints) -> 4 output words."""
    c0, c1, c2, c3 = (int(v) & MASK for v in counter)
    k0, k1 = (int(v) & MASK for v in key)
    for i in range(rounds):
        if i:
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0, p1 & MASK, (p0 >> 32) ^ c3 ^ k1, p0 & MASK)
    return c0, c1, c2, c3


def uniform_open(word: int) -> float:
    """A 32-bit word -> (word + 0.5) / 2^32, strictly inside (0, 1), exact in double."""
    return (word + 0.5) / 4294967296.0


def normal_block(seed: int, sample: int, step: int, block: int):
    """The four standard normals of counter block `block` (elements 4 block .. 4 block + 3)."""
    key = (seed & MASK, (seed >> 32) & MASK)
    counter = (block & MASK, step & MASK, sample & MASK, (sample >> 32) & MASK)
    w = philox4x32(counter, key)
    out = []
    for a, b in ((w[0], w[1]), (w[2], w[3])):
        radius = math.sqrt(-2.0 * math.log(uniform_open(a)))
        theta = 2.0 * math.pi * uniform_open(b)
        out += [radius * math.cos(theta), radius * math.sin(theta)]
    return out


def normal(seed: int, sample: int, step: int, element: int) -> float:
    """Standard normal number `element` of the stream (seed, sample, step)."""
    return normal_block(seed, sample, step, element // 4)[element % 4]


def normal_array(seed: int, sample: int, step: int, count: int) -> np.ndarray:
    """Elements 0 .. count-1 of the stream (seed, sample, step), float64."""
    blocks = (count + 3) // 4
    values = []
    for block in range(blocks):
        values += normal_block(seed, sample, step, block)
    return np.array(values[:count], dtype=np.float64)


def self_test() -> None:
    for counter, key, expected in KNOWN_ANSWERS:
        got = philox4x32(counter, key)
        status = "ok" if got == expected else "FAIL"
        print(f"  {status} philox4x32-10 ctr={[hex(c) for c in counter]} key={[hex(k) for k in key]} -> "
              f"{' '.join(f'{w:08x}' for w in got)}")
        if got != expected:
            raise AssertionError(f"expected {' '.join(f'{w:08x}' for w in expected)}")
    # Rough statistics of the normal stream.
    values = np.concatenate([normal_array(7, s, 3, 4096) for s in range(8)])
    print(f"  normals: n={values.size} mean {values.mean():+.4f} var {values.var():.4f}")
    assert abs(values.mean()) < 0.05 and abs(values.var() - 1) < 0.05
    for seed, sample, step, element in ((0, 0, 0, 0), (42, 3, 7, 5), (2**40 + 5, 2**33 + 1, 11, 1001)):
        print(f"  normal(seed={seed}, sample={sample}, step={step}, element={element}) = "
              f"{normal(seed, sample, step, element)!r}")


if __name__ == "__main__":
    self_test()
