"""Before any timing, every contender must answer the same bytes: each answer fetched (a 200 or the run fails),
hashed, and compared with the baked service's, naming where any differs."""

import hashlib


def fetch_ok(server, path: str) -> bytes:
    status, body = server.get(path)
    if status != 200:
        raise RuntimeError(f"{server.contender.name} answered {status} to GET {path}: {body[:200]!r}")
    return body


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def agree(bodies: dict[str, dict[str, bytes]], reference: str) -> list[dict]:
    """Where a contender's bytes differ from the reference's: path, offset and a few bytes either side."""
    mismatches = []
    reference = reference if reference in bodies else next(iter(bodies))
    for name, answers in bodies.items():
        for path, body in answers.items():
            expected = bodies[reference][path]
            if body != expected:
                at = next(
                    (i for i, (a, b) in enumerate(zip(body, expected, strict=False)) if a != b),
                    min(len(body), len(expected)),
                )
                mismatches.append(
                    {
                        "contender": name,
                        "path": path,
                        "offset": at,
                        "got": body[max(0, at - 20) : at + 20].decode(errors="replace"),
                        "expected": expected[max(0, at - 20) : at + 20].decode(errors="replace"),
                    }
                )
    return mismatches
