"""The documentation: the README is a short front door, docs/cli/*.md hold the reference, and
the option tables there are generated from the real CLI, so they cannot drift from it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from flamcli.cli import reference

DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = ["detect", "review", "ground", "synth", "eval", "train", "models"]
README_HEAD = [
    "# flam",
    "",
    "```bash",
    'pip install . && flam detect examples/dog_park.flac "dog barks" --model flam-tiny',
    'pip install -e ".[test]" && pytest',
    "```",
]


def _command(path):
    """The click command of a documented path, straight from the Typer app."""
    import typer

    from flamcli.cli.app import app

    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="flam", **(command.context_settings or {}))
    for name in path:
        command = command.get_command(ctx, name)
        ctx = command.context_class(command, info_name=name, parent=ctx,
                                    **(command.context_settings or {}))
    return command, ctx


def test_generated_blocks_match_the_cli():
    problems = reference.check()
    assert problems == [], "\n".join(problems + ["run: python -m flamcli.cli.reference"])


def test_the_module_imports_no_torch():
    code = ("import sys; import flamcli.cli.reference as r; r.command_pages(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_every_command_is_documented_with_every_long_option():
    paths = reference.command_pages()
    names = [reference.command_name(path) for path in paths]
    for expected in ("flam detect", "flam review", "flam ground", "flam train", "flam models",
                     "flam eval sed", "flam eval ground", "flam synth index", "flam synth sed"):
        assert expected in names
    assert "flam eval" not in names and "flam synth" not in names  # groups: their subcommands
    assert {reference.page_name(path) for path in paths} == set(PAGES)
    for path in paths:
        page = DOCS / "cli" / f"{reference.page_name(path)}.md"
        text = page.read_text(encoding="utf-8")
        name = reference.command_name(path)
        assert f"\n<!-- BEGIN GENERATED: {name} -->\n" in text, (page, name)
        assert f"\n<!-- END GENERATED: {name} -->\n" in text, (page, name)
        command, ctx = _command(path)
        options = [opt for param in command.get_params(ctx)
                   if param.param_type_name == "option" and not param.hidden
                   for opt in [*param.opts, *param.secondary_opts] if opt.startswith("--")]
        assert options and sorted(options) == sorted(reference.long_options(path))
        for option in options:
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), (page, option)
        for param in command.get_params(ctx):
            if param.hidden:  # a hidden alias stays out of the reference
                for opt in param.opts:
                    assert f"`{opt}`" not in reference.options_markdown(path)


def test_options_markdown_is_a_usage_line_and_a_table():
    block = reference.options_markdown(("eval", "sed"))
    assert reference.options_markdown("flam eval sed") == block
    lines = block.splitlines()
    assert lines[:3] == ["```text", "flam eval sed [OPTIONS]", "```"]
    assert "| option | type / default | meaning |" in lines
    row = next(line for line in lines if line.startswith("| `-g, --ground-truth`"))
    assert "required" in row
    row = next(line for line in lines if line.startswith("| `--median-filter`"))
    assert "default `3`" in row
    detect = reference.options_markdown(("detect",))
    assert "| `-o, --output` |" in detect and "--output-dir" not in detect  # hidden alias
    assert "`tsv\\|csv\\|json\\|jsonl\\|audacity\\|scores`, default `tsv`" in detect
    assert "env `FLAM_MODEL`" in detect
    assert "[bold]" not in reference.plain("[bold]Examples[/bold]") and \
        reference.plain("[bold]Examples[/bold] [0, 1] list[str]") == "Examples [0, 1] list[str]"


def test_readme_is_a_short_front_door():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) < 150, len(lines)
    assert lines[:6] == README_HEAD
    links = _links(text)
    for page in PAGES:
        assert f"docs/cli/{page}.md" in links, page
    assert "docs/library.md" in links
    assert "docs/cli/detect.md#exit-codes" in text
    assert "docs/detect.png" in links and (DOCS / "detect.png").is_file()
    for fact in ("flam-tiny", ".ci/run", "apt-get install chromium chromium-driver",
                 "FLAM: Frame-Wise Language-Audio", "DetectionSettings.create", "Detector("):
        assert fact in text, fact


def _strip_code(text: str) -> str:
    text = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _links(text: str) -> list[str]:
    """The targets of inline links and images, outside code."""
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _strip_code(text))


def _markdown_files():
    return [README, *sorted(DOCS.rglob("*.md"))]


def test_every_relative_link_resolves():
    broken = []
    checked = 0
    for document in _markdown_files():
        for target in _links(document.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
                continue  # a web address or an anchor on the same page
            path = target.split("#", 1)[0]
            resolved = (document.parent / path).resolve()
            if resolved.is_relative_to(REPO / "bench" / "results"):
                continue
            checked += 1
            if not resolved.exists():
                broken.append(f"{document.relative_to(REPO)}: {target}")
    assert checked > 20
    assert broken == []


def test_pages_keep_the_reference_facts():
    """A few facts from each part of the old README, so a page cannot lose its prose unseen."""
    facts = {
        "detect": ["## Exit codes", "## Many files, many processes", "| 141 |",
                   "`<name>.detect.json`", "torchrun --standalone", "libmpg123"],
        "review": ["review.jsonl", "--export", "http.server", "../review.png"],
        "ground": ["SpotSound-Bench", "--top-k", "mIoU 49.8 vs 48.3"],
        "synth": ["relabelling", "event_balance", "SynthDataset", "background_tilt_db"],
        "eval": ["psds1", "Lighthouse", "top5_accuracy", "sed_scores_eval 0.0.4"],
        "train": ["--resume latest", "Ma & Lerch, ISMIR 2022", "--tag-matches", "validation.jsonl"],
        "models": ["kechenadobe/OpenFLAM", "FLAM_ONEDNN_LINEAR", "--precision int8",
                   "Adobe Research License", "open_flam_oct17.pth"],
    }
    for page, needles in facts.items():
        text = (DOCS / "cli" / f"{page}.md").read_text(encoding="utf-8")
        for needle in needles:
            assert needle in text, (page, needle)
    library = (DOCS / "library.md").read_text(encoding="utf-8")
    for needle in ("DetectionSettings.create", "iter_detect", "frames_per_window", "ground_with"):
        assert needle in library, needle


@pytest.fixture
def docs_copy(tmp_path):
    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy)
    return copy


def test_check_reports_an_altered_block_and_changes_nothing(docs_copy):
    page = docs_copy / "cli" / "detect.md"
    text = page.read_text(encoding="utf-8")
    begin = text.index("<!-- BEGIN GENERATED: flam detect -->")
    row = text.index("| `--median-filter` |", begin)
    altered = text[:row] + text[row:].replace("default `3`", "default `5`", 1)
    page.write_text(altered, encoding="utf-8")

    problems = reference.check(docs_copy)
    assert len(problems) == 1, problems
    assert "cli/detect.md" in problems[0] and "'flam detect'" in problems[0]
    assert "default `5`" in problems[0] and "default `3`" in problems[0]
    assert page.read_text(encoding="utf-8") == altered  # --check writes nothing
    assert reference.main(["--check", "--docs", str(docs_copy)]) == 1

    assert reference.main(["--docs", str(docs_copy)]) == 0  # regenerating repairs it
    assert page.read_text(encoding="utf-8") == text
    assert reference.check(docs_copy) == []
    assert reference.main(["--check", "--docs", str(docs_copy)]) == 0
    assert not list((docs_copy / "cli").glob(".*.part"))


def test_check_reports_missing_unknown_and_broken_blocks(docs_copy):
    eval_page = docs_copy / "cli" / "eval.md"
    text = eval_page.read_text(encoding="utf-8")
    start = text.index("<!-- BEGIN GENERATED: flam eval classify -->")
    end = text.index("<!-- END GENERATED: flam eval classify -->\n") + len(
        "<!-- END GENERATED: flam eval classify -->\n")
    eval_page.write_text(text[:start] + text[end:], encoding="utf-8")
    models = docs_copy / "cli" / "models.md"
    models.write_text(models.read_text(encoding="utf-8")
                      + "\n<!-- BEGIN GENERATED: flam nosuch -->\n<!-- END GENERATED: flam nosuch -->\n",
                      encoding="utf-8")
    train = docs_copy / "cli" / "train.md"
    train.write_text(train.read_text(encoding="utf-8").replace(
        "<!-- END GENERATED: flam train -->", ""), encoding="utf-8")

    problems = "\n".join(reference.check(docs_copy))
    assert "flam eval classify: no generated block" in problems
    assert "'flam nosuch' names no command" in problems
    assert "cli/train.md" in problems and "'flam train' has no END line" in problems
    before = train.read_text(encoding="utf-8")
    assert reference.main(["--docs", str(docs_copy)]) == 1  # cannot be fixed by regenerating
    assert train.read_text(encoding="utf-8") == before  # a page with broken markers is left alone
