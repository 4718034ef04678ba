"""The shared helpers (insta.util.helpers) and the config checker (insta.util.options): stable values pinned (cache
keys, seeds and example orders of committed results depend on them), duration styles, one-line config errors."""
import hashlib
import random
from dataclasses import dataclass, field

import pytest

from insta.errors import InstaError
from insta.util.helpers import Log, content_hash, format_duration, progress_bar, stable_int, stable_key, stable_rng
from insta.util.options import check_keys, checked, read_section


def test_stable_values_are_pinned():
    """Changing any of these changes every cache key, seed and example order written so far."""
    assert stable_key("eval-order", 0, "x/1") == "2f11787c847c87351d35ea31db51aa10f36e64727e5a3ba41ed1a329969f87cc"
    assert stable_int("budget", 42) == 12666483743006983107
    assert stable_int("spread", 0, "a", digits=8) == 2403233927
    assert stable_rng("random-method", 3).random() == 0.6545610864412834
    assert content_hash({"v": 1, "kind": "eval", "eval": {"n": 60}}) == "feb0038c13fb9dc0"


def test_helpers_match_the_formulas_they_replaced():
    for text in ("", "a", "x/1", "ünï©ødé", "a:b"):
        for i in (0, 7, 123456):
            assert stable_int(text, i) == int(hashlib.sha256(f"{text}:{i}".encode()).hexdigest()[:16], 16)
            assert stable_rng(text, i).random() == random.Random(stable_int(text, i)).random()
        assert stable_key(text)[:32] == hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
        assert stable_int(text, digits=64) == int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16)
    assert content_hash({"b": 1, "a": [1.5, "ü"]}) == content_hash({"a": [1.5, "ü"], "b": 1})


def test_duration_styles():
    assert format_duration(65.4) == "0:01:05"
    assert format_duration(3725, "short") == "1h 02m" and format_duration(245, "short") == "4m 05s"
    assert format_duration(3725, "words") == "1 h 02 min 05 s" and format_duration(245, "words") == "4 min 05 s"
    with pytest.raises(ValueError, match="unknown duration style"):
        format_duration(1, "fortnights")


def test_log_and_progress_bar():
    lines = []
    Log(sink=lines.append)("hello")
    assert lines == ["[0:00:00] hello"]
    Log(sink=lines.append, quiet=True)("hidden")
    assert len(lines) == 1
    assert list(progress_bar(range(3), enabled=False)) == [0, 1, 2]


@dataclass
class _Section:
    count: int = field(default=1, metadata={"minimum": 1})
    rate: float = 0.5
    names: tuple[str, ...] = ("a",)
    flag: bool = False


@pytest.mark.parametrize("raw,message", [
    ({"cuont": 2}, r"unknown key\(s\) in sec: cuont \(did you mean count\?\)"),
    ({"count": "two"}, "sec.count must be an integer"),
    ({"count": 0}, "sec.count must be at least 1"),
    ({"flag": "false"}, "sec.flag must be true or false"),
    ("text", "'sec' must be a mapping"),
])
def test_read_section_errors_are_one_line(raw, message):
    with pytest.raises(InstaError, match=message):
        read_section(_Section, raw, "sec")


def test_read_section_converts_what_yaml_misreads():
    sec = read_section(_Section, {"rate": "1e-4", "names": ["x", "y"]}, "sec")
    assert sec.rate == 1e-4 and sec.names == ("x", "y")
    with pytest.raises(InstaError, match="^cfg: unknown key"):
        check_keys({"x": 1}, {"y"}, "the top level", prefix="cfg: ")
    assert checked(None, int | None, "n") is None
