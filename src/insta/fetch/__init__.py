"""Obtain upstream meta-dataset files into a data folder, in the layout the catalogs read.

P3 templates and BIG-bench tasks are both published as PyPI source distributions (promptsource 0.2.3,
bigbench 1.0.0, 358 MB): the archive is downloaded from the index (hash-checked, not installed) and only its
data files are extracted. NIV2 is a
git clone of allenai/natural-instructions.
"""
from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..errors import InstaError

SDISTS = {
    "p3": ("promptsource==0.2.3", "promptsource/templates/", "promptsource/templates"),
    "bigbench": ("bigbench==1.0.0", "bigbench/benchmark_tasks/", "big-bench"),
}
NIV2_REPO = "https://github.com/allenai/natural-instructions"
PYPI_SIMPLE = "https://pypi.org/simple"


def fetch(source: str, root: Path) -> Path:
    """Download ``source`` (p3, bigbench or niv2) under ``root``; returns the folder written."""
    root.mkdir(parents=True, exist_ok=True)
    if source == "niv2":
        return _fetch_niv2(root)
    if source not in SDISTS:
        raise InstaError(f"unknown source {source!r} (p3, bigbench, niv2)")
    requirement, member_prefix, dest_rel = SDISTS[source]
    name, version = requirement.split("==")
    dest = root / dest_rel
    with tempfile.TemporaryDirectory() as tmp:
        archive = download_sdist(name, version, Path(tmp))
        n = extract_members(archive, member_prefix, dest, keep=_keep_for(source))
    if n == 0:
        raise InstaError(f"{requirement} held no files under {member_prefix}")
    return dest


def sdist_url(name: str, version: str, index: str = PYPI_SIMPLE) -> tuple[str, str]:
    """(url, sha256) of a source distribution, from the package index's JSON simple API (PEP 691).

    pip itself cannot download these sdists without building their metadata, which fails for bigbench.
    """
    import json
    import urllib.request

    req = urllib.request.Request(f"{index}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            files = json.load(resp)["files"]
    except Exception as err:
        raise InstaError(f"could not reach the package index for {name}: {err}") from None
    wanted = f"{name}-{version}.tar.gz"
    for f in files:
        if f["filename"] == wanted:
            return f["url"], f.get("hashes", {}).get("sha256", "")
    raise InstaError(f"the package index has no {wanted}")


def download_sdist(name: str, version: str, tmp: Path) -> Path:
    """Download and hash-check ``name-version.tar.gz`` into ``tmp``, with a progress bar."""
    import hashlib
    import urllib.request

    from ..util.helpers import progress_bar

    url, sha = sdist_url(name, version)
    out = tmp / f"{name}-{version}.tar.gz"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, open(out, "wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress_bar(total=total, desc=out.name, unit="B", unit_scale=True) as bar:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except Exception as err:
        raise InstaError(f"could not download {out.name}: {err}") from None
    if sha and digest.hexdigest() != sha:
        raise InstaError(f"{out.name}: sha256 mismatch (download corrupted?)")
    return out


def _keep_for(source: str):
    if source == "p3":
        return lambda rel: rel.endswith("templates.yaml")
    return lambda rel: rel.endswith("task.json")


def extract_members(archive: Path, member_prefix: str, dest: Path, keep) -> int:
    """Extract the archive members under ``member_prefix`` that ``keep(relative path)`` accepts into ``dest``."""
    tmp_dest = dest.with_name(dest.name + ".partial")
    if tmp_dest.exists():
        shutil.rmtree(tmp_dest)
    n = 0
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            parts = member.name.split("/", 1)
            inner = parts[1] if len(parts) == 2 else parts[0]
            if not inner.startswith(member_prefix):
                continue
            rel = inner[len(member_prefix):]
            if ".." in Path(rel).parts or not keep(rel):
                continue
            out = tmp_dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            n += 1
    if n:
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp_dest.rename(dest)
    return n


def _fetch_niv2(root: Path) -> Path:
    dest = root / "natural-instructions"
    if shutil.which("git") is None:
        raise InstaError("fetching NIV2 needs git")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(["git", "clone", "--depth", "1", NIV2_REPO, f"{tmp}/ni"], capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise InstaError(f"could not clone {NIV2_REPO} ({last}); on a machine with internet, clone it and copy "
                             f"tasks/ and splits/ into {dest}")
        for sub in ("tasks", "splits"):
            target = dest / sub
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(f"{tmp}/ni/{sub}", target)
    return dest
