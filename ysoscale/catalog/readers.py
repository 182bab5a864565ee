"""Reading survey tables: formats, whole-file reads, and the chunked hats-import reader.

Every table (or chunk of one) goes through :func:`prepare_table`: native columns to
canonical ones (the survey adapter), the schema check, a position check, and, for a
secondary survey, the renames that keep its columns apart from the primary's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hats_import.catalog.file_readers import InputReader, get_file_reader

from ysoscale.catalog.adapters import to_canonical
from ysoscale.catalog.columns import validate_schema
from ysoscale.catalog.crossmatch import secondary_columns

FORMATS: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".csv.gz": "csv",
    ".csv.bz2": "csv",
    ".fits": "fits",
    ".fit": "fits",
    ".fits.gz": "fits",
}
"""File suffix to format; a CSV may be comma-, tab- or pipe-delimited (read from its header)."""

IMPORT_CHUNK_ROWS = 500_000
"""Rows per chunk read by hats-import workers."""


def file_format(path: str | Path) -> str:
    """Format of ``path`` from its suffix (:data:`FORMATS`).

    Examples
    --------
    >>> file_format("gaia.csv.gz"), file_format("PS1.FITS")
    ('csv', 'fits')
    """
    name = Path(path).name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    raise ValueError(f"{path}: unknown table format; use one of {sorted(set(FORMATS))}")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a parquet, CSV or FITS table whole (FITS: first table HDU, 1-d columns).

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "t.csv"
    >>> pd.DataFrame({"ra": [1.0], "dec": [2.0]}).to_csv(path, index=False)
    >>> read_table(path).to_dict("records")
    [{'ra': 1.0, 'dec': 2.0}]
    """
    kind = file_format(path)
    if kind == "parquet":
        return pd.read_parquet(path)
    if kind == "csv":
        return pd.read_csv(path, sep=csv_delimiter(path))
    from astropy.table import Table

    table = Table.read(path, format="fits", character_as_bytes=False)
    flat = [name for name in table.colnames if table[name].ndim == 1]
    return table[flat].to_pandas()


def csv_delimiter(path: str | Path) -> str:
    """Delimiter of a CSV file, from its header line (commas unless tabs or pipes)."""
    if str(path).endswith((".gz", ".bz2")):
        return ","
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = handle.readline()
    for delimiter in (",", "\t", "|"):
        if delimiter in header:
            return delimiter
    return ","


def prepare_table(
    frame: pd.DataFrame,
    survey: str,
    *,
    native: bool,
    secondary: bool,
    options: Mapping[str, Any],
) -> pd.DataFrame:
    """Canonical (and, for a secondary, renamed) columns of one table or chunk."""
    if native:
        frame = to_canonical(frame, survey, **options)
    validate_schema(dict(frame.dtypes))
    ra = pd.to_numeric(frame["ra"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    dec = pd.to_numeric(frame["dec"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0))
    if bad.any():
        first = frame["source_id"].iloc[np.flatnonzero(bad)[:5]].tolist()
        raise ValueError(
            f"{survey}: {int(bad.sum())} row(s) have no valid ra/dec (source_id {first}...); "
            "a HEALPix catalog needs a position for every row"
        )
    frame = frame.reset_index(drop=True)
    if secondary:
        renames = secondary_columns(survey, frame.columns)
        frame = frame.drop(columns=[k for k, v in renames.items() if v is None])
        frame = frame.rename(columns={k: v for k, v in renames.items() if v is not None})
    return frame


class SurveyReader(InputReader):
    """hats-import reader: a stock chunked reader, then :func:`prepare_table` on each chunk."""

    def __init__(
        self,
        fmt: str,
        survey: str,
        *,
        native: bool,
        secondary: bool,
        options: Mapping[str, Any],
        chunksize: int = IMPORT_CHUNK_ROWS,
        **read_kwargs: Any,
    ) -> None:
        self.inner = get_file_reader(fmt, chunksize=chunksize, **read_kwargs)
        self.survey = survey
        self.native = native
        self.secondary = secondary
        self.options = dict(options)

    def read(self, input_file, read_columns=None):
        for chunk in self.inner.read(input_file):
            frame = chunk if isinstance(chunk, pd.DataFrame) else chunk.to_pandas()
            frame = prepare_table(
                frame,
                self.survey,
                native=self.native,
                secondary=self.secondary,
                options=self.options,
            )
            yield frame if read_columns is None else frame[list(read_columns)]

    def head(self, input_file, rows: int = 1000) -> pd.DataFrame:
        """The first prepared rows (the schema check before any compute)."""
        chunks = self.inner.read(input_file)
        first = next(iter(chunks))
        frame = first if isinstance(first, pd.DataFrame) else first.to_pandas()
        return prepare_table(
            frame.head(rows),
            self.survey,
            native=self.native,
            secondary=self.secondary,
            options=self.options,
        )


__all__ = [
    "FORMATS",
    "IMPORT_CHUNK_ROWS",
    "SurveyReader",
    "csv_delimiter",
    "file_format",
    "prepare_table",
    "read_table",
]
