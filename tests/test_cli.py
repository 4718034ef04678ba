"""The thin CLI: catalog list/show, select on a user file, data fetch extraction, one-line errors."""
import io
import json
import tarfile
from pathlib import Path

import pytest

from insta import cli, fetch
from insta.errors import InstaError

FIX = Path(__file__).parent / "fixtures"


def run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_the_stages(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in ("select", "catalog", "data"):
        assert name in out


def test_catalog_list_and_show_on_a_user_file(capsys):
    code, out, _ = run(["catalog", "list", "--catalog", str(FIX / "user" / "tasks.yaml")], capsys)
    assert code == 0 and "review_sentiment" in out and "headline_writing" in out
    code, out, _ = run(["catalog", "show", "--catalog", str(FIX / "user" / "tasks.yaml"), "review_sentiment"], capsys)
    assert code == 0 and "Decide whether the customer liked the product." in out


def test_catalog_list_json(capsys, tmp_path):
    out_file = tmp_path / "tasks.json"
    code, _, _ = run(["catalog", "list", "--catalog", str(FIX / "user" / "tasks.yaml"), "--json", str(out_file)],
                     capsys)
    data = json.loads(out_file.read_text())
    assert code == 0 and {t["id"] for t in data} >= {"review_sentiment", "headline_writing"}


def test_unknown_task_is_one_line_exit_2(capsys):
    code, _, err = run(["catalog", "show", "--catalog", str(FIX / "user" / "tasks.yaml"), "review_sentimnt"], capsys)
    assert code == 2
    assert "unknown task 'review_sentimnt'" in err and "did you mean review_sentiment" in err
    assert len(err.strip().splitlines()) == 1


def test_select_needs_exactly_one_target(capsys):
    code, _, err = run(["select", "--catalog", str(FIX / "user" / "tasks.yaml")], capsys)
    assert code == 2 and "exactly one target" in err


def test_missing_data_dir_is_one_line(capsys, tmp_path):
    code, _, err = run(["catalog", "list", "--catalog", "bigbench", "--data-dir", str(tmp_path / "none")], capsys)
    assert code == 2 and "does not exist" in err


def _sdist(tmp_path: Path, files: dict) -> Path:
    path = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"pkg-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_members_keeps_only_data_files(tmp_path):
    archive = _sdist(tmp_path, {
        "bigbench/benchmark_tasks/t1/task.json": "{}",
        "bigbench/benchmark_tasks/t1/sub/task.json": "{}",
        "bigbench/benchmark_tasks/t1/README.md": "no",
        "bigbench/api/model.py": "no",
    })
    dest = tmp_path / "data" / "big-bench"
    n = fetch.extract_members(archive, "bigbench/benchmark_tasks/", dest, keep=lambda rel: rel.endswith("task.json"))
    assert n == 2
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["t1/sub/task.json", "t1/task.json"]


def test_fetch_reports_an_unreachable_index(monkeypatch, tmp_path):
    def refuse(*a, **k):
        raise OSError("connection refused")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
    with pytest.raises(InstaError, match="could not reach the package index for bigbench"):
        fetch.fetch("bigbench", tmp_path)


def test_fetch_checks_the_archive_hash(monkeypatch, tmp_path):
    archive = _sdist(tmp_path, {"promptsource/templates/ds/templates.yaml": "templates: {}"})
    monkeypatch.setattr(fetch, "sdist_url", lambda n, v: (archive.as_uri(), "0" * 64))
    with pytest.raises(InstaError, match="sha256 mismatch"):
        fetch.fetch("p3", tmp_path / "data")
    import hashlib

    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(fetch, "sdist_url", lambda n, v: (archive.as_uri(), digest))
    dest = fetch.fetch("p3", tmp_path / "data")
    assert (dest / "ds" / "templates.yaml").read_text() == "templates: {}"


def test_help_and_parser_import_no_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys; from insta.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
