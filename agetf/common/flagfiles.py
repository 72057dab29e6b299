"""Checking the flagfiles of a command line before absl reads them.

absl passes a flagfile line without its dashes (`epochs=5`) on as a positional argument:
agetf.train then stops with "unexpected arguments" under 200 lines of help, and agetf.predict
would take it for an image. Each entry point calls `exit_on_bad_flagfile` first, which names
the file and the line in one line instead.
"""

import os
import sys

_DIRECTIVES = ("--flagfile", "-flagfile")


def _named_flagfiles(args):
    """The flagfiles an argument list names (--flagfile=FILE or --flagfile FILE), up to '--'."""
    paths, args = [], list(args)
    while args:
        arg = args.pop(0)
        if arg == "--":
            break
        if arg in _DIRECTIVES and args:
            paths.append(args.pop(0))
        elif arg.startswith(tuple(directive + "=" for directive in _DIRECTIVES)):
            paths.append(arg.split("=", 1)[1])
    return paths


def _takes_a_value(flag, flag_values):
    """Whether a flag line such as `--data_dir` takes the next line as its value, as absl allows."""
    name = flag.lstrip("-")
    return "=" not in flag and name in flag_values and not flag_values[name].boolean


def _problem_in(path, named_in, stack, flag_values):
    """The first problem of one flagfile and those it includes, as absl reads them; or None."""
    if path in stack:
        return None  # absl warns about the cycle and skips the file
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as error:
        return (f"{named_in}cannot read flagfile {path} ({error.strerror}); "
                "check the --flagfile path")
    except ValueError:
        return f"{named_in}flagfile {path} is not a text file; check the --flagfile path"
    value_expected = False
    for number, line in enumerate(lines, start=1):
        # absl's rules: blank lines and lines starting (unindented) with # or // are skipped.
        if line.isspace() or line.startswith(("#", "//")):
            continue
        if line.startswith(tuple(directive + "=" for directive in _DIRECTIVES)):
            nested = os.path.expanduser(line.split("=", 1)[1].strip())
            problem = _problem_in(nested, f"{path} line {number}: ", [*stack, path], flag_values)
            if problem:
                return problem
            continue
        text = line.strip()
        if not text.startswith("-") and not value_expected:
            return f"{path} line {number}: {text!r} is not a flag; write it as --{text}"
        value_expected = text.startswith("-") and _takes_a_value(text, flag_values)
    return None


def flagfile_problem(argv, flag_values):
    """One line naming the first flagfile line of argv that is not a flag (nested flagfiles
    included), or a flagfile that cannot be read; None when there is none. `flag_values`: the
    entry point's absl FlagValues (which flags take a value on the next line)."""
    for path in _named_flagfiles(argv[1:]):
        problem = _problem_in(os.path.expanduser(path), "", [], flag_values)
        if problem:
            return problem
    return None


def exit_on_bad_flagfile(argv, program, flag_values):
    """Exits with `PROGRAM: error: FILE line N: ...` when flagfile_problem finds one; call it
    after the flags are defined and before absl parses argv."""
    problem = flagfile_problem(argv, flag_values)
    if problem:
        sys.exit(f"{program}: error: {problem}")
