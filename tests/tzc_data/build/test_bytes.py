"""A fixed build's bytes, pinned: the serial part after the map (dedup's first-kept-wins, packing,
the stats) may change how it computes, never what it writes.

The build: synthetic rows 1000:3000, with an eval split, small shards, excluding an earlier build
of rows 0:1000 (so exact duplicates, near duplicates and near twins in an excluded build all
occur), on the Gemma 2 tokenizer. The digests were taken from the build before the serial part
moved to compiled loops. A change that means to change the output (a new stats column, another
packing order) re-pins them and says so in its commit.
"""

import hashlib
import json
from pathlib import Path

from tzc_data.cli import main
from tzc_data.text.tokenize import gemma2_tokenizer_path

PINNED = {
    "near_dup.bin": "03a58ec49dc1db5d4bfd8ca3d8656367a58be4408e60fd817af684d788c59865",
    "prompt_hashes.bin": "e4aebfa3b2ac70144bc5b7924835da4a64fe4d069ed32423577dd219b7441117",
    "shards/eval-00000-of-00002.array_record": "0be62f55a4788311f0b03bd4be974409d86b814211d7380b107079e392bea342",
    "shards/eval-00001-of-00002.array_record": "16fa749d1fb9cb26c6d0ce0ab4c4b630e8ad3a5228be3445ddda1520f4de7810",
    "shards/train-00000-of-00014.array_record": "d09d0c6028ad4d0836d4796d1485231fd1a5b4fb2f9369048a8005139139b905",
    "shards/train-00001-of-00014.array_record": "c9b16b8f1582bb7c688462cba88c169427f8de50870bfd18e484383dfeb50f99",
    "shards/train-00002-of-00014.array_record": "c947685f21e0f5ac6a2f0f6cea50c6bd19fffc4b0568b0ec6c535c569ebabc80",
    "shards/train-00003-of-00014.array_record": "fc75d906bd49445157a4c506140c0c6d52ec7bf7e209680ed839a650a8fb0170",
    "shards/train-00004-of-00014.array_record": "bf34ed06d9783e989b966b0ff02715663bcaf157be2bd5ebab4ad1893b5ad1d2",
    "shards/train-00005-of-00014.array_record": "1b3e97cf74ac17b75bf2fbf56c13a87c9181758cb11255005a751d296f8db70e",
    "shards/train-00006-of-00014.array_record": "5d6937cf1fc5afafdac337e94071fd1faeccd8a566a40c5dd183424009a8e7c6",
    "shards/train-00007-of-00014.array_record": "5cfa61c70eb15923b25864685c3525b6fe4b0bc410b190f253b405a9924d7a60",
    "shards/train-00008-of-00014.array_record": "240cf48c3131017d0abeb0c80946aff4ed77b0cd5a9ff315bb7e25f73f6e1bac",
    "shards/train-00009-of-00014.array_record": "71d3420307e85b3305fa2b7a48cdfc2e6cfede9aa2c27dd44b49fb3664bae876",
    "shards/train-00010-of-00014.array_record": "405af8aaf5476b8f8a001951c8e81551be65bb86a37be216e9e027755146b0af",
    "shards/train-00011-of-00014.array_record": "b845dfdcd6ad4b9f63b28e50591ed1268e00ba1c5313d4896d006bad9821986e",
    "shards/train-00012-of-00014.array_record": "97301cfeef626f6572b3e557c9df2057fdaa4429b18fce23300e60aad6209783",
    "shards/train-00013-of-00014.array_record": "31bc6edf32b283e30c4afc5ec63dd0ac92b677951e89a5554e509aee0de26080",
    "stats/packs.parquet": "3c222851347fed6a8378869477fc3445acddc969a48ebc20100c3df998bc11a4",
    "stats/records.parquet": "10d5f24e819da2fcb6e6ad0d69fc473ea4388859a740b15312f5ea973ac762f0",
    "manifest.json:counts": "a06097c95b6a64015d5e76b2863c41efd1ad939b913d0defd4861c41e524acac",
    "manifest.json:packing": "c7d60b0be9d3836c0153b3c0885a3fe5252a1dce4a2522b7523aeb27ef782104",
    "manifest.json:shards": "9ab7a73ca15c031be38dd1b83bf9eacd39e2487a273e1477daaf361223df109d",
    # re-pinned for issue 27: the algorithm's text names the default-ignorable code points it removes
    # (prompt_hashes.bin, the hashes themselves, is unchanged)
    "manifest.json:hashes": "24a6b1aba15fa850f2a2b6e66ad8c40b1b9a78111b84125d61d52668db1b18af",
    "manifest.json:near_dup": "231b87e73b07078dcbc8a0ef5aa287ac200a3ac58a1478cb0ef5304b150a4f48",
}


def _digests(out: Path) -> dict[str, str]:
    digests = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(out.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    manifest = json.loads((out / "manifest.json").read_text())
    for part in ("counts", "packing", "shards", "hashes", "near_dup"):  # not the config: options may be added
        recorded = json.dumps(manifest[part], sort_keys=True).encode()
        digests[f"manifest.json:{part}"] = hashlib.sha256(recorded).hexdigest()
    return digests


def test_a_fixed_build_writes_the_pinned_bytes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the stats name the excluded build as given: a relative path
    common = ["--tokenizer", str(gemma2_tokenizer_path()), "--rows-per-shard", "64", "--eval-fraction", "0.1",
              "--no-progress"]
    assert main(["build", "--source", "synthetic", "--range", "0:1000", "--out", "first", *common]) == 0
    assert main(["build", "--source", "synthetic", "--range", "1000:3000", "--out", str(tmp_path / "b"),
                 "--exclude", "first", *common]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert {"duplicate", "near_duplicate", "in_excluded_split"} <= set(manifest["counts"]["by_status"])
    assert _digests(tmp_path / "b") == PINNED
