"""Text: what both sides of a build read and write by: the chat template (:mod:`.format`), the
tokenizer and its exact word cache (:mod:`.tokenize`, :mod:`.wordcache`), the duplicate keys
(:mod:`.dedupe`, :mod:`.minhash`), the benchmark n-gram index (:mod:`.decontaminate`) and length
distributions (:mod:`.lengths`).

Pure functions of text and numbers: nothing here reads or writes a build, so the build, ``verify``
and the looking tools import it alike.
"""
