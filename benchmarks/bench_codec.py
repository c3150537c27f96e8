"""The stamp codec: whole columns against one stamp at a time, and the CRC-32 it spends them on.

    python benchmarks/bench_codec.py [--n 2048] [--size 64] [--repeats 3]

In one run, on the same random float32 stamps (the best of ``--repeats`` passes each):

- encode: ``stamp_column`` (one Arrow buffer) against ``encode_stamp(..., compress=False)`` per
  stamp gathered into an Arrow column (one compressed blob per stamp);
- decode: ``decode_stamps`` on that column against ``decode_stamp`` per stamp of its
  ``to_pylist()`` (what the validator and the cache did);
- CRC-32 of one band's bytes with the function the codec uses against ``zlib.crc32``.

Prints microseconds per stamp and the ratios. The two paths' outputs are checked equal first.
"""

from __future__ import annotations

import argparse
import time
import zlib

import numpy as np
import pyarrow as pa

from dhs.contract.codec import _crc32, decode_stamp, decode_stamps, encode_stamp, stamp_column


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n, r = args.n, args.repeats
    imgs = np.random.default_rng(0).normal(size=(n, 3, args.size, args.size)).astype(np.float32)

    column = stamp_column(imgs)
    per_stamp = pa.array([encode_stamp(i, compress=False) for i in imgs], pa.binary())
    assert column.equals(per_stamp), "the column encoding differs from the per-stamp one"
    decoded, ok = decode_stamps(column, args.size)
    assert ok.all() and np.array_equal(decoded, imgs), "decode_stamps does not give the pixels back"

    t_col_enc = best_of(r, lambda: stamp_column(imgs))
    t_one_enc = best_of(r, lambda: pa.array([encode_stamp(i, compress=False) for i in imgs], pa.binary()))
    t_col_dec = best_of(r, lambda: decode_stamps(column, args.size))
    t_one_dec = best_of(r, lambda: [decode_stamp(b, stamp_size=args.size) for b in column.to_pylist()])
    band = imgs[0, 0].tobytes()
    t_crc = best_of(r, lambda: [_crc32(band) for _ in range(n)])
    t_zlib = best_of(r, lambda: [zlib.crc32(band) for _ in range(n)])

    us = 1e6 / n
    print(f"{n} stamps of {args.size} px (grz float32, {column.nbytes / n / 1e3:.1f} kB each), best of {r}")
    print(f"  {'':<28} {'column':>10} {'per stamp':>10} {'ratio':>7}")
    print(f"  {'encode, us/stamp':<28} {t_col_enc * us:10.1f} {t_one_enc * us:10.1f} {t_one_enc / t_col_enc:6.1f}x")
    print(f"  {'decode, us/stamp':<28} {t_col_dec * us:10.1f} {t_one_dec * us:10.1f} {t_one_dec / t_col_dec:6.1f}x")
    print(f"  CRC-32 of one band ({len(band) / 1e3:.1f} kB): {t_crc * us:.2f} us ({_crc32.__module__}.{_crc32.__name__}) "
          f"against zlib {t_zlib * us:.2f} us: {t_zlib / t_crc:.1f}x")


if __name__ == "__main__":
    main()
