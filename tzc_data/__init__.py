"""tzc_data: turn public reasoning traces into clean, packed, verifiable SFT shards.

Streaming stages, one module each (see ``pipeline.py`` for their order): ``sources`` → ``dedupe`` →
``filters`` → ``format`` → ``tokenize`` → ``pack`` → ``write``. This package never imports JAX or
``tzc_train``: a data user installs no trainer.
"""

import os
import sys

__version__ = "0.1.0"

# Arrow's default allocator (mimalloc) keeps the memory of every table a build writes and reads
# back: peak RSS grew by about 1 KB per row. The system allocator gives it back. Only when Arrow
# is not loaded yet (the variable is read once) and the user has not chosen a pool.
if "pyarrow" not in sys.modules:
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from tzc_data.errors import TzcError  # noqa: E402
from tzc_data.format import FormatError  # noqa: E402
from tzc_data.load import batches, export_parquet, hf_dataset, iter_rows, load, read_manifest, torch_dataset  # noqa: E402

__all__ = ["FormatError", "TzcError", "__version__", "batches", "export_parquet", "hf_dataset", "iter_rows", "load",
           "read_manifest", "torch_dataset"]
