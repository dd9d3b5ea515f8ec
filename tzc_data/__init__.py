"""tzc_data: turn public reasoning traces into clean, packed, verifiable SFT shards.

Streaming stages, one module each (see ``pipeline.py`` for their order): ``sources`` → ``dedupe`` →
``filters`` → ``format`` → ``tokenize`` → ``pack`` → ``write``. This package never imports JAX or
``tzc_train``: a data user installs no trainer.
"""

__version__ = "0.1.0"

# Importing tzc_data (a trainer does) loads no SentencePiece, JAX or tzc_train, and changes no
# process-wide setting: the build's choice of Arrow allocator is made where a build runs
# (tzc_data.cli.main, and pipeline.build for the build itself).
from tzc_data.errors import TzcError
from tzc_data.format import FormatError
from tzc_data.load import (batches, export_parquet, hf_dataset, iter_rows, load, mixture, read_manifest,
                           torch_dataset)

__all__ = ["FormatError", "TzcError", "__version__", "batches", "export_parquet", "hf_dataset", "iter_rows", "load",
           "mixture", "read_manifest", "torch_dataset"]
