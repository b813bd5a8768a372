"""The option reference in ``docs/cli/*.md``, generated from the real command line.

Each page under ``docs/cli/`` holds prose written by hand and, for every command it documents,
a block generated here from the Typer app itself, between two marker lines::

    <!-- BEGIN GENERATED: flam eval sed -->
    ...usage line, arguments, and one table row per option...
    <!-- END GENERATED: flam eval sed -->

``python -m flamcli.cli.reference`` rewrites every block from the current CLI (each page
atomically); ``python -m flamcli.cli.reference --check`` changes nothing and exits 1, naming
each page and block that differs, when a documented command has no block, or when a block
names a command that does not exist (exit 0 when everything matches). The tests run the check,
so an option added, renamed or re-described without regenerating the pages fails them.

The output depends only on the commands' parameters, never on the terminal's width. Standard
library and Typer/Click only; nothing here imports torch.
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..files import write_text_atomic

#: The documentation folder of a source checkout (the pages are not installed with the package).
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
PROGRAM = "flam"

BEGIN = re.compile(r"^<!-- BEGIN GENERATED: (?P<name>.*?) -->$")
END = re.compile(r"^<!-- END GENERATED: (?P<name>.*?) -->$")
ANY_MARKER = re.compile(r"<!--\s*(?:BEGIN|END)\s+GENERATED", re.IGNORECASE)


# --- the command line, as click sees it ------------------------------------------------------

def _root():
    """The ``flam`` click group and its context (imported late: the CLI is not needed to parse
    pages, and importing it must stay cheap)."""
    import typer

    from .app import app

    group = typer.main.get_command(app)
    return group, _context(group, PROGRAM, None)


def _context(command, name: str, parent):
    # Typer vendors its own copy of Click since 0.2x, so the classes are not click's: build the
    # context the way the command itself would, with its own context settings (help option
    # names, which children inherit from their parents).
    return command.context_class(command, info_name=name, parent=parent,
                                 **(command.context_settings or {}))


def _subcommands(command, ctx) -> list[str]:
    if not hasattr(command, "list_commands"):
        return []
    return [name for name in command.list_commands(ctx)
            if not getattr(command.get_command(ctx, name), "hidden", False)]


def _normalise(path) -> tuple[str, ...]:
    if isinstance(path, str):
        path = tuple(path.split())
    path = tuple(path)
    return path[1:] if path[:1] == (PROGRAM,) else path


def command_pages() -> list[tuple[str, ...]]:
    """Every documented command path (without the leading ``flam``), in the CLI's order: each
    top-level command, and for a group (``eval``, ``synth``) each of its subcommands."""
    group, ctx = _root()
    paths: list[tuple[str, ...]] = []
    for name in _subcommands(group, ctx):
        command = group.get_command(ctx, name)
        sub_ctx = _context(command, name, ctx)
        children = _subcommands(command, sub_ctx)
        if children:
            paths.extend((name, child) for child in children)
        else:
            paths.append((name,))
    return paths


def command_name(path) -> str:
    """``("eval", "sed")`` → ``"flam eval sed"``: the name a block's markers carry."""
    return " ".join((PROGRAM, *_normalise(path)))


def page_name(path) -> str:
    """The page a command is documented on: ``docs/cli/<top-level command>.md``."""
    return _normalise(path)[0]


def _resolve(path: tuple[str, ...]):
    command, ctx = _root()
    for name in path:
        child = command.get_command(ctx, name) if hasattr(command, "get_command") else None
        if child is None:
            raise KeyError(command_name(path))
        command, ctx = child, _context(child, name, ctx)
    return command, ctx


# --- one command's block ---------------------------------------------------------------------

_RICH_STYLE = (r"(?:not\s+)?(?:bold|b|italic|i|dim|d|underline|u|strike|s|reverse|r|blink|"
               r"blink2|conceal|overline|o|code|link|default|black|red|green|yellow|blue|"
               r"magenta|cyan|white|bright_\w+|gr[ae]y\d*|#[0-9a-fA-F]{6}|color\(\d+\)|on)")
_RICH_TAG = re.compile(rf"(?<!\\)\[/?(?:{_RICH_STYLE}(?:[ =][^\]\[]*)?)?\](?!\()")


def plain(text: str | None) -> str:
    """Help text without Rich markup (``[bold]…[/bold]``, ``[/]``, escaped ``\\[``), on one
    line."""
    text = _RICH_TAG.sub("", text or "")
    text = text.replace("\\[", "[")
    return " ".join(text.split())


def _cell(text: str) -> str:
    """Text for a markdown table cell: pipes escaped (GitHub needs it even in code spans), and
    outside code spans, whatever would read as an HTML tag."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if not part.startswith("`"):
            part = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", part)
        out.append(part.replace("|", "\\|"))
    return "".join(out)


def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _type_name(param, ctx) -> str:
    """The value's type as the CLI's help shows it: ``int``, ``tsv|csv|json``, ``path``…"""
    if getattr(param, "metavar", None) and getattr(param, "param_type_name", "") != "argument":
        name = param.metavar
    elif hasattr(param, "display_type"):  # Typer's own parameters (Typer >= 0.2x)
        name = param.display_type(ctx)
    else:  # Click's parameters
        try:
            name = param.make_metavar(ctx)
        except TypeError:  # Click < 8.2
            name = param.make_metavar()
        if getattr(param, "param_type_name", "") == "argument":
            name = getattr(param.type, "name", name)
    name = str(name).strip()
    if name.startswith("<") and name.endswith(">"):
        name = name[1:-1]
    several = getattr(param, "multiple", False) or getattr(param, "nargs", 1) != 1
    if several and name.startswith("list[") and name.endswith("]"):
        name = name[5:-1]  # "repeatable" / "one or more" says it
    return name.removesuffix(" range")


def _number_range(param) -> str:
    owner = param if hasattr(param, "min") else getattr(param, "type", None)
    low, high = getattr(owner, "min", None), getattr(owner, "max", None)
    low_op = "<" if getattr(owner, "min_open", False) else "<="
    high_op = "<" if getattr(owner, "max_open", False) else "<="
    if low is not None and high is not None:
        return f"{low}{low_op}x{high_op}{high}"
    if low is not None:
        return f"x{'>' if low_op == '<' else '>='}{low}"
    if high is not None:
        return f"x{high_op}{high}"
    return ""


def _default(param, ctx) -> str | None:
    """The default as help would show it, or None when there is none to show."""
    show = getattr(param, "show_default", None)
    if show is False:
        return None
    if isinstance(show, str):
        return show
    value = param.get_default(ctx, call=False)
    if callable(value):
        return "(dynamic)"
    if value is None or value is False:
        return None
    if isinstance(value, (list, tuple)):
        items = [item.value if isinstance(item, enum.Enum) else item for item in value]
        return ", ".join(str(item) for item in items) or None
    if isinstance(value, enum.Enum):
        return str(value.value)
    if getattr(param, "is_flag", False):
        secondary = getattr(param, "secondary_opts", None)
        if not secondary:
            return None  # a plain flag is off unless given
        return (param.opts if value else secondary)[0].lstrip("-")
    return str(value)


def _envvar(param) -> str:
    value = getattr(param, "envvar", None)
    if not value:
        return ""
    return ", ".join(value) if isinstance(value, (list, tuple)) else str(value)


def _is_flag(param) -> bool:
    return bool(getattr(param, "is_flag", False) or getattr(param, "count", False))


def _details(param, ctx, *, argument: bool) -> str:
    details = []
    if _is_flag(param):
        details.append("flag")
    else:
        details.append(_code(_type_name(param, ctx)))
        number_range = _number_range(param)
        if number_range:
            details.append(number_range)
    if getattr(param, "multiple", False):
        details.append("repeatable")
    if argument and param.nargs != 1:
        details.append("one or more" if param.required else "any number")
    elif param.required:
        details.append("required")
    envvar = _envvar(param)
    if envvar:
        details.append(f"env {_code(envvar)}")
    default = _default(param, ctx)
    if default is not None:
        details.append(f"default {_code(default)}")
    return ", ".join(details)


def _usage(command, ctx) -> str:
    return " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])


def _flags(param) -> str:
    def joined(opts) -> str:  # short forms first, as Click's help lists them
        return ", ".join(sorted(opts, key=lambda opt: len(opt) - len(opt.lstrip("-"))))

    flags = joined(param.opts)
    if getattr(param, "secondary_opts", None):
        flags += " / " + joined(param.secondary_opts)
    return flags


def long_options(path) -> list[str]:
    """The command's non-hidden ``--long`` option names (for the docs tests)."""
    command, ctx = _resolve(_normalise(path))
    names = []
    for param in command.get_params(ctx):
        if getattr(param, "param_type_name", "") != "option" or getattr(param, "hidden", False):
            continue
        names.extend(opt for opt in [*param.opts, *(param.secondary_opts or [])]
                     if opt.startswith("--"))
    return names


def options_markdown(path) -> str:
    """One command's generated block: its usage line, its arguments, and a table with a row
    for every non-hidden option (all its flags, its type and default, its help)."""
    path = _normalise(path)
    command, ctx = _resolve(path)
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [p for p in params if getattr(p, "param_type_name", "") == "argument"]
    options = [p for p in params if getattr(p, "param_type_name", "") != "argument"]

    lines = ["```text", _usage(command, ctx), "```"]
    if arguments:
        lines += ["", "| argument | type | meaning |", "|---|---|---|"]
        for param in arguments:
            name = param.metavar or param.name.upper()
            lines.append(f"| {_cell(_code(name))} | {_cell(_details(param, ctx, argument=True))} "
                         f"| {_cell(plain(getattr(param, 'help', '')))} |")
    if options:
        lines += ["", "| option | type / default | meaning |", "|---|---|---|"]
        for param in options:
            lines.append(f"| {_cell(_code(_flags(param)))} "
                         f"| {_cell(_details(param, ctx, argument=False))} "
                         f"| {_cell(plain(getattr(param, 'help', '')))} |")
    return "\n".join(lines) + "\n"


# --- the pages -------------------------------------------------------------------------------

@dataclass
class Block:
    name: str  # "flam eval sed"
    start: int  # index of the BEGIN line
    end: int  # index of the END line
    body: str  # the text between them


def _pages(docs_dir: Path) -> list[Path]:
    return sorted((docs_dir / "cli").glob("*.md"))


def _parse(lines: list[str], page: str) -> tuple[list[Block], list[str]]:
    """The generated blocks of one page, and what is malformed about its markers."""
    blocks, problems = [], []
    open_block: tuple[str, int] | None = None
    for number, line in enumerate(lines):
        text = line.rstrip("\r\n")
        begin, end = BEGIN.match(text), END.match(text)
        if begin:
            if open_block is not None:
                problems.append(f"{page}:{number + 1}: block {open_block[0]!r} (line "
                                f"{open_block[1] + 1}) has no END line before the next BEGIN")
            open_block = (begin["name"], number)
        elif end:
            if open_block is None:
                problems.append(f"{page}:{number + 1}: END line for {end['name']!r} without BEGIN")
            elif end["name"] != open_block[0]:
                problems.append(f"{page}:{number + 1}: END line names {end['name']!r}, but the "
                                f"open block is {open_block[0]!r}")
                open_block = None
            else:
                blocks.append(Block(open_block[0], open_block[1], number,
                                    "".join(lines[open_block[1] + 1:number])))
                open_block = None
        elif ANY_MARKER.search(text):
            problems.append(f"{page}:{number + 1}: malformed marker line {text.strip()!r} "
                            "(expected exactly '<!-- BEGIN GENERATED: flam … -->')")
    if open_block is not None:
        problems.append(f"{page}:{open_block[1] + 1}: block {open_block[0]!r} has no END line")
    return blocks, problems


def _display(path: Path, docs_dir: Path) -> str:
    try:
        return str(path.relative_to(docs_dir.parent))
    except ValueError:
        return str(path)


def _survey(docs_dir: Path):
    """Every page's lines, blocks and marker problems, and the commands' expected blocks."""
    expected = {command_name(path): options_markdown(path) for path in command_pages()}
    pages = []
    problems: list[str] = []
    if not (docs_dir / "cli").is_dir():
        problems.append(f"{_display(docs_dir / 'cli', docs_dir)}: no such folder")
    for page in _pages(docs_dir):
        lines = page.read_text(encoding="utf-8").splitlines(keepends=True)
        blocks, malformed = _parse(lines, _display(page, docs_dir))
        problems += malformed
        pages.append((page, lines, blocks, not malformed))
    return expected, pages, problems


def check(docs_dir: Path | str | None = None) -> list[str]:
    """What differs between the pages and the CLI, one line each; empty when all match."""
    docs_dir = Path(docs_dir) if docs_dir is not None else DOCS_DIR
    expected, pages, problems = _survey(docs_dir)
    seen: dict[str, str] = {}
    for page, _lines, blocks, _well_formed in pages:
        shown = _display(page, docs_dir)
        for block in blocks:
            if block.name not in expected:
                problems.append(f"{shown}: block {block.name!r} names no command of the CLI")
                continue
            if block.name in seen:
                problems.append(f"{shown}: block {block.name!r} is also in {seen[block.name]}")
            seen.setdefault(block.name, shown)
            if block.body != expected[block.name]:
                problems.append(f"{shown}: block {block.name!r} differs from the CLI "
                                f"({_first_difference(block, expected[block.name])})")
    for name in expected:
        if name not in seen:
            problems.append(f"{name}: no generated block on any page under "
                            f"{_display(docs_dir / 'cli', docs_dir)}")
    return problems


def _first_difference(block: Block, expected: str) -> str:
    """Where a block first departs from the CLI's text, for the check's message."""
    have, want = block.body.splitlines(), expected.splitlines()
    for offset, (line, wanted) in enumerate(zip(have, want)):
        if line != wanted:
            at = next((i for i, (a, b) in enumerate(zip(line, wanted)) if a != b),
                      min(len(line), len(wanted)))
            return (f"line {block.start + 2 + offset}: {_excerpt(line, at)!r}, "
                    f"the CLI says {_excerpt(wanted, at)!r}")
    if len(have) < len(want):
        return (f"the CLI adds {_excerpt(want[len(have)], 0)!r} "
                f"after line {block.start + 1 + len(have)}")
    if len(have) > len(want):
        return (f"line {block.start + 2 + len(want)}: {_excerpt(have[len(want)], 0)!r} "
                "is not in the CLI")
    return "line endings differ"


def _excerpt(text: str, at: int, width: int = 50) -> str:
    start = max(0, at - 15)
    excerpt = text[start:start + width]
    return ("…" if start else "") + excerpt + ("…" if start + width < len(text) else "")


def update(docs_dir: Path | str | None = None) -> tuple[list[str], list[str]]:
    """Rewrite every block from the CLI. Returns the pages rewritten and what could not be
    fixed by rewriting (malformed markers, unknown commands, commands without a block)."""
    docs_dir = Path(docs_dir) if docs_dir is not None else DOCS_DIR
    expected, pages, problems = _survey(docs_dir)
    written = []
    for page, lines, blocks, well_formed in pages:
        if not well_formed:
            continue  # its problems are reported; rewriting half-understood markers could eat prose
        new = list(lines)
        for block in reversed(blocks):
            if block.name in expected:
                new[block.start + 1:block.end] = [expected[block.name]]
        if "".join(new) != "".join(lines):
            write_text_atomic(page, "".join(new))
            written.append(_display(page, docs_dir))
    remaining = [problem for problem in check(docs_dir) if problem not in problems]
    return written, problems + remaining


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flamcli.cli.reference",
        description="Regenerate the option tables in docs/cli/*.md from the real flam CLI.")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 naming each page and block that differs")
    parser.add_argument("--docs", type=Path, default=DOCS_DIR,
                        help=f"documentation folder (default: {DOCS_DIR})")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.docs)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python -m flamcli.cli.reference` to regenerate the blocks", file=sys.stderr)
        return 1 if problems else 0
    written, problems = update(args.docs)
    for page in written:
        print(f"rewrote {page}", file=sys.stderr)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
