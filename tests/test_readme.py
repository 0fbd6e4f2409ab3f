"""Both READMEs, followed to the letter as a newcomer would: every shell block runs as written, in order, in one
shell session, from the template's bake to the baked project's dev server, requests, guide, tests and updates.
A README cannot drift from the code: a command that fails, a request answered 4xx, or a shell block the walk does
not run fails this test.

How a README tells the walk what a block is, in HTML comments (invisible on GitHub) on the lines before its fence:

- a ```sh or ```console block with no mark is run by bash (`set -euo pipefail`), in the folder and with the
  variables (`TOKEN=$(...)`) and the activated venv the blocks before it left. curl is made to fail on a 4xx/5xx
  answer (a `.curlrc` with `fail-with-body`), so a request the README gets wrong fails the walk.
- `<!-- readme: server URL -->`: a command that serves until stopped (the dev server): started in the background,
  awaited until URL answers 200, stopped with Ctrl-C's signal at the end.
- `<!-- readme: types "TEXT" -->`: what a person types at each prompt the block asks (`""` is Enter, each default).
- `<!-- readme: alternative -->`: another way to do what the block before does: run in an empty folder of its
  own, to show it works; the walk goes on from the block before.
- `<!-- readme: docker -->`, `<!-- readme: kubernetes -->`: needs Docker or a cluster, which CI has not: not run,
  but every compose service, Makefile target, module, file, folder and Job it names must exist.
- `<!-- readme: ci -->`: the command CI runs (`.ci/run` holds each of its lines word for word), not run here,
  where it would run this suite inside itself.
- `<!-- readme: tested-by tests/test_X.py -->`: run by that test instead (it must exist); the scripts the block
  runs must exist and take the options it gives them.
- `<!-- guide-file: PATH -->` / `<!-- guide-edit: PATH -->` (the guide to adding a resource): the block is written
  to PATH in the project, or applied to it as a diff: hunks separated by `@@` lines, each a run of lines (` ` kept,
  `-` removed, `+` added) that must occur exactly once in the file.

Every fence carries a language (```text for a listing), so that a command cannot hide in an unlabelled block.
"""

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import TEMPLATE
from test_baked_suite import passed

SHELLS = {"sh", "console"}
MARKS = {"server", "types", "alternative", "docker", "kubernetes", "ci", "tested-by"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
COMMENT = re.compile(r"^[ \t]*<!-- (?P<kind>readme|guide-file|guide-edit): ?(?P<arg>.*?) -->[ \t]*$")
ROUTE = re.compile(r"""app\.(GET|POST|PUT|PATCH|DELETE)\(\s*["']([^"']+)["']""")
UNRUN = {"docker", "kubernetes", "ci", "tested-by"}  # marks of blocks checked, not run
# curl reads it from CURL_HOME: an answer of 400 or more fails the command, its body still shown.
CURLRC = "fail-with-body\nshow-error\n"


@dataclass
class Block:
    """A fenced block of a README: its language, text (out-dented as its list item indents it) and marks."""

    readme: str
    line: int
    lang: str
    text: str
    marks: dict[str, str] = field(default_factory=dict)
    guide: tuple[str, str] | None = None  # ("file" | "edit", path)

    @property
    def where(self) -> str:
        return f"{self.readme}:{self.line}"


def blocks(readme: str, name: str) -> list[Block]:
    """Every fenced block of the README, in order, with the marks in the comment lines just above it."""
    found = []
    lines = readme.splitlines()
    for match in FENCE.finditer(readme):
        line = readme.count("\n", 0, match.start()) + 1
        indent = match["indent"]
        text = "\n".join(row.removeprefix(indent) for row in match["body"].splitlines()) + "\n"
        block = Block(name, line, match["lang"], text)
        above = line - 2  # the index of the line before the fence
        while above >= 0 and (comment := COMMENT.match(lines[above])):
            if comment["kind"] == "readme":
                mark, _, arg = comment["arg"].partition(" ")
                block.marks[mark] = arg
            else:
                block.guide = (comment["kind"].removeprefix("guide-"), comment["arg"])
            above -= 1
        found.append(block)
    return found


def check_marks(readme_blocks: list[Block]) -> None:
    for block in readme_blocks:
        assert block.lang, f"{block.where}: a fence without a language (```text for a listing)"
        unknown = set(block.marks) - MARKS
        assert not unknown, f"{block.where}: unknown marks {unknown}; the marks are {sorted(MARKS)}"
        assert not block.marks or block.lang in SHELLS, f"{block.where}: a readme mark on a ```{block.lang} block"


def apply_edit(text: str, diff: str, where: str) -> str:
    for number, hunk in enumerate(re.split(r"^@@.*\n", diff, flags=re.MULTILINE), 1):
        lines = [line for line in hunk.splitlines() if line]  # a blank line in a hunk is markdown's, not the file's
        before = "".join(line[1:] + "\n" for line in lines if line[0] in " -")
        after = "".join(line[1:] + "\n" for line in lines if line[0] in " +")
        assert all(line[0] in " -+" for line in lines), f"{where}, hunk {number}: not a diff line"
        assert text.count(before) == 1, f"{where}, hunk {number}: these lines are not in the file once:\n{before}"
        text = text.replace(before, after)
    return text


def openapi_path(route: str) -> str:
    return re.sub(r":(\w+)(?::\w+)?", r"{\1}", route)


def commands(text: str) -> list[list[str]]:
    """The block's commands, each split into words as bash would: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        for part in re.split(r"\s(?:&&|;|\|)\s", line):
            words = shlex.split(part, comments=True)
            for i in reversed(range(len(words) - 1)):
                if words[i] in ("<", ">", ">>", "2>"):  # a redirection is not the command's
                    del words[i : i + 2]
            if words:
                found.append(words)
    return found


class Session:
    """One bash session across blocks: each block runs in the folder, with the variables and PATH, the one
    before it left behind, as if typed into one terminal."""

    def __init__(self, state: Path, cwd: Path, environ: dict[str, str]) -> None:
        self.state, self.environ = state, environ
        state.mkdir()
        (state / "cwd").write_text(str(cwd))
        (state / "vars").write_text("")
        self.servers: list[tuple[Block, subprocess.Popen, Path]] = []

    def script(self, text: str, keep: bool = True) -> str:
        state = shlex.quote(str(self.state))
        prologue = f'set -euo pipefail\ncompgen -v > {state}/names\ncd "$(cat {state}/cwd)"\n. {state}/vars\n'
        # What the block set (its own variables, an activated venv's PATH) goes on to the next block.
        epilogue = (
            f"\npwd > {state}/cwd\n"
            f"for readme_var in $(compgen -v); do\n"
            f'  case "$readme_var" in readme_var) ;; PATH|VIRTUAL_ENV) declare -p "$readme_var" ;;\n'
            f'  *) grep -qx "$readme_var" {state}/names || declare -p "$readme_var" ;; esac\n'
            f"done > {state}/vars.new\nmv {state}/vars.new {state}/vars\n"
        )
        return prologue + text + (epilogue if keep else "")

    def stdin(self, block: Block) -> str | None:
        if "types" not in block.marks:
            return None
        typed = shlex.split(block.marks["types"])
        assert len(typed) == 1, f"{block.where}: types takes one quoted text"
        return (typed[0] + "\n") * 100  # the same at every prompt

    def run(self, block: Block, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        script = self.script(block.text, keep=cwd is None)
        if cwd is not None:  # an alternative: its own empty folder, nothing kept
            script = script.replace(f'cd "$(cat {shlex.quote(str(self.state))}/cwd)"', f"cd {shlex.quote(str(cwd))}")
        done = subprocess.run(
            ["bash", "-c", script],
            env=self.environ,
            input=self.stdin(block) or "",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, (
            f"{block.where} failed ({done.returncode}):\n{block.text}\n--- stdout\n{done.stdout[-4000:]}"
            f"\n--- stderr\n{done.stderr[-4000:]}"
        )
        return done

    def serve(self, block: Block, timeout: float = 120) -> None:
        url = block.marks["server"]
        with contextlib.suppress(httpx.TransportError):
            httpx.get(url, timeout=1)
            raise AssertionError(f"{block.where}: something already answers at {url}; the walk needs its port")
        log = self.state / f"server-{block.line}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                ["bash", "-c", self.script(block.text, keep=False)],
                env=self.environ,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, which Ctrl-C's signal reaches whole
            )
        self.servers.append((block, process, log))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert process.poll() is None, f"{block.where} ended ({process.returncode}):\n{log.read_text()[-4000:]}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{block.where}: no 200 from {url} within {timeout} s:\n{log.read_text()[-4000:]}")

    def stop(self, check: bool = True) -> None:
        """Ctrl-C for every server started, as a person ends dev; each must end within 20 s."""
        for block, process, log in self.servers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
                assert not check, f"{block.where} did not stop on Ctrl-C:\n{log.read_text()[-4000:]}"
            stopped = process.returncode in (0, -signal.SIGINT, 130)  # uvicorn's clean end, or the shell's for it
            assert not check or stopped, f"{block.where} ended {process.returncode}:\n{log.read_text()[-4000:]}"


def check_unrun(block: Block, project: Path | None) -> None:
    """A block the walk does not run: what it names must exist."""
    if "ci" in block.marks:
        ci = (TEMPLATE / ".ci" / "run").read_text().splitlines()
        for line in block.text.splitlines():
            command = line.split("  #")[0].strip()
            assert command in ci, f"{block.where}: `{command}` is not a line of .ci/run, which CI runs"
        return
    if "tested-by" in block.marks:
        assert (TEMPLATE / block.marks["tested-by"]).is_file(), f"{block.where}: no {block.marks['tested-by']}"
        for words in commands(block.text):
            assert words[0] == "python" and (TEMPLATE / words[1]).is_file(), f"{block.where}: {words}"
            options = [word for word in words[2:] if word.startswith("-")]
            script = str(TEMPLATE / words[1])
            helped = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=60)
            for option in options:
                assert option in helped.stdout, f"{block.where}: {words[1]} takes no {option}"
        return
    assert project is not None, f"{block.where}: a docker or kubernetes block needs the bake"
    check_names(block, project)


def check_names(block: Block, project: Path) -> None:
    """Docker and Kubernetes blocks: every service, target, module, file and Job they name is the project's."""
    compose = yaml.safe_load((project / "docker-compose.yml").read_text())
    services = set(compose["services"])
    profiles = {p for service in compose["services"].values() for p in service.get("profiles", [])}
    targets = set(re.findall(r"^([a-z]+):", (project / "Makefile").read_text(), re.M))
    jobs = {
        document["metadata"]["name"]
        for manifest in (project / "deploy").rglob("*.yaml")
        for document in yaml.safe_load_all(manifest.read_text())
        if isinstance(document, dict) and document.get("kind") == "Job"
    }
    package = project / "src"
    for words in commands(block.text):
        where = f"{block.where}: `{' '.join(words)}`"
        while re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # `NAME=value command`: the command's environment
            words = words[1:]
        program, args = words[0], words[1:]
        flags_with_values = {"-f", "--file", "--profile", "-t", "-e", "--for", "--timeout", "-k", "-p"}
        plain = [w for i, w in enumerate(args) if not w.startswith("-") and args[i - 1] not in flags_with_values]
        if program == "docker" and args[:1] == ["compose"]:
            for i, word in enumerate(args):
                if args[i - 1] == "--profile":
                    assert word in profiles, f"{where}: no compose profile {word}"
            verb, *rest = plain[1:]
            if verb in ("up", "run", "start", "stop", "logs"):
                named = rest[:1] if verb == "run" else rest
                assert set(named) <= services, f"{where}: compose has no service {set(named) - services}"
                if verb == "run":  # the command run in the service's container
                    inside = args[args.index(rest[0]) + 1 :]
                    check_names(Block(block.readme, block.line, "sh", shlex.join(inside) + "\n"), project)
        elif program == "docker":
            assert plain[0] in ("build", "push"), where
            if plain[0] == "build":
                assert (project / "Dockerfile").is_file() and plain[-1] == ".", where
        elif program == "make":
            assert set(plain) <= targets, f"{where}: the Makefile has no target {set(plain) - targets}"
        elif program in ("python", "uvicorn"):
            module = args[1] if program == "python" else args[0].split(":")[0]
            assert program == "uvicorn" or args[0] == "-m", where
            modules = [module] + [args[i + 1].split(":")[0] for i, word in enumerate(args[:-1]) if word == "--http"]
            for module in modules:
                parts = module.split(".")
                # The project's own modules, or the library's it carries in vendor/.
                roots = (package, project / "vendor" / "heaven-plugins" / "src")
                found = any(root.joinpath(*parts).with_suffix(".py").is_file() for root in roots)
                assert found, f"{where}: no module {module}"
        elif program == "cp":
            assert (project / plain[0]).is_file() and (project / plain[1]).parent.is_dir(), where
        elif program == "kubectl":
            if "-k" in args:
                assert (project / args[args.index("-k") + 1] / "kustomization.yaml").is_file(), where
            for word in args:
                name = word.removeprefix("job/")
                if word.startswith("job/") or (args[:2] == ["delete", "job"] and word == plain[2]):
                    assert name in jobs, f"{where}: no Job named {name} (there are {jobs})"
        else:
            raise AssertionError(f"{where}: the walk does not know how to check {program}")


def template_clone(folder: Path, environ: dict[str, str]) -> Path:
    """What a newcomer clones: this repository as it is in this working copy, committed to a git repository.
    Its files as git sees them (tracked, or new and not ignored): never what other tests are making beside them
    (the bench's Postgres and its sockets, virtualenvs)."""
    listed = subprocess.run(
        ["git", "-C", str(TEMPLATE), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        env=environ,
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source, target = TEMPLATE / name, folder / name
        if source.is_symlink():  # as a clone has them: the bake's vendor/heaven-plugins points at heaven-plugins/
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.readlink(source))
        elif source.is_file() and "results" not in source.relative_to(TEMPLATE).parts:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "heaven-pg"]):
        subprocess.run(["git", "-C", str(folder), *args], env=environ, check=True, capture_output=True, timeout=60)
    return folder


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder with a short path, as a person's home is: Postgres's Unix socket path must fit in 107 bytes,
    and dev's Postgres puts its socket in its data folder, in the project, or else under TMPDIR."""
    folder = Path(tempfile.mkdtemp(prefix="readme-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_both_readmes_run_as_written(short_tmp, new_database, figures):
    template_blocks = blocks((TEMPLATE / "README.md").read_text(), "README.md")
    check_marks(template_blocks)
    home = short_tmp / "home"
    (home / "curl").mkdir(parents=True)
    (home / "curl" / ".curlrc").write_text(CURLRC)
    where = short_tmp / "newcomer"
    where.mkdir()
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "TEST_DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS"}
        and not k.startswith(("GIT_", "COOKIECUTTER", "PIP_"))
    }
    environ.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), environ["PATH"]]),  # this suite's Python first
        CURL_HOME=str(home / "curl"),
        COOKIECUTTER_CONFIG=str(home / "cookiecutter.yaml"),
        TMPDIR=str(short_tmp),  # cookiecutter leaves a copy of each hook there
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Ada",
        GIT_AUTHOR_EMAIL="ada@example.com",
        GIT_COMMITTER_NAME="Ada",
        GIT_COMMITTER_EMAIL="ada@example.com",
        # The baked suite's run: the suite's Postgres rather than one more of its own, and each test's outcome.
        TEST_DATABASE_URL=new_database(),
        PYTEST_ADDOPTS="-rA -p no:cacheprovider",
        PYTEST_DEBUG_TEMPROOT=str(short_tmp),  # as Baked.env() does, and why
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    # The README's placeholders made real: its clone of this repository at path/to/heaven-pg, and GitHub's
    # gh:org/heaven-pg served from it by a cookiecutter abbreviation, offline.
    clone = template_clone(where / "path" / "to" / "heaven-pg", environ)
    (home / "github" / "org").mkdir(parents=True)
    (home / "github" / "org" / "heaven-pg").symlink_to(clone)
    (home / "cookiecutter.yaml").write_text(
        yaml.safe_dump(
            {
                "cookiecutters_dir": str(home / "cookiecutters"),
                "replay_dir": str(home / "replay"),
                "abbreviations": {"gh": str(home / "github") + "/{0}"},
            }
        )
    )
    session = Session(short_tmp / "session", where, environ)
    started = time.monotonic()
    seconds: dict[str, float] = {}  # each block's, by where it is
    outputs: list[tuple[Block, str]] = []
    routes: list[tuple[str, str]] = []

    def walk(readme_blocks: list[Block], project: Path | None) -> None:
        last_guide = max((i for i, block in enumerate(readme_blocks) if block.guide), default=None)
        previous = None
        for index, block in enumerate(readme_blocks):
            begun = time.monotonic()
            if block.guide:
                apply_guide(block, project, routes)
            elif block.lang not in SHELLS:
                continue
            elif UNRUN & set(block.marks):
                check_unrun(block, project)
            elif "server" in block.marks:
                session.serve(block)
            elif "alternative" in block.marks:
                assert previous is not None, f"{block.where}: an alternative to no block"
                elsewhere = short_tmp / f"alternative-{block.line}"
                elsewhere.mkdir()
                session.run(block, cwd=elsewhere)
            else:
                outputs.append((block, session.run(block).stdout))
                if "/users/me" in block.text and "first" not in seconds:
                    seconds["first"] = time.monotonic() - started
            seconds[block.where] = time.monotonic() - begun
            if block.lang in SHELLS:
                previous = block
            if index == last_guide:
                # The running dev server reloads with the new module and applies the new migration by itself.
                (server,) = [s.marks["server"] for s in readme_blocks if "server" in s.marks]
                await_routes(re.match(r"https?://[^/]+", server)[0], routes)

    try:
        walk(template_blocks, None)
        project = Path((session.state / "cwd").read_text().rstrip("\n"))
        assert (project / ".cruft.json").is_file(), f"the template README's blocks end in {project}, not a bake"
        baked = blocks((project / "README.md").read_text(), "the baked README.md")
        check_marks(baked)
        check_guide(baked)
        walk(baked, project)
    except BaseException:
        session.stop(check=False)  # the first failure is the one to read
        raise
    session.stop()

    # What the bake prints next is the READMEs' first steps, word for word.
    message = outputs[0][1].partition("Next")[2]
    steps = [line.strip() for line in message.splitlines() if line.startswith("  ")]
    typed = {
        line.split("  #")[0].strip()
        for block in template_blocks + baked
        if block.lang in SHELLS and not UNRUN & set(block.marks)
        for line in block.text.splitlines()
    }
    assert steps and not set(steps) - typed, f"the bake prints steps no README block gives: {set(steps) - typed}"

    # The baked suite ran once, the guide's resource in it, and passed; the guide's test file among them.
    (pytest_output,) = [out for block, out in outputs if re.search(r"^pytest\b", block.text, re.M)]
    assert passed(subprocess.CompletedProcess([], 0, pytest_output, "")) >= 50
    test_file = next(path for kind, path in (b.guide for b in baked if b.guide) if path.startswith("tests/"))
    assert re.search(rf"^PASSED {re.escape(test_file)}::", pytest_output, re.M), pytest_output[-3000:]
    assert "first" in seconds, "no block of the baked README asked for /users/me"
    for block in template_blocks + baked:
        if block.where in seconds:
            print(f"{seconds[block.where]:6.1f} s  {block.where}: {block.text.splitlines()[0][:80]}")
    (install,) = [seconds[b.where] for b in baked if not b.marks and re.search(r"^make install", b.text, re.M)]
    (tests,) = [seconds[b.where] for b in baked if not b.marks and re.search(r"^pytest\b", b.text, re.M)]
    figures(
        f"README walk: cookiecutter to the first signed-in 200 in {seconds['first']:.1f} s by the READMEs' blocks "
        f"(make install into a fresh venv {install:.1f} s of it); the whole walk {time.monotonic() - started:.1f} s, "
        f"the baked suite and ruff {tests:.1f} s of it"
    )


def apply_guide(block: Block, project: Path | None, routes: list[tuple[str, str]]) -> None:
    assert project is not None, f"{block.where}: a guide block in the template's README"
    kind, path = block.guide
    target = project / path
    if kind == "file":
        assert not target.exists(), f"{block.where}: the guide's {path} would overwrite a file of the bake"
        target.write_text(block.text)
        routes.extend(ROUTE.findall(block.text))
    else:
        target.write_text(apply_edit(target.read_text(), block.text, path))


def await_routes(base: str, routes: list[tuple[str, str]], timeout: float = 60) -> None:
    """The guide's routes are served and documented: each in /docs/openapi.json with more than 500/503, and on
    /docs, once the dev server has reloaded."""
    assert routes, "the guide's module registers no route"
    deadline = time.monotonic() + timeout
    missing: list[str] = ["not asked yet"]
    while missing and time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError, ValueError):
            document = httpx.get(f"{base}/docs/openapi.json", timeout=5).json()
            missing = [
                f"{method} {openapi_path(route)}"
                for method, route in routes
                if method.lower() not in document["paths"].get(openapi_path(route), {})
            ]
        if missing:
            time.sleep(0.2)
    assert not missing, f"dev did not serve the guide's routes within {timeout} s: missing {missing}"
    page = httpx.get(f"{base}/docs", timeout=10).text
    for method, route in routes:
        operation = document["paths"][openapi_path(route)][method.lower()]
        assert set(operation["responses"]) - {"500", "503"}, f"{method} {route} is not @documented"
        assert openapi_path(route) in page


def check_guide(baked: list[Block]) -> None:
    """The guide's promise: four files, the migration, the module, its registration in app.py and a test. Its
    last step, a job, touches only those and worker.py, where the handler is registered."""
    guided = [block.guide for block in baked if block.guide]
    assert len(guided) == len(set(guided)), guided
    paths = {guide for guide in guided if not guide[1].endswith("/worker.py")}
    made = {path for kind, path in paths if kind == "file"}
    (package,) = [path.removesuffix("/app.py") for kind, path in paths if kind == "edit" and path not in made]
    assert re.fullmatch(r"src/\w+", package), paths
    assert len(made) == 3 and {path for _, path in paths} == made | {f"{package}/app.py"}, paths
    assert {path for _, path in guided} - {path for _, path in paths} <= {f"{package}/worker.py"}, guided
    new_files = list(made)
    assert any(re.fullmatch(rf"{package}/migrations/\d{{4}}_\w+\.sql", path) for path in new_files), new_files
    assert any(re.fullmatch(r"tests/test_\w+\.py", path) for path in new_files), new_files
    assert [path for path in new_files if re.fullmatch(rf"{package}/\w+\.py", path)], new_files
