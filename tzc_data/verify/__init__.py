"""``tzc-data verify``: prove that builds are intact, say what the loaders will read, and share nothing.

Nothing here trusts one layer's claims about another. The loaders read the manifest's ``shards``
entries (:func:`tzc_data.read.manifest.shard_entries`); verify checks those same entries, then binds every
layer to every other:

* manifest -> files: each file it names stays inside the build, is a regular file and hashes as
  recorded;
* shards <-> ``stats/packs.parquet``: every packed row is decoded; its segments, tokens and loss
  tokens are those of its packs row, which lists the source row of each segment;
* shards <-> tokenizer: each segment is the template's ids (``<bos>``, the turn markers where the
  template puts them and no other special id, ``<end_of_turn>\\n<eos>`` at the end), its loss mask
  covers exactly the model turn, and it decodes to text that :func:`tzc_data.text.format.parse` accepts;
* shards <-> ``stats/records.parquet``: every kept row is placed in exactly one segment, and that
  segment's tokens, loss tokens and decoded prompt (its hash) are the row's; every segment is
  claimed by one kept row; the split is the one its prompt hash assigns;
* everything <-> the manifest's counts, range, packing totals and prompt-hash file.

Each problem is one line naming the build and the file, shard, row or segment, so a failing verify
says where to look. Shards are streamed in chunks; what is held per build is a few numbers per
packed row and per kept example (a few dozen bytes each), never the tokens.
"""

from tzc_data.verify.contamination import check_decontaminated
from tzc_data.verify.builds import check_build, verify

__all__ = ["check_build", "check_decontaminated", "verify"]
