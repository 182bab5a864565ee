"""Pack the built grid stores small enough to travel to an offline GPU machine, and unpack them.

The device tool moves at most 64 MiB per call, working tree included. The photometry grid
with 11 R_V nodes is 126 MB even with the best lossless Blosc settings (its float32
mantissas are noise to a compressor), so the large arrays travel quantised:

* ``mag`` to 2**-12 mag (2.4e-4 mag steps) and ``dmag_dav`` to 2**-14 mag/mag, both far below
  the grid's own interpolation error (p99 0.009 mag) and any survey's photometric floor;
* the isochrone tables to 2**-18 dex (4e-6 dex), their NaNs kept by a bit mask;

then differenced along every axis (the tables are smooth) and Blosc-zstd compressed:
~32 MB in all. Every other array and all metadata (content hashes included) are copied
byte for byte. A model trained on a machine that used the unpacked grids records it in its
card (``lineage``); the quantisation error is printed on packing.

    python training/pack_grids.py pack --out .devA/grids      # here, from the built cache
    python training/pack_grids.py unpack --src .devA/grids    # there, into $YSOSCALE_CACHE_DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numcodecs
import numpy as np
import zarr

QUANTISED = {
    "photometry_phoenix-kurucz_G23.zarr": {"mag": 12, "dmag_dav": 14},
    "isochrones.zarr": {
        name: 18
        for name in (
            "log10_lum", "log10_radius", "log10_teff", "logg", "postms_log10_lum",
            "postms_log10_mass", "postms_log10_radius", "postms_log10_teff", "postms_logg",
        )
    },
}  # fmt: skip
"""Store -> {array: k}: the arrays sent as multiples of 2**-k."""

SMOOTH_AXES = {"photometry_phoenix-kurucz_G23.zarr": (0, 3, 4)}
"""Axes differenced before compression (default: all). The photometry grid is smooth in
Teff, A_V and R_V, not across bands, metallicity or log g nodes."""

_CODEC = numcodecs.Blosc(cname="zstd", clevel=9, shuffle=numcodecs.Blosc.SHUFFLE)


def _encode(values: np.ndarray, k: int, axes: tuple[int, ...]) -> tuple[dict, bytes, bytes]:
    nan = np.isnan(values)
    scaled = np.round(np.where(nan, 0.0, values.astype(np.float64)) * 2.0**k).astype(np.int64)
    for axis in axes:
        scaled = np.diff(scaled, axis=axis, prepend=0)
    if np.abs(scaled).max() >= 2**31:
        raise ValueError("differences overflow int32; lower k")
    header = {"shape": list(values.shape), "dtype": str(values.dtype), "k": k, "axes": list(axes)}
    mask = _CODEC.encode(np.packbits(nan)) if nan.any() else b""
    return header, _CODEC.encode(scaled.astype(np.int32)), mask


def _decode(header: dict, data: bytes, mask: bytes) -> np.ndarray:
    shape = tuple(header["shape"])
    scaled = np.frombuffer(_CODEC.decode(data), dtype=np.int32).reshape(shape).astype(np.int64)
    for axis in header["axes"]:
        scaled = np.cumsum(scaled, axis=axis)
    values = (scaled / 2.0 ** header["k"]).astype(header["dtype"])
    if mask:
        nan = np.unpackbits(np.frombuffer(_CODEC.decode(mask), dtype=np.uint8))
        values[nan[: values.size].reshape(shape).astype(bool)] = np.nan
    return values


def _skip_chunks_of(arrays: dict[str, int]):  # noqa: ANN202 - a copytree ignore function
    return lambda folder, names: ["c"] if Path(folder).name in arrays else []


def _skip_packed(top: Path, arrays: dict[str, int]):  # noqa: ANN202 - likewise
    return lambda folder, names: [
        n for n in names
        if Path(folder) == top and Path(n).stem in arrays and n.endswith((".q", ".nan", ".json"))
    ]  # fmt: skip


def pack(cache: Path, out: Path) -> None:
    """Write every store of :data:`QUANTISED` from ``cache`` into ``out``, quantised."""
    for store, arrays in QUANTISED.items():
        src, dst = cache / store, out / store
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=_skip_chunks_of(arrays))
        group = zarr.open_group(src, mode="r")
        for name, k in arrays.items():
            values = group[name][...]
            axes = SMOOTH_AXES.get(store, tuple(range(values.ndim)))
            header, data, mask = _encode(values, k, axes)
            back = _decode(header, data, mask)
            same_nan = np.array_equal(np.isnan(back), np.isnan(values))
            error = np.nanmax(np.abs(back.astype(np.float64) - values))
            if not same_nan or error > 2.0 ** -(k + 1) * 1.0001:
                raise AssertionError(f"{store}/{name}: round trip error {error}")
            (dst / f"{name}.q").write_bytes(data)
            (dst / f"{name}.nan").write_bytes(mask)
            (dst / f"{name}.json").write_text(json.dumps(header))
            print(f"{store}/{name}: {len(data) / 1e6:.1f} MB, max |error| {error:.2e}")


def unpack(src: Path, cache: Path) -> None:
    """Rebuild the stores packed in ``src`` under ``cache`` (their metadata is unchanged)."""
    for store, arrays in QUANTISED.items():
        if not (src / store).exists():
            continue
        dst = cache / store
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src / store, dst, ignore=_skip_packed(src / store, arrays))
        for name in arrays:
            header = json.loads((src / store / f"{name}.json").read_text())
            values = _decode(header, (src / store / f"{name}.q").read_bytes(),
                             (src / store / f"{name}.nan").read_bytes())  # fmt: skip
            zarr.open_array(dst / name, mode="r+")[...] = values
        print(f"unpacked {store} into {dst}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("--out", default=".devA/grids", help="pack: where to write")
    parser.add_argument("--src", default=".devA/grids", help="unpack: the packed folder")
    args = parser.parse_args()
    from ysoscale.cache import cache_dir

    if args.action == "pack":
        pack(cache_dir(), Path(args.out))
    else:
        unpack(Path(args.src), cache_dir())


if __name__ == "__main__":
    main()
