"""Where ingest puts a file's rows as it reads them, chunk by chunk, in local files of bounded memory: the good rows
as Parquet row groups, the bad rows as CSV. Uploaded once the whole file has been judged."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlops.aws.storage import file_sha256
from mlops.data.schema import ColumnKind, DataContract


def curated_schema(contract: DataContract) -> pa.Schema:
    """The curated types: categories as text, every other kind as float64 (see :mod:`mlops.data.validation`)."""
    return pa.schema([
        pa.field(c.name, pa.large_string() if c.kind is ColumnKind.CATEGORICAL else pa.float64())
        for c in contract.columns
    ])


class CuratedWriter:
    """Good rows, one Parquet row group per chunk, in the contract's column order and types."""

    def __init__(self, path: Path, contract: DataContract) -> None:
        self.path, self.schema = path, curated_schema(contract)
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, good: pd.DataFrame) -> None:
        if not good.empty:
            self.write_table(pa.Table.from_pandas(good, schema=self.schema, preserve_index=False))

    def write_table(self, table: pa.Table) -> None:
        """Rows already typed (a validated chunk, or a part's row group in the merge), as one row group."""
        if not table.num_rows:
            return
        table = table.cast(self.schema)
        if self._writer is None:
            # dictionary pages pay for categories, not for floats, which are nearly all distinct
            text = [f.name for f in self.schema if f.type == pa.large_string()]
            self._writer = pq.ParquetWriter(self.path, table.schema, use_dictionary=text)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> str:
        """Close the file; its sha256 (the manifest's ``parquet_sha256``)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return file_sha256(self.path)


class QuarantineWriter:
    """Bad rows as CSV, verbatim, with their line and reason, the header written once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0

    def write(self, bad: pd.DataFrame) -> None:
        if bad.empty:
            return
        table = pa.Table.from_pandas(bad, preserve_index=False)
        options = pacsv.WriteOptions(include_header=self.rows == 0, quoting_style="needed")
        with self.path.open("ab") as file:
            pacsv.write_csv(table, file, write_options=options)
        self.rows += len(bad)
