"""The read side's loaders: a finished build (or a mixture of builds) as rows and batches.

What a trainer imports. It imports nothing of the build and neither ``verify`` nor SentencePiece:
:mod:`.manifest` reads and checks a manifest, :mod:`.load` the shards, :mod:`.mixture` several
builds at once, and :mod:`.across` the rules two builds must keep to be mixed.
"""
