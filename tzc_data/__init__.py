"""tzc_data: turn public reasoning traces into clean, packed, verifiable SFT shards.

The folders are the architecture (docs/design.md): ``sources/`` reads rows, ``filters/`` and
``text/`` judge and render them, ``build/`` runs the stages in the order ``build/pipeline.py``
gives, on one of the ``engines/``; ``read/`` loads a finished build, ``verify/`` proves it and
``look/`` shows it. ``layout.py`` is the on-disk format both sides share. This package never
imports JAX or ``tzc_train``: a data user installs no trainer. This module is the public API: the
loaders, importing neither the build nor SentencePiece.
"""

__version__ = "0.1.0"

# Importing tzc_data (a trainer does) loads no SentencePiece, JAX or tzc_train, and changes no
# process-wide setting: the tzc-data command makes its own (tzc_data.process, from tzc_data.cli.run),
# and tzc_data.build.pipeline.build chooses Arrow's allocator for the build's own duration.
from tzc_data.errors import TzcError
from tzc_data.read.load import batches, export_parquet, hf_dataset, iter_rows, load, torch_dataset
from tzc_data.read.manifest import read_manifest
from tzc_data.read.mixture import mixture
from tzc_data.text.format import FormatError

__all__ = ["FormatError", "TzcError", "__version__", "batches", "export_parquet", "hf_dataset", "iter_rows", "load",
           "mixture", "read_manifest", "torch_dataset"]
