"""A contender as one uvicorn worker pinned to one core: started, awaited, stopped."""

import http.client
import signal
import subprocess
import sys
import time
from pathlib import Path

from contenders import Contender

UVICORN_FLAGS = ["--loop", "uvloop", "--no-access-log", "--log-level", "warning"]


class Server:
    def __init__(self, contender: Contender, port: int, core: int, env: dict, workdir: Path) -> None:
        self.contender, self.port = contender, port
        # The baked service's token, sent to every contender alike (the others ignore it).
        authorization = env.get("BENCH_AUTHORIZATION")
        self.headers = {"Authorization": authorization} if authorization else {}
        command = [
            "taskset",
            "-c",
            str(core),
            sys.executable,
            "-m",
            "uvicorn",
            contender.app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *UVICORN_FLAGS,
            "--http",
            contender.http,
        ]
        if contender.app_dir:
            command += ["--app-dir", str(contender.app_dir)]
        self.log = (workdir / f"{contender.name}.log").open("ab")
        # Run from an empty folder: the baked service would otherwise read a stray .env.
        self.started = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        # `taskset` execs uvicorn, and without --workers uvicorn serves in that one process,
        # so this pid is the worker whose CPU time we read.
        self.pid = self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=self.headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def wait_ready(self, path: str, timeout: float = 30.0) -> float:
        """Seconds from process start to the first 200 on `path`."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.contender.name} exited with {self.process.returncode}; see {self.log.name}")
            try:
                if self.get(path, timeout=1.0)[0] == 200:
                    return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.005)
        raise TimeoutError(f"{self.contender.name} did not answer 200 on {path} within {timeout} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
