"""The baked README's guide to adding a resource, followed to the letter on a fresh bake: the baked suite passes,
ruff is content, and /docs lists the new routes. The guide cannot drift from the code.

The guide marks each block with the file it belongs to, in an HTML comment on the line before the fence:
`<!-- guide-file: PATH -->` for a new file holding the block, `<!-- guide-edit: PATH -->` for a ```diff block
changing a file: hunks separated by `@@` lines, each a run of lines (` ` kept, `-` removed, `+` added) that
must occur exactly once in the file. No line numbers, so changes elsewhere in the file do not break it.
"""

import re
import sys

import httpx
from test_baked_suite import PYTEST, passed

BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)<!-- guide-(?P<kind>file|edit): (?P<path>\S+) -->\n"
    r"(?P=indent)```[\w-]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
ROUTE = re.compile(r"""app\.(GET|POST|PUT|PATCH|DELETE)\(\s*["']([^"']+)["']""")


def guide_blocks(readme: str) -> list[tuple[str, str, str]]:
    """(kind, path, text) of each marked block, in order, its text out-dented as the list item indents it."""
    blocks = []
    for match in BLOCK.finditer(readme):
        indent = match["indent"]
        lines = [line.removeprefix(indent) for line in match["body"].splitlines()]
        blocks.append((match["kind"], match["path"], "\n".join(lines) + "\n"))
    return blocks


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


def test_the_readme_guide_adds_a_resource_that_the_suite_ruff_and_docs_accept(bake, new_database, service):
    project = bake(project_name="Guided")  # its own bake: the guide changes it
    blocks = guide_blocks((project.path / "README.md").read_text())
    package = f"src/{project.package}"
    paths = {(kind, path) for kind, path, _ in blocks}
    # The guide's promise: four files, the migration, the module, its registration in app.py and a test.
    assert len(blocks) == len(paths) == 4, paths
    assert ("edit", f"{package}/app.py") in paths
    new_files = [path for kind, path in paths if kind == "file"]
    assert any(re.fullmatch(rf"{package}/migrations/\d{{4}}_\w+\.sql", path) for path in new_files), new_files
    assert any(re.fullmatch(r"tests/test_\w+\.py", path) for path in new_files), new_files
    (module,) = [path for path in new_files if re.fullmatch(rf"{package}/\w+\.py", path)]

    for kind, path, text in blocks:
        target = project.path / path
        if kind == "file":
            assert not target.exists(), f"the guide's {path} would overwrite a file of the bake"
            target.write_text(text)
        else:
            target.write_text(apply_edit(target.read_text(), text, path))

    for ruff in (["check", "."], ["format", "--check", "."]):
        linted = project.run(sys.executable, "-m", "ruff", *ruff)
        assert linted.returncode == 0, linted.stdout + linted.stderr

    # The whole baked suite with the new table in it: its foreign key to users must not trouble the other tests.
    result = project.run(sys.executable, *PYTEST, "-rA", TEST_DATABASE_URL=new_database(), timeout=300)
    assert passed(result) >= 50
    test_file = next(path for kind, path in paths if path.startswith("tests/"))
    assert re.search(rf"^PASSED {re.escape(test_file)}::", result.stdout, re.MULTILINE), result.stdout[-3000:]

    # The new routes are served and documented: each in /docs/openapi.json with more than 500/503, and on /docs.
    url = new_database()
    migrated = project.run(sys.executable, "-m", f"{project.package}.migrate", DATABASE_URL=url)
    assert migrated.returncode == 0, migrated.stderr
    routes = ROUTE.findall((project.path / module).read_text())
    assert routes, f"{module} registers no route"
    svc = service(project, url)
    document = httpx.get(f"{svc.url}/docs/openapi.json", timeout=10).json()
    page = httpx.get(f"{svc.url}/docs", timeout=10).text
    for method, route in routes:
        path = openapi_path(route)
        operation = document["paths"].get(path, {}).get(method.lower())
        assert operation, f"{method} {path} is not in /docs/openapi.json"
        assert set(operation["responses"]) - {"500", "503"}, f"{method} {path} is not @documented"
        assert path in page
