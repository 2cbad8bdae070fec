"""The harness's work directory: runs numbered after those a kept directory holds."""

from __future__ import annotations

from pathlib import Path

from bench.context import Context


def _quiet(message: str) -> None:
    return None


def test_a_kept_work_directory_numbers_new_runs_after_its_own(tmp_path: Path) -> None:
    first = Context(tmp_path, progress=_quiet)
    for label in ("local-postroom", "local-postfix"):
        first.put_aside(first.new_rundir(label))
    left = first.new_rundir("accept-postroom")  # a run that failed before it was put aside
    first.cleanup(keep=True)

    second = Context(tmp_path, progress=_quiet)  # --keep-workdir, the same --workdir
    again = second.new_rundir("local-postroom")
    second.put_aside(again)
    assert left.name == "003-accept-postroom"
    assert again.name == "004-local-postroom"
    assert sorted(p.name for p in second.aside_dir.iterdir()) == [
        "001-local-postroom",
        "002-local-postfix",
        "004-local-postroom",
    ]
