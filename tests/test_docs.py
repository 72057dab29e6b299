"""Every command in the documentation runs as written, and every link leads somewhere.

The rule. A command is a line of README.md, BUILD.md, tfrecords/README.md or docs/*.md
that sits in a code block (a fenced block, or a line indented by 4 or more spaces) and,
after any `NAME=value` environment assignments, starts as COMMAND_START says: `python -m`,
`python -c`, `scripts/NAME`, `.venv/bin/python`, `pip`, `tensorboard`. A line ending in a
backslash continues on the next; `# ...` ends it; `&&` separates commands on one line. A
command holding the placeholder `...` is a fragment. Commands run in the active venv, as
the README asks: `python`, `python3` and `scripts/` resolve to this Python.

What is checked:
(a) every command: its program exists (an `agetf` module, an executable `scripts/` file, a
    pip extra, pytest's paths, tensorboard); every `--flag` it passes is a flag its entry
    point defines; every `--flagfile` it names exists. Each entry point is run once, in a
    subprocess, with `--helpfull` (so the help a user asks for is run too), and the same
    process then parses every documented command line of it with absl, as the program
    would, and runs the program's own `build_config` where it has one (agetf.train): types,
    enum values, required flags and the flags inside flagfiles are checked without
    training anything. Fragments get the name checks only.
(b) the short commands that need no dataset, GPU or network run end to end in a fresh
    folder of their own, where `~` is a folder holding synthetic UTKFace-named faces (as
    `~/data/UTKFace`, `~/data/part1`, `~/data/part2`) and the split files the docs name:
    making synthetic faces (with `--count` cut to RUN_COUNT), converting them, the
    `python -c` one-liners. A command with an absolute path is not run, since it would
    write outside that folder. Training, prediction and the benchmarks need a trained
    model or minutes of CPU: (a) only.
"""

import concurrent.futures
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from agetf.data import dataset_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(["README.md", "BUILD.md", os.path.join("tfrecords", "README.md"),
                *(os.path.relpath(path, REPO)
                  for path in glob.glob(os.path.join(REPO, "docs", "*.md")))])
COMMAND_START = re.compile(r"(python3? -[mc] |(python |\.venv/bin/python )?scripts/\w|"
                           r"\.venv/bin/python -[mc] |(\.venv/bin/)?pip |tensorboard )")
PYTHONS = ("python", "python3", ".venv/bin/python")
RUN_COUNT = 24  # synthetic faces a documented --count is cut to
RUN_WORKERS = 2  # and --workers
ABSL_DIRECTIVES = ("flagfile", "undefok")  # absl reads these itself; they are no flags
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
LEADING_ENV = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=(?:'[^']*'|\"[^\"]*\"|\S+)\s+)+")


# -- finding the commands ------------------------------------------------------------------

def code_lines(text):
    """(line number, line) of every line in a fenced block or indented by 4+ spaces."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            yield number, line


def page_commands(page):
    """[(page, line number, command text)] of one page, continuation lines joined."""
    with open(os.path.join(REPO, page)) as f:
        lines = list(code_lines(f.read()))
    commands, index = [], 0
    while index < len(lines):
        number, line = lines[index]
        text = line.strip()
        while text.endswith("\\") and index + 1 < len(lines):
            index += 1
            text = text[:-1] + " " + lines[index][1].strip()
        index += 1
        if COMMAND_START.match(LEADING_ENV.sub("", text)):
            commands.append((page, number, text))
    return commands


class Command:
    """One simple command of a page: its program (kind, name) and its arguments."""

    def __init__(self, page, line, words):
        self.page, self.line, self.words = page, line, words
        self.fragment = "..." in words
        self.kind, self.name, self.args = classify(words)

    @property
    def id(self):
        return f"{self.page}:{self.line}: {shlex.join(self.words)}"[:150]


def classify(words):
    """(kind, name, arguments): kind is 'module', 'script', 'pytest', 'pip', 'venv',
    'python -c', 'tensorboard', 'ruff' or 'unknown'."""
    words = list(words)
    while words and ENV_ASSIGNMENT.match(words[0]):
        words.pop(0)
    if words[0] in PYTHONS and len(words) > 2 and words[1] == "-m":
        module, args = words[2], words[3:]
        if module.startswith("agetf."):
            return "module", module, args
        kind = module if module in ("pytest", "venv", "pip") else "unknown"
        return kind, module, args
    if words[0] in PYTHONS and len(words) > 1 and words[1] == "-c":
        return "python -c", words[0], words[1:]
    if words[0] in PYTHONS and len(words) > 1 and words[1].startswith("scripts/"):
        return "script", words[1], words[2:]
    if words[0].startswith("scripts/"):
        return "script", words[0], words[1:]
    if words[0] in ("pip", ".venv/bin/pip"):
        return "pip", words[0], words[1:]
    if words[0] == "tensorboard":
        return "tensorboard", words[0], words[1:]
    if words[0] in ("ruff", ".venv/bin/ruff"):
        return "ruff", words[0], words[1:]
    return "unknown", words[0], words[1:]


def all_commands():
    commands = []
    for page in PAGES:
        for page_name, line, text in page_commands(page):
            words = shlex.split(text, comments=True)
            while "&&" in words:
                cut = words.index("&&")
                commands.append(Command(page_name, line, words[:cut]))
                words = words[cut + 1:]
            commands.append(Command(page_name, line, words))
    return commands


COMMANDS = all_commands()
ENTRY_COMMANDS = [c for c in COMMANDS if c.kind in ("module", "script")]


def passed_flags(args):
    """[(flag name, value or None)] of the `--name[=value]` words, up to a lone `--`."""
    found = []
    for index, word in enumerate(args):
        if word == "--":
            break
        if word.startswith("--") and len(word) > 2:
            name, sep, value = word[2:].partition("=")
            if not sep and index + 1 < len(args) and not args[index + 1].startswith("-"):
                value = args[index + 1]  # `--flag value`, or a positional after a boolean
            found.append((name, value if (sep or value) else None))
    return found


def is_runnable(command):
    """(b): the documented commands that are cheap and need no dataset, model or network."""
    if command.fragment or any(word.startswith("/") for word in command.args):
        return False
    if command.kind == "python -c":
        return "tensorflow" not in command.args[1]  # TensorFlow's start is the slow part
    return command.kind in ("script", "module") and command.name in (
        "scripts/make_synthetic_faces", "scripts/make_tfrecords", "agetf.convert") and \
        "--helpfull" not in command.args


# -- running the entry points -------------------------------------------------------------

# Runs one entry point as its command does, with --helpfull, then parses each documented
# argument list with absl in the same process (and the program's build_config, if any).
FLAG_LISTER = r"""
import contextlib, importlib.util, io, json, sys
from absl import flags
kind, name, commands = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if kind == "module":
    spec = importlib.util.find_spec(name)
    path, code = spec.origin, spec.loader.get_code(name)
else:
    path = name
    with open(path) as f:
        code = compile(f.read(), path, "exec")
namespace = {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}
sys.argv = [name, "--helpfull"]
help_text, status = io.StringIO(), None
with contextlib.redirect_stdout(help_text):
    try:
        exec(code, namespace)
    except SystemExit as stop:
        status = stop.code
    except Exception as error:
        status = f"{type(error).__name__}: {error}"
FLAGS = flags.FLAGS
known = {flag: FLAGS[flag].boolean for flag in FLAGS}
from agetf.common import flagfiles
problems = []
for args in commands:
    FLAGS.unparse_flags()
    try:
        flagfiles.exit_on_bad_flagfile([name, *args], name, FLAGS)
        FLAGS([name, *args])
        if callable(namespace.get("build_config")):
            namespace["build_config"]()
        problems.append(None)
    except SystemExit as stop:
        problems.append(f"exit {stop.code}")
    except Exception as error:
        problems.append(f"{type(error).__name__}: {error}")
print("@@flags@@" + json.dumps({"help": help_text.getvalue(), "status": status,
                                 "absl": "helpfull" in FLAGS,
                                 "flags": known, "problems": problems}))
"""


def without_absent_shared_weights(args):
    """args with a --weights file of the project's own machines (../shared/weights, never
    committed, absent on CI) that is absent here read as --weights=none: the documented
    command is still parsed and configured, but for that file's own check."""
    shared = re.compile(r"--weights=(\.\./shared/\S+)")
    return [("--weights=none" if (match := shared.fullmatch(arg))
             and not os.path.exists(os.path.join(REPO, match.group(1))) else arg)
            for arg in args]


def list_flags(kind, name, arg_lists):
    """{help, status, absl (whether it parsed absl flags), flags: {name: is_boolean},
    problems: [None or the error, per argument list]}."""
    result = subprocess.run(
        [sys.executable, "-c", FLAG_LISTER, kind, name, json.dumps(arg_lists)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    marker = [line for line in result.stdout.splitlines() if line.startswith("@@flags@@")]
    assert marker, f"{name} --helpfull did not run:\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    return json.loads(marker[-1][len("@@flags@@"):])


def write_split_files(workspace, faces):
    """The split files the docs name, over the synthetic faces, in the workspace."""
    names = sorted(os.listdir(faces))
    with open(os.path.join(workspace, "published.csv"), "w") as f:
        f.write("filename,split\n")
        for index, name in enumerate(names):
            f.write(f"{name},{('train', 'train', 'validation', 'test')[index % 4]}\n")
    # The CORAL paper's form: ",file,age", ages 21-60 only, age column = age - 21.
    in_range = [name for name in names if 21 <= int(name.split("_")[0]) <= 60]
    for split_name, rows in (("utk_train.csv", in_range[: len(in_range) * 3 // 4]),
                             ("utk_test.csv", in_range[len(in_range) * 3 // 4:])):
        with open(os.path.join(workspace, split_name), "w") as f:
            f.write(",file,age\n")
            for index, name in enumerate(rows):
                f.write(f"{index},{name},{int(name.split('_')[0]) - 21}\n")


def make_workspace(root, faces):
    """A fresh folder laid out like a checkout with data: scripts/ and flags/ of the repo,
    the faces at data/synthetic_faces and ~/data/{UTKFace,part1,part2}, the split files."""
    os.makedirs(root)
    for name in ("scripts", "flags", "agetf"):
        os.symlink(os.path.join(REPO, name), os.path.join(root, name))
    os.symlink(sys.prefix, os.path.join(root, ".venv"))
    names = sorted(os.listdir(faces))
    for folder, subset in (("data/synthetic_faces", names), ("home/data/UTKFace", names),
                           ("home/data/part1", names[::2]), ("home/data/part2", names[1::2])):
        os.makedirs(os.path.join(root, folder))
        for name in subset:
            shutil.copy(os.path.join(faces, name), os.path.join(root, folder, name))
    write_split_files(root, faces)
    return root


def shrunk(words):
    """The command with --count and --workers cut to RUN_COUNT and RUN_WORKERS."""
    words, limits = list(words), {"--count": RUN_COUNT, "--workers": RUN_WORKERS}
    for index, word in enumerate(words):
        name, sep, value = word.partition("=")
        if name in limits:
            if sep:
                words[index] = f"{name}={min(int(value), limits[name])}"
            elif index + 1 < len(words):
                words[index + 1] = str(min(int(words[index + 1]), limits[name]))
    return words


def run_in_workspace(command, workspace):
    """Runs the command as a shell would (`~` is HOME), in the workspace."""
    home = os.path.join(workspace, "home")
    env = {**os.environ, "HOME": home, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    words = [os.path.join(home, word[2:]) if word.startswith("~/") else word
             for word in shrunk(command.words)]
    return subprocess.run(words, cwd=workspace, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every entry point's flags and parse problems, and the runnable commands' results,
    all run concurrently (most of the time is TensorFlow starting in a few of them)."""
    entries = {}
    for command in ENTRY_COMMANDS:
        entries.setdefault((command.kind, command.name), [])
        args = without_absent_shared_weights(command.args)
        if not command.fragment and "--helpfull" not in args and \
                args not in entries[(command.kind, command.name)]:
            entries[(command.kind, command.name)].append(args)
    entries = {key: args for key, args in entries.items()
               if entry_exists(*key) and is_python(*key)}
    runnable, seen = [], set()
    for command in COMMANDS:
        if is_runnable(command) and run_key(command) not in seen:
            seen.add(run_key(command))
            runnable.append(command)
    root = tmp_path_factory.mktemp("docs")
    faces = str(root / "faces")
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_synthetic_faces"),
                    "--output_dir", faces, "--count", str(RUN_COUNT * 2), "--seed", "3"],
                   check=True, capture_output=True, timeout=300)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        flag_jobs = {key: pool.submit(list_flags, key[0], key[1], args)
                     for key, args in entries.items()}
        run_jobs = {run_key(command): pool.submit(
            run_in_workspace, command, make_workspace(str(root / f"run{index}"), faces))
            for index, command in enumerate(runnable)}
        return {"flags": {key: job.result() for key, job in flag_jobs.items()},
                "args": entries,
                "runs": {key: (job.result(), str(root / f"run{index}"))
                         for index, (key, job) in enumerate(run_jobs.items())}}


def run_key(command):
    """Commands that differ only in how they call Python run once."""
    return command.kind, command.name, tuple(command.args)


def entry_path(kind, name):
    if kind == "module":
        return os.path.join(REPO, *name.split(".")) + ".py"
    return os.path.join(REPO, name)


def entry_exists(kind, name):
    path = entry_path(kind, name)
    return os.path.isfile(path) and (kind == "module" or os.access(path, os.X_OK))


def is_python(kind, name):
    """A module, or a script run by Python (scripts/demo is bash)."""
    if kind == "module":
        return True
    with open(entry_path(kind, name)) as f:
        return "python" in f.readline()


# -- the tests ----------------------------------------------------------------------------

def test_the_rule_finds_the_commands_of_every_page():
    """Each docs page opens with its commands (a command before its first ## heading)."""
    pages = {command.page for command in COMMANDS}
    assert set(PAGES) <= pages | {"docs/results.md"}, set(PAGES) - pages
    for page in PAGES:
        if not page.startswith("docs"):
            continue
        with open(os.path.join(REPO, page)) as f:
            text = f.read()
        first_heading = next((n for n, line in enumerate(text.splitlines(), 1)
                              if line.startswith("## ")), 10**6)
        first_command = min(line for p, line, _ in page_commands(page) if p == page)
        assert first_command < first_heading, f"{page}: no command before its first section"
    assert len(ENTRY_COMMANDS) > 50


def test_readme_opens_with_the_demo_and_the_ci_test_command():
    """The two opening commands, verbatim; the second is the one CI runs (.ci/run)."""
    with open(os.path.join(REPO, ".ci", "run")) as f:
        ci_command = [line for line in f.read().splitlines() if "pytest" in line][0].strip()
    demo = ("python3 -m venv .venv && .venv/bin/pip install -e . && "
            "PYTHON=.venv/bin/python scripts/demo")
    first_two = [text for _, _, text in page_commands("README.md")[:2]]
    assert first_two == [demo, ci_command]


# -m "not slow": an expression, not a path; -n 2: pytest-xdist's process count
PYTEST_OPTIONS_WITH_A_VALUE = ("-m", "-k", "-p", "-n")


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.kind not in ("module", "script")],
                         ids=lambda c: c.id)
def test_other_programs_exist(command):
    assert command.kind != "unknown", f"not a known kind of command: {command.id}"
    if command.kind == "pytest":
        words = list(command.args)
        for index, word in enumerate(words):
            takes_a_value = index > 0 and words[index - 1] in PYTEST_OPTIONS_WITH_A_VALUE
            if not word.startswith("-") and not takes_a_value:
                assert os.path.exists(os.path.join(REPO, word)), word
    elif command.kind == "pip" and "install" in command.args:
        with open(os.path.join(REPO, "setup.py")) as f:
            setup = f.read()
        for word in command.args:
            extras = re.fullmatch(r"\.\[([\w,]+)\]", word)
            for extra in extras.group(1).split(",") if extras else ():
                assert re.search(rf'"{extra}":', setup), f"setup.py has no extra {extra!r}"
    elif command.kind == "tensorboard":
        assert os.path.isfile(os.path.join(os.path.dirname(sys.executable), "tensorboard"))
    elif command.kind == "ruff":
        with open(os.path.join(REPO, "setup.py")) as f:
            assert '"ruff' in f.read(), "ruff is run in the docs but not installed by [test]"


@pytest.mark.slow
@pytest.mark.parametrize("command", ENTRY_COMMANDS, ids=lambda c: c.id)
def test_entry_point_exists_and_takes_every_flag(command, results):
    assert entry_exists(command.kind, command.name), f"no entry point {command.name}"
    listed = results["flags"].get((command.kind, command.name), {"absl": False})
    if not listed["absl"]:  # scripts/demo, scripts/results_table
        assert not passed_flags(command.args), (
            f"{command.id}: {command.name} takes no flags (with --helpfull it printed no absl "
            f"help; it ended with {listed.get('status')!r})")
        return
    assert listed["status"] is not None and listed["help"].strip(), \
        f"{command.name} --helpfull printed no help"
    known = listed["flags"]
    for name, value in passed_flags(command.args):
        if name in ABSL_DIRECTIVES:
            assert value and os.path.isfile(os.path.join(REPO, value)), \
                f"{command.id}: no flagfile {value}"
            continue
        boolean_negation = name.startswith("no") and known.get(name[2:]) is True
        assert name in known or boolean_negation, \
            f"{command.id}: --{name} is no flag of {command.name}"


@pytest.mark.parametrize("command", [c for c in ENTRY_COMMANDS
                                     if not c.fragment and "--helpfull" not in c.args
                                     and entry_exists(c.kind, c.name)
                                     and is_python(c.kind, c.name)],
                         ids=lambda c: c.id)
def test_flag_values_parse(command, results):
    """absl (and agetf.train's own checks) accept the documented command line."""
    key = (command.kind, command.name)
    args, listed = results["args"][key], results["flags"][key]
    if not listed["absl"]:
        return  # no flags to parse (test_entry_point_exists_and_takes_every_flag checks that)
    problem = listed["problems"][args.index(without_absent_shared_weights(command.args))]
    assert problem is None, f"{command.id}: {problem}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if is_runnable(c)], ids=lambda c: c.id)
def test_short_commands_run(command, results):
    result, workspace = results["runs"][run_key(command)]
    assert result.returncode == 0, f"{command.id}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    output = dict(passed_flags(command.args)).get("output_dir")
    if command.name in ("scripts/make_tfrecords", "agetf.convert"):
        with open(os.path.join(workspace, output, dataset_files.REPORT_FILE)) as f:
            assert sum(json.load(f)["counts"].values()) > 0
    elif command.name == "scripts/make_synthetic_faces":
        assert len(os.listdir(os.path.join(workspace, output))) > 0


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(path):
    """GitHub's anchors for a Markdown file's headings."""
    anchors = set()
    with open(path) as f:
        fenced = False
        for line in f:
            if line.lstrip().startswith("```"):
                fenced = not fenced
            if not fenced and line.startswith("#"):
                title = line.lstrip("#").strip().lower()
                anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors




@pytest.mark.parametrize("page", PAGES)
def test_links_lead_to_files_and_sections(page):
    with open(os.path.join(REPO, page)) as f:
        links = LINK.findall(f.read())
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue  # a web address
        target, _, anchor = link.partition("#")
        path = os.path.normpath(os.path.join(REPO, os.path.dirname(page), target)) if target \
            else os.path.join(REPO, page)
        assert os.path.exists(path), f"{page}: link {link} leads nowhere"
        if anchor and path.endswith(".md"):
            assert anchor in heading_anchors(path), f"{page}: no section #{anchor} in {target}"


# -- facts stated on several pages agree ---------------------------------------------------

def _minutes(match):
    """'1 min 58 s' or '2 minutes' as whole minutes, rounded."""
    seconds = int(match.group("s")) if match.groupdict().get("s") else 0
    return str(round(int(match.group("m")) + seconds / 60))


# A number quoted on more than one page: (what, [(file, regex with one group, or a function
# of the match)]). Each regex must match its file once at least, and every value agree.
# Prefer quoting a measurement once and linking to it; add a row when a copy is needed.
AGREEING_NUMBERS = [
    ("utkface_cpu training, minutes", [
        ("README.md", r"train for (\d+) minutes\s+on 2 CPU cores"),
        ("README.md", r"from random weights, (\d+) min\)"),
        ("docs/training.md", r"`flags/utkface_cpu\.flags` \|[^\n]*\| (\d+) min on 2 CPU cores"),
        ("docs/results.md", r"Training took (\d+) min of wall time"),
        ("docs/results.md", r"images/s an epoch and took (\d+) min"),
        ("docs/results.md", r"random weights \((\d+) min\)"),
        ("flags/utkface_cpu.flags", r"training (\d+) min \(38 epochs"),
    ]),
    ("utkface_cpu training rate of an epoch, images/s", [
        ("docs/results.md", r"1\.6-2\.1\s+min, at (\d+-\d+) images/s"),
        ("docs/results.md", r"The run itself trained at (\d+-\d+)\s+images/s an epoch"),
        ("flags/utkface_cpu.flags", r"38 epochs, (\d+-\d+) img/s"),
    ]),
    ("utkface_cpu test MAE, random split", [
        ("README.md", r"random-weights recipe \| 2,178 \| ([\d.]+) \|"),
        ("docs/training.md", r"72 min on 2 CPU cores; test MAE ([\d.]+)"),
        ("docs/results.md", r"\| age MAE \(years\) \| \*\*([\d.]+)\*\* \| 15\.29 \|"),
        ("flags/utkface_cpu.flags", r"test MAE ([\d.]+) years"),
    ]),
    ("utkface_cpu_imagenet, minutes", [
        ("README.md", r"heads then the whole backbone, (\d+) min\)"),
        ("docs/training.md", r"ImageNet \| (\d+) min on 2 CPU cores; test MAE"),
        ("docs/results.md", r"\*\*transfer recipe\*\* \(ImageNet, (\d+) min\)"),
        ("flags/utkface_cpu_imagenet.flags", r"CPU \(no GPU\): (\d+) min in all"),
    ]),
    ("utkface_cpu_imagenet test MAE", [
        ("README.md", r"\*\*transfer recipe\*\* \(ImageNet weights\) \| 2,178 \| \*\*([\d.]+)\*\*"),
        ("docs/training.md", r"63 min on 2 CPU cores; test MAE ([\d.]+)"),
        ("docs/results.md", r"\| age MAE \(years\) \| \*\*([\d.]+)\*\* \| 5\.45 \|"),
        ("flags/utkface_cpu_imagenet.flags", r"test MAE ([\d.]+) years"),
    ]),
    ("utkface_cpu_imagenet test MAE, CORAL split", [
        ("README.md", r"21-60: \*\*transfer recipe\*\*[^|\n]*\| 2,979 \| \*\*([\d.]+)\*\*"),
        ("docs/results.md", r"`utkface_cpu_imagenet` \(M[^|\n]*\| 2,979 \| \*\*([\d.]+)\*\*"),
        ("docs/results.md", r"The transfer recipe on this split: ([\d.]+) years"),
        ("flags/utkface_cpu_imagenet.flags", r"test MAE ([\d.]+) years on its 2,979 faces"),
    ]),
    ("utkface_cpu_imagenet calibrated 80% interval, share of test faces inside", [
        ("README.md", r"([\d.]+)% of UTKFace's test faces fall inside it"),
        ("docs/results.md", r"the 80% interval holds \*\*([\d.]+)%\*\* of the test faces"),
    ]),
    ("scripts/demo wall time, minutes", [
        ("README.md", re.compile(r"it took\s+(?P<m>\d+) minutes on 2 CPU cores"), _minutes),
        ("docs/performance.md", re.compile(r"faces to predictions \| (?P<m>\d+) min (?P<s>\d+) s"),
         _minutes),
        ("docs/training.md", re.compile(r"about (?P<m>\d+) min on 2 CPU cores \(the whole"),
         _minutes),
        ("flags/demo.flags", re.compile(r"scripts/demo took (?P<m>\d+) min (?P<s>\d+) s"),
         _minutes),
    ]),
    ("demo model's TFLite float16, largest age difference from the SavedModel, years", [
        ("docs/performance.md",
         r"`model_float16\.tflite` \|[^|\n]*\|[^|\n]*\|[^|\n]*\| ([\d.]+) /"),
        ("docs/deployment.md",
         r"largest\s+age\s+difference\s+from\s+the\s+SavedModel\s+is\s+[\d.]+,\s+([\d.]+)"),
    ]),
    ("demo model's TFLite dynamic int8, largest age difference from the SavedModel, years", [
        ("docs/performance.md",
         r"`model_dynamic_int8\.tflite` \|[^|\n]*\|[^|\n]*\|[^|\n]*\| ([\d.]+) /"),
        ("docs/deployment.md",
         r"largest\s+age\s+difference\s+from\s+the\s+SavedModel\s+is\s+[\d.]+,\s+[\d.]+\s+and\s+([\d.]+)"),
    ]),
]


def quoted_values(places):
    """[(file, value)] of each place's first match; AssertionError for a place that has none."""
    values = []
    for place in places:
        path, pattern = place[0], place[1]
        value_of = place[2] if len(place) > 2 else (lambda match: match.group(1))
        with open(os.path.join(REPO, path)) as f:
            match = re.search(pattern, f.read())
        assert match, f"{path} no longer says {getattr(pattern, 'pattern', pattern)!r}"
        values.append((path, value_of(match)))
    return values


@pytest.mark.parametrize("what, places", AGREEING_NUMBERS, ids=[w for w, _ in AGREEING_NUMBERS])
def test_a_number_quoted_on_several_pages_agrees(what, places):
    values = quoted_values(places)
    assert len({value for _, value in values}) == 1, f"{what} differs: {values}"


def test_the_agreement_check_catches_a_disagreement(tmp_path, monkeypatch):
    (tmp_path / "a.md").write_text("took 72 min of wall time")
    (tmp_path / "b.md").write_text("took 75 min of wall time")
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    values = quoted_values([("a.md", r"took (\d+) min"), ("b.md", r"took (\d+) min")])
    assert values == [("a.md", "72"), ("b.md", "75")]
    with pytest.raises(AssertionError, match="a.md no longer says"):
        quoted_values([("a.md", r"took (\d+) hours")])


# -- the console scripts and the files a run writes are documented -------------------------

def console_scripts():
    """{command: module} of setup.py's console_scripts."""
    with open(os.path.join(REPO, "setup.py")) as f:
        return dict(re.findall(r'"([\w-]+)=(agetf[\w.]*):\w+"', f.read()))


def test_every_console_script_is_documented_in_the_readme():
    scripts = console_scripts()
    assert len(scripts) >= 4, scripts
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    for command, module in scripts.items():
        assert f"`{command}`" in readme, f"README.md does not name the console script {command}"
        assert module in readme, f"README.md does not say {command} runs {module}"


RUN_FILES_PAGE, RUN_FILES_HEADING = "docs/training.md", "## What a run leaves in `--model_dir`"
MODEL_DIR_JOIN = re.compile(r'os\.path\.join\([\w.]*model_dir,\s*((?:"[^"]+",\s*)*"[^"]+")\)')


def run_file_names():
    """Every name the package joins to a model_dir, each evaluation report's name, the run
    lock and the TFLite files."""
    from agetf import config
    from agetf.common import run_lock

    names = {run_lock.LOCK_FILE}
    for path in glob.glob(os.path.join(REPO, "agetf", "**", "*.py"), recursive=True):
        with open(path) as f:
            source = f.read()
        for parts in MODEL_DIR_JOIN.findall(source):
            names.add("/".join(re.findall(r'"([^"]+)"', parts)))
        for variants in re.findall(r"^VARIANTS = \(([^)]*)\)", source, re.M):
            names.update(f"model_{v}.tflite" for v in re.findall(r'"(\w+)"', variants))
    names.update(config.EvalConfig(split=split, protocol=protocol).report_name
                 for split in config.EVAL_SPLITS for protocol in config.EVAL_PROTOCOLS)
    return names


def test_every_file_a_run_writes_is_in_the_one_list():
    with open(os.path.join(REPO, RUN_FILES_PAGE)) as f:
        section = f.read().split(RUN_FILES_HEADING, 1)[1].split("\n## ", 1)[0]
    names = run_file_names()
    assert {"lr_find.json", "tflite", "model_dynamic_int8.tflite", "evaluation_validation.json",
            "evaluation_ages_21_60.json", "run.lock", "plots/training.png"} <= names
    undocumented = sorted(name for name in names
                          if not re.search(rf"(?<![\w/.]){re.escape(name)}(?![\w.])", section))
    assert not undocumented, f"{RUN_FILES_PAGE} ({RUN_FILES_HEADING}) lacks {undocumented}"
