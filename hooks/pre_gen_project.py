"""Refuse answers that would bake a project that cannot be imported or run."""

import json
import keyword
import re
import sys

# Answers arrive as JSON data, never spliced into code, so a quote or a
# backslash in them cannot change what this hook does.
ANSWERS = json.loads(
    r"""
{{ {
    "project_slug": cookiecutter.project_slug,
    "package_name": cookiecutter.package_name,
    "context_name": cookiecutter.context_name,
} | tojson }}
""".strip()
)

# Names the package must not take: what it imports, and what its tests import.
DEPENDENCIES = {
    "asyncpg",
    "conftest",
    "heaven",
    "heaven_plugins",
    "httpx",
    "msgspec",
    "pgserver",
    "pytest",
    "pytest_asyncio",
    "ruff",
    "test",
    "tests",
    "uvicorn",
    "uvloop",
}

# Keys Heaven's Context refuses to be given (heaven/context.py).
RESERVED_CONTEXT_KEYS = {"app", "cookies", "headers", "request", "response", "session"}
# Keys sign-in (heaven_plugins.signin) puts on each request's context: the database under one of them
# would be replaced by the signed-in user or the plugin.
PLUGIN_CONTEXT_KEYS = {"auth", "user"}
# The distribution the project carries in vendor/ (and depends on): a project of the same name would be it.
LIBRARY = "heaven-plugins"


def problem_with(answers: dict) -> str | None:
    slug = answers["project_slug"]
    package = answers["package_name"]
    context = answers["context_name"]
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug):
        return f"project_slug {slug!r} must be lowercase letters and digits, words joined by single dashes"
    if slug == LIBRARY:
        return f"project_slug {slug!r} is the name of the library the project is built on; pick another"
    if not (package.isascii() and package.isidentifier()) or keyword.iskeyword(package):
        return f"package_name {package!r} is not a valid Python identifier"
    if package != package.lower():
        return f"package_name {package!r} must be lowercase"
    if package in sys.stdlib_module_names or package in DEPENDENCIES:
        return f"package_name {package!r} would shadow the module of that name; pick another"
    if not (context.isascii() and context.isidentifier()) or keyword.iskeyword(context):
        return f"context_name {context!r} is not a valid Python identifier"
    if context.startswith("_") or context in RESERVED_CONTEXT_KEYS:
        return f"context_name {context!r} is reserved by Heaven's context; pick another"
    if context in PLUGIN_CONTEXT_KEYS:
        return f"context_name {context!r} is taken by sign-in on each request's context; pick another"
    return None


if __name__ == "__main__":
    problem = problem_with(ANSWERS)
    if problem:
        print(f"ERROR: {problem}", file=sys.stderr)
        sys.exit(1)
