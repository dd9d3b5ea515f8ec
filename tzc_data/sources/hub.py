"""A dataset's Parquet files on the Hugging Face hub, listed at one commit.

The very same reader as local files (:class:`~tzc_data.sources.files.FileSetSource`) over
``HfFileSystem``: a plan reads the footer of each file up to the end of the range (the hub has no
survey), skips whole files and row groups before ``start``, and a unit fetches only its row group.
The tests run it over a local directory laid out like the hub and check which byte ranges were read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from tzc_data.errors import SourceError
from tzc_data.sources.base import Source, differing_key
from tzc_data.sources.files import FileSetSource
from tzc_data.sources.formats import GLAIVE, Format, parse_format

if TYPE_CHECKING:
    import fsspec  # the hub's filesystem is fsspec's: imported where one is made (huggingface_hub)

HF_DATASET = "glaiveai/reasoning-v1-20m"
HF_SPLIT = "train"


class HubSource(FileSetSource):
    """Parquet files of one split of a hub dataset at one commit (see the module docstring)."""

    kind: ClassVar[str] = "hf"

    @classmethod
    def identity(cls, description: dict[str, Any]) -> tuple:
        """A hub revision does not change the identity: row 5 at two commits is still "row 5"."""
        return ("hf", description.get("repo"), description.get("split"))

    @classmethod
    def reopen(cls, description: dict[str, Any], *, format: str = GLAIVE) -> Source:
        """The recorded dataset and split at the recorded commit (not at today's ``main``)."""
        return hub_source(description.get("repo", HF_DATASET), split=description.get("split", HF_SPLIT),
                          revision=description.get("commit"), format=format)

    @classmethod
    def changes(cls, recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
        """Every recorded key but the revision asked for (a reopened source pins the commit)."""
        return differing_key(recorded, current, ignore=frozenset({"revision"}))


def hub_source(repo: str = HF_DATASET, *, split: str = HF_SPLIT, revision: str | None = None,
               format: str = GLAIVE) -> HubSource:
    """The dataset's Parquet files on the Hugging Face hub, listed at run time (never hard-coded),
    read as ``format`` (:mod:`.formats`)."""
    from huggingface_hub import HfApi, HfFileSystem

    fmt = parse_format(format)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise SourceError(f"--dataset {repo!r} is not a hub dataset name (OWNER/NAME)")
    try:
        sha = HfApi().dataset_info(repo, revision=revision).sha
        return parquet_tree_source(HfFileSystem(), f"datasets/{repo}@{sha}", split=split, description={
            "kind": "hf", "repo": repo, "split": split, "revision": revision or "main", "commit": sha,
        }, fmt=fmt)
    except SourceError:
        raise
    except Exception as err:  # network, auth, missing repo: all user-facing
        raise SourceError(
            f"cannot list hub dataset {repo} (revision {revision or 'main'}): {type(err).__name__}: {err}. "
            "Use --source PATH to read a local copy."
        ) from err


def parquet_tree_source(fs: fsspec.AbstractFileSystem, root: str, *, split: str, description: dict[str, Any],
                        opener: Callable[[str], Any] | None = None, fmt: Format = parse_format(GLAIVE)) -> HubSource:
    """A hub-style tree of Parquet files, filtered to one split (what :func:`hub_source` reads)."""
    root = root.rstrip("/")
    files = sorted(p for p in fs.find(root) if p.endswith(".parquet") and _is_split_file(p[len(root) + 1:], split))
    if not files:
        raise SourceError(f"no Parquet files for split {split!r} under {root}")
    description = {**description, "files": [p[len(root) + 1:] for p in files]}
    return HubSource(fs=fs, paths=tuple(files), description=description, opener=opener, format=fmt)


def _is_split_file(relpath: str, split: str) -> bool:
    """Hub convention: ``data/train-00000-of-00042.parquet`` or ``train/0000.parquet``."""
    return re.search(rf"(^|/){re.escape(split)}([-_./]|$)", relpath) is not None
