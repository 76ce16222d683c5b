"""Bring NDIF's own server stack (ndif 0.1.2) up and down on this machine, on CPU.

Used by the pytest session fixture (``fixture.py``) and by hand::

    python tests/ndif_stack/stack.py up [--models toy/qwen3,toy/qwen3-moe,small/smollm2-135m-instruct]
    python tests/ndif_stack/stack.py status
    python tests/ndif_stack/stack.py down

What runs, each in its own process group, logging to ``<stack dir>/logs/``: PostgreSQL
(the four auth tables and one test key), Redis, moto's S3 server (standing in for
RustFS), a Ray head with one logical GPU, ndif's controller, and ``ndif start api``
(gunicorn plus the queue dispatcher). Models are deployed with ``ndif deploy -f``
using the CPU actor in ``cpu_actor.py``.

Every server process runs with the ``.ndif-venv`` python, from a working directory
outside the repository, with no ``PYTHONPATH``: ``remote_steer`` cannot be imported
there, exactly as on a real NDIF. ``up`` checks that before it starts anything.

Everything binds to 127.0.0.1 on ports free at start, so two stacks (a developer's and
CI's) can run side by side. ``down`` ends only the processes this stack started (their
process groups and descendants, matched by pid and start time): never ``ray stop``,
never a kill by process name.

The server venv is ``.ndif-venv`` at the repository root (``$NDIF_STACK_VENV`` overrides it).
This module runs in the *client's* python (the project venv): it builds the embedded
models with remote_steer's own builders and lays them out as a Hugging Face cache the
server reads offline.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("NDIF_STACK_VENV", REPO / ".ndif-venv"))
SERVER_PYTHON = VENV / "bin" / "python"
CURRENT = VENV / "stack-current.json"  # the stack brought up by hand (`up` without --dir)
ACTOR_MODULE = "ndif_cpu_actor"
ACTOR_CLASS = f"{ACTOR_MODULE}.CPUModelActor"
DEFAULT_MODELS = ("toy/qwen3", "toy/qwen3-moe", "small/smollm2-135m-instruct")
# Start order; `down` goes the other way.
SERVICES = ("postgres", "redis", "s3", "ray", "controller", "api")
# Ray's logical resources: one GPU (ndif's controller manages only nodes that report one)
# with 16 GiB of logical memory to place models in. Nothing here touches a real GPU.
LOGICAL_GPU_BYTES = 16 * 1024**3
# logical: the controller and one per model actor, each num_cpus=1 (the three defaults and
# the eight architecture toys test_ndif_arch_real.py deploys beside them)
RAY_CPUS = 16
RAY_WORKER_PORTS = 48


class StackError(RuntimeError):
    """The stack could not be brought up; the message carries the services' log tails."""


def installed() -> str | None:
    """None when the stack can run here, else one line saying what is missing."""
    if not SERVER_PYTHON.exists() or not any(VENV.glob(".installed-*")):
        return f"the NDIF server venv {VENV} is not installed (run `bash tests/ndif_stack/install.sh`)"
    if _redis_server() is None:
        return "redis-server is not installed (run `bash tests/ndif_stack/install.sh`)"
    if _pg_bin() is None:
        return "PostgreSQL (initdb, postgres) is not installed (run `bash tests/ndif_stack/install.sh`)"
    return None


# ------------------------------------------------------------------ state


@dataclass
class Proc:
    pid: int
    start: int  # /proc start time (clock ticks since boot): guards against pid reuse

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, _start_time(pid) or 0)

    def alive(self) -> bool:
        """Running (not a zombie) and the same process, not a later one given its pid."""
        return self.start != 0 and _start_time(self.pid) == self.start


@dataclass
class Stack:
    root: str
    host: str = ""
    api_key: str = field(default="", repr=False)  # the one key in the auth database
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # remote_steer model name -> model key
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return Path(self.root)

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def save(self) -> None:
        path = self.dir / "stack.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the test key
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=2)
        os.replace(tmp, path)

    @classmethod
    def load(cls, root: Path) -> Stack:
        data = json.loads((root / "stack.json").read_text())
        data["procs"] = {name: Proc(**p) for name, p in data.get("procs", {}).items()}
        return cls(**data)

    def client_env(self) -> dict[str, str]:
        """What a client needs: the host and the test key."""
        return {"NDIF_HOST": self.host, "NDIF_API_KEY": self.api_key}


# ------------------------------------------------------------------ processes


def _start_time(pid: int) -> int | None:
    """The process's start time, or None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _cwd_under(pid: int, root: Path) -> bool:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(root)
    except OSError:
        return False


def stack_processes(stack: Stack) -> list[Proc]:
    """The processes this stack started: its service processes, all their descendants,
    and any process whose working directory is inside the stack's own (fresh) directory
    (a Ray worker left behind when its raylet died)."""
    children = _children_map()
    found: dict[int, Proc] = {}
    todo = [p.pid for p in stack.procs.values() if p.alive()]
    while todo:
        pid = todo.pop()
        if pid in found or pid == os.getpid():  # the watchdog ending the stack spares itself
            continue
        proc = Proc.of(pid)
        if proc.start:
            found[pid] = proc
            todo.extend(children.get(pid, []))
    root = stack.dir.resolve()
    for pid in [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]:
        if pid not in found and pid != os.getpid() and _cwd_under(pid, root):
            proc = Proc.of(pid)
            if proc.start:
                found[pid] = proc
    return list(found.values())


def _memory_kib(procs: Iterable[Proc]) -> tuple[int, int]:
    """(RSS, PSS) summed over the processes, in KiB."""
    rss = pss = 0
    for proc in procs:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{proc.pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


def _signal(proc: Proc, sig: int, group: bool = False) -> None:
    if not proc.alive():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group and os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def log_tails(stack: Stack, lines: int = 25) -> str:
    parts = []
    for log in sorted(stack.logs.glob("*.log")):
        parts.append(f"----- {log} (last {lines} lines) -----\n{_tail(log, lines)}")
    return "\n".join(parts)


# ------------------------------------------------------------------ ports and waiting


def free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _http(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def _wait(stack: Stack, what: str, ready: Callable[[], bool], timeout_s: float, watch: Iterable[str] = ()) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        for name in watch:
            proc = stack.procs.get(name)
            if proc is not None and not proc.alive():
                raise StackError(f"{name} exited while waiting for {what}\n{log_tails(stack)}")
        time.sleep(0.5)
    raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{log_tails(stack)}")


# ------------------------------------------------------------------ environment


def _redis_server() -> str | None:
    for candidate in (shutil.which("redis-server"), VENV / "bin" / "redis-server"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


def _pg_bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def server_env(stack: Stack) -> dict[str, str]:
    """The environment of every server process: the .ndif-venv first on PATH, no
    PYTHONPATH or other python/venv variables from the caller, the stack's services."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "SHELL", "TERM")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    p = stack.ports
    env.update(
        PYTHONNOUSERSITE="1",
        PYTHONUNBUFFERED="1",
        TMPDIR=str(stack.dir / "tmp"),
        HF_HOME=str(stack.dir / "hf"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",  # 2 cores shared by several actors: no oversubscription
        NDIF_HOME=str(stack.dir / "ndif-home"),
        NDIF_ENVIRONMENT="test",
        NDIF_REDIS_URL=f"redis://127.0.0.1:{p['redis']}",
        NDIF_OBJECT_STORE_URL=f"http://127.0.0.1:{p['s3']}",
        NDIF_OBJECT_STORE_ACCESS_KEY="testing",
        NDIF_OBJECT_STORE_SECRET_KEY="testing",
        NDIF_RAY_ADDRESS=f"ray://127.0.0.1:{p['ray_client']}",
        NDIF_RAY_HEAD_PORT=str(p["ray_gcs"]),
        NDIF_API_PORT=str(p["api"]),
        NDIF_API_URL=f"http://127.0.0.1:{p['api']}",
        NDIF_POSTGRES_URL=stack.dir.joinpath("pg", "url").read_text().strip(),
        # Models deployed on demand (a key no deploy named) also get the CPU actor, in float32.
        NDIF_MODEL_IMPORT_PATH=ACTOR_CLASS,
        NDIF_DEFAULT_DTYPE="float32",
        RAY_USAGE_STATS_ENABLED="0",
        # Ray's single-node mode: the node's address is 127.0.0.1 (Ray otherwise swaps a
        # loopback --node-ip-address for the machine's reachable address).
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_enable_worker_prestart="0",
        RAY_prestart_worker_first_driver="0",
        GRPC_ENABLE_FORK_SUPPORT="0",
        # Only the CPU actor's own directory: never the repository.
        PYTHONPATH=str(stack.dir / "actors"),
    )
    return env


def assert_isolated(stack: Stack, env: dict[str, str]) -> None:
    """The server's python, run from the stack's working directory, cannot import remote_steer."""
    probe = subprocess.run(
        [str(SERVER_PYTHON), "-c", "import remote_steer"],
        cwd=stack.dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode == 0 or "No module named 'remote_steer'" not in probe.stderr:
        raise StackError(
            f"the server's python ({SERVER_PYTHON}) can import remote_steer from {stack.dir}: "
            f"the stack would hide payloads that pickle remote_steer by reference (rc {probe.returncode})"
        )


def _spawn(stack: Stack, name: str, argv: list[str], env: dict[str, str], log: str | None = None) -> None:
    path = stack.logs / f"{log or name}.log"
    with open(path, "ab") as handle:
        proc = subprocess.Popen(
            argv,
            cwd=stack.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended as one by `down`
        )
    stack.procs[name] = Proc.of(proc.pid)
    stack.save()


def _run(stack: Stack, name: str, argv: list[str], env: dict[str, str], timeout_s: float) -> None:
    """A short-lived step (initdb, psql, the controller launcher, ndif deploy), logged."""
    path = stack.logs / f"{name}.log"
    with open(path, "ab") as handle:
        handle.write(f"$ {' '.join(argv)}\n".encode())
        handle.flush()
        proc = subprocess.Popen(
            argv, cwd=stack.dir, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT
        )
        stack.procs[name] = Proc.of(proc.pid)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise StackError(f"{name} did not finish within {timeout_s:.0f} s\n{log_tails(stack)}") from None
        finally:
            del stack.procs[name]
    if rc != 0:
        raise StackError(f"{name} failed (exit {rc})\n{log_tails(stack)}")


# ------------------------------------------------------------------ services


_SCHEMA = """
-- The four tables ndif 0.1.2's API-key query reads (ndif/services/api/auth.py, _KEY_QUERY),
-- as in ndif's docker/postgres/init.sql, and the read-only role the API connects as.
CREATE TABLE users (
    user_id UUID PRIMARY KEY,
    email VARCHAR(255) UNIQUE NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE user_tags (
    user_tag_id UUID PRIMARY KEY,
    name VARCHAR(50) UNIQUE NOT NULL,
    description TEXT
);
CREATE TABLE keys (
    key_id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE key_user_tag_assignments (
    key_id UUID NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    user_tag_id UUID NOT NULL REFERENCES user_tags(user_tag_id) ON DELETE RESTRICT,
    PRIMARY KEY (key_id, user_tag_id)
);
CREATE ROLE ndifapi LOGIN PASSWORD '{password}';
GRANT SELECT ON users, user_tags, keys, key_user_tag_assignments TO ndifapi;
INSERT INTO users (user_id, email) VALUES ('{user_id}', 'test@localhost');
INSERT INTO keys (key_id, user_id) VALUES ('{key_id}', '{user_id}');
"""


def _start_postgres(stack: Stack) -> None:
    pg_bin = _pg_bin()
    assert pg_bin is not None
    pg = stack.dir / "pg"
    (pg / "sock").mkdir(parents=True)
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as Debian's postgres user
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise StackError("running as root and there is no 'postgres' user to run PostgreSQL as") from None
        for path in (pg, pg / "sock"):
            os.chown(path, user.pw_uid, user.pw_gid)
        as_postgres = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    # Local set-up over the stack's own unix socket is trusted; the API connects over TCP with a password.
    initdb = f"-D {pg / 'data'} -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-sync"
    _run(stack, "postgres-initdb", [*as_postgres, str(pg_bin / "initdb"), *initdb.split()], env, 120)
    port = stack.ports["postgres"]
    options = f"-h 127.0.0.1 -p {port} -k {pg / 'sock'} -c fsync=off -c synchronous_commit=off"
    options += " -c full_page_writes=off -c max_connections=30 -c shared_buffers=16MB"
    _spawn(stack, "postgres", [*as_postgres, str(pg_bin / "postgres"), "-D", str(pg / "data"), *options.split()], env)
    psql = [str(pg_bin / "psql"), "-h", str(pg / "sock"), "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
    _wait(
        stack,
        "PostgreSQL",
        lambda: subprocess.run([*psql, "-c", "SELECT 1"], env=env, capture_output=True).returncode == 0,
        60,
        ["postgres"],
    )
    password = secrets.token_hex(16)
    key_id = str(uuid.uuid4())
    _run(stack, "postgres-setup", [*psql, "-q", "-c", "CREATE DATABASE ndif"], env, 60)
    schema = _SCHEMA.format(password=password, user_id=uuid.uuid4(), key_id=key_id)
    sql = pg / "schema.sql"
    sql.write_text(schema)
    sql.chmod(0o644)
    _run(stack, "postgres-setup", [*psql, "-q", "-d", "ndif", "-f", str(sql)], env, 60)
    sql.unlink()
    url = pg / "url"
    fd = os.open(url, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"postgresql://ndifapi:{password}@127.0.0.1:{port}/ndif\n")
    stack.api_key = key_id
    stack.save()


def _start_redis(stack: Stack) -> None:
    redis = _redis_server()
    assert redis is not None
    port = stack.ports["redis"]
    (stack.dir / "redis").mkdir()
    options = f"--bind 127.0.0.1 --port {port} --daemonize no --appendonly no --dir {stack.dir / 'redis'}"
    _spawn(stack, "redis", [redis, *options.split(), "--save", ""], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def pong() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    _wait(stack, "Redis", pong, 30, ["redis"])


def _start_s3(stack: Stack, env: dict[str, str]) -> None:
    port = stack.ports["s3"]
    _spawn(stack, "s3", [str(VENV / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env)
    _wait(stack, "the S3 server (moto)", lambda: _http(f"http://127.0.0.1:{port}/")[0] == 200, 60, ["s3"])


def _start_ray(stack: Stack, env: dict[str, str]) -> None:
    p = stack.ports
    resources = {"head": 10, "cuda_memory_bytes": LOGICAL_GPU_BYTES, "cpu_memory_bytes": _total_memory_bytes()}
    worker_ports = ",".join(str(p[f"ray_worker_{i}"]) for i in range(RAY_WORKER_PORTS))
    options = (
        f"--head --block --node-ip-address=127.0.0.1 --port={p['ray_gcs']} --node-manager-port={p['ray_node_manager']}"
        f" --object-manager-port={p['ray_object_manager']} --ray-client-server-port={p['ray_client']}"
        f" --worker-port-list={worker_ports}"
        # the dashboard serves ray.util.state, which the controller's /status reads
        f" --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port={p['ray_dashboard']}"
        f" --dashboard-agent-listen-port={p['ray_agent_http']} --dashboard-agent-grpc-port={p['ray_agent_grpc']}"
        f" --runtime-env-agent-port={p['ray_runtime_env']} --metrics-export-port={p['ray_metrics']}"
        f" --num-cpus={RAY_CPUS} --num-gpus=1 --object-store-memory={512 * 1024**2}"
        f" --temp-dir={stack.dir / 'ray'} --disable-usage-stats"
    )
    _spawn(
        stack,
        "ray",
        [str(VENV / "bin" / "ray"), "start", *options.split(), f"--resources={json.dumps(resources)}"],
        env,
    )
    _wait(
        stack,
        "the Ray head (client server and dashboard)",
        lambda: _tcp_open(p["ray_client"]) and _tcp_open(p["ray_dashboard"]),
        180,
        ["ray"],
    )


def _start_controller(stack: Stack, env: dict[str, str]) -> None:
    # The launcher schedules ndif's detached Controller actor on the head, then exits.
    launcher_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{stack.ports['ray_gcs']}", "NDIF_SERVICE": "ray"}
    _run(
        stack,
        "controller",
        [str(SERVER_PYTHON), "-m", "ndif.services.ray.deployments.controller.controller"],
        launcher_env,
        180,
    )


def _start_api(stack: Stack, env: dict[str, str]) -> None:
    port = stack.ports["api"]
    # ndif's gunicorn config binds 0.0.0.0; GUNICORN_CMD_ARGS takes precedence over it.
    api_env = {**env, "GUNICORN_CMD_ARGS": f"--bind=127.0.0.1:{port}"}
    _spawn(stack, "api", [str(VENV / "bin" / "ndif"), "start", "api", "--foreground"], api_env)

    def connected() -> bool:
        code, body = _http(f"http://127.0.0.1:{port}/connected")
        return code == 200

    _wait(stack, "the NDIF api (/connected)", connected, 180, ["api"])


def _total_memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 8 * 1024**3


# ------------------------------------------------------------------ models


@dataclass(frozen=True)
class ModelFiles:
    name: str  # remote_steer's name (also the repo id the server loads)
    model_key: str  # what the client sends
    directory: Path  # the checkpoint directory remote_steer built
    size_bytes: int


def prepare_models(names: Iterable[str]) -> list[ModelFiles]:
    """Build each model with remote_steer's own builders and compute the model key the
    client sends for it. Runs in the client's python (remote_steer importable)."""
    from nnsight.modeling import huggingface

    from remote_steer.models.loading import canonicalize_remote_id, load_model, remote_id, resolve

    out = []
    # The key is the one the client sends once it names the model by its remote id. Naming
    # it so here must not leak into the session: the client's own naming is under test.
    saved = dict(huggingface._ID_CACHE)
    try:
        for name in names:
            source = resolve(name)  # builds the toy / the embedded real model on first use
            canonicalize_remote_id(source.location, remote_id(source))
            loaded = load_model(source, dtype="float32", weights=False)
            key = loaded.nn.to_model_key()
            directory = Path(source.location)
            size = sum(f.stat().st_size for f in directory.glob("*.safetensors"))
            out.append(ModelFiles(name, key, directory, size))
    finally:
        huggingface._ID_CACHE.clear()
        huggingface._ID_CACHE.update(saved)
    return out


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def lay_out_hf_cache(hub: Path, repo_id: str, checkpoint: Path) -> str:
    """Put a checkpoint directory into a Hugging Face cache as if downloaded from the
    hub: ``models--org--name/{blobs,snapshots/<rev>,refs/main}``. Blobs are hard links
    where the filesystem allows (no copy of the weights). Returns the revision."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    files = sorted(f for f in checkpoint.rglob("*") if f.is_file())
    blobs = {f: _file_sha256(f) for f in files}
    revision = hashlib.sha1("".join(f"{f.relative_to(checkpoint)}={blobs[f]}" for f in files).encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    for f in files:
        blob = repo / "blobs" / blobs[f]
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            try:
                os.link(f, blob)
            except OSError:
                shutil.copyfile(f, blob)
        link = snapshot / f.relative_to(checkpoint)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return revision


def deploy(stack: Stack, models: list[ModelFiles], env: dict[str, str], timeout_s: float = 600) -> None:
    """``ndif deploy -f models.yaml``: explicit model_key (ndif would otherwise ask the
    hub), float32, size_bytes (ndif 0.1.2's describe_checkpoint call does not fit nnsight
    0.8.1), the CPU actor, pinned. Then wait for each to be RUNNING in /status."""
    hub = stack.dir / "hf" / "hub"
    for model in models:
        if model.name not in stack.models:
            lay_out_hf_cache(hub, model.name, model.directory)
    spec = {
        "models": [
            {
                "checkpoint": m.name,
                "model_key": m.model_key,
                "dtype": "float32",
                "size_bytes": m.size_bytes,
                "actor_class": ACTOR_CLASS,
                "pinned": True,
            }
            for m in models
        ]
    }
    path = stack.dir / "models.yaml"
    path.write_text(json.dumps(spec, indent=2) + "\n")  # JSON is YAML
    started = time.monotonic()
    _run(
        stack,
        "deploy",
        [
            str(VENV / "bin" / "ndif"),
            "deploy",
            "-f",
            str(path),
            "--ray-address",
            env["NDIF_RAY_ADDRESS"],
            "--redis-url",
            env["NDIF_REDIS_URL"],
        ],
        env,
        timeout_s,
    )
    for m in models:
        stack.models[m.name] = m.model_key
    stack.save()
    wanted = {m.model_key for m in models}
    _wait(stack, f"/status to show {sorted(m.name for m in models)} RUNNING", lambda: wanted <= running(stack), 180)
    stack.timings["deploy_s"] = round(time.monotonic() - started, 1)
    stack.save()


def evict(stack: Stack, names: Iterable[str], env: dict[str, str], timeout_s: float = 120) -> None:
    """Evict the deployed models ``names`` (ndif's own ``evict``, by model key: the CLI
    would ask the hub for the key) and wait until /status no longer lists them and their
    actor processes have exited."""
    names = [name for name in names if name in stack.models]
    if not names:
        return
    keys = [stack.models[name] for name in names]
    code = (
        "import json, sys\n"
        "from ndif.cli.lib.evict import evict\n"
        "evict(model_keys=json.loads(sys.argv[1]), ray_address=sys.argv[2], redis_url=sys.argv[3], on_message=print)\n"
    )
    argv = [str(SERVER_PYTHON), "-c", code, json.dumps(keys), env["NDIF_RAY_ADDRESS"], env["NDIF_REDIS_URL"]]
    _run(stack, "evict", argv, env, timeout_s)
    for name in names:
        del stack.models[name]
    stack.save()

    def gone() -> bool:
        actors = [p for p in stack_processes(stack) if _cmdline(p.pid).startswith("ray::CPUModelActor")]
        return not set(keys) & running(stack) and len(actors) <= len(stack.models)

    _wait(stack, f"{sorted(names)} to leave /status and their actors to exit", gone, timeout_s)


def running(stack: Stack) -> set[str]:
    """Model keys /status lists as RUNNING (deployed replicas appear as
    ``<replica>:ModelActor:<model_key>``)."""
    code, body = _http(f"{stack.host}/status", timeout=30)
    if code != 200:
        return set()
    keys = set()
    for name, entry in json.loads(body).get("deployments", {}).items():
        if entry.get("application_state") != "RUNNING":
            continue
        key = entry.get("model_key") or (name.split(":ModelActor:", 1)[1] if ":ModelActor:" in name else None)
        if key:
            keys.add(key)
    return keys


# ------------------------------------------------------------------ up / down


def up(
    models: Iterable[str] = DEFAULT_MODELS,
    root: Path | None = None,
    log: Callable[[str], None] = print,
    owner: int | None = None,
) -> Stack:
    """Start every service and deploy ``models``; on failure end what was started and
    raise ``StackError`` with the services' log tails. With ``owner`` (a pid, e.g. the
    pytest process) a watchdog ends the stack should that process die without doing so."""
    missing = installed()
    if missing:
        raise StackError(missing)
    started = time.monotonic()
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="rs-ndif-", dir="/tmp"))  # short: Ray's socket paths
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)  # the postgres user must reach pg/ (nothing else is readable)
    for sub in ("logs", "tmp", "hf/hub", "ndif-home", "actors"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "logs").chmod(0o700)  # ndif's request log records API keys in plain text
    shutil.copyfile(Path(__file__).with_name("cpu_actor.py"), root / "actors" / f"{ACTOR_MODULE}.py")
    names = "postgres redis s3 api ray_gcs ray_node_manager ray_object_manager ray_client ray_dashboard".split()
    names += "ray_agent_http ray_agent_grpc ray_runtime_env ray_metrics".split()
    names += [f"ray_worker_{i}" for i in range(RAY_WORKER_PORTS)]  # one draw: no port twice
    stack = Stack(root=str(root), ports=dict(zip(names, free_ports(len(names)), strict=True)))
    stack.host = f"http://127.0.0.1:{stack.ports['api']}"
    stack.save()
    if owner is not None:
        _spawn_watchdog(stack, owner)
    try:
        log(f"ndif stack: building models {', '.join(models)}")
        files = prepare_models(models)
        stack.timings["models_s"] = round(time.monotonic() - started, 1)
        t = time.monotonic()
        log(f"ndif stack: starting services in {root}")
        _start_postgres(stack)
        env = server_env(stack)
        assert_isolated(stack, env)
        _start_redis(stack)
        _start_s3(stack, env)
        _start_ray(stack, env)
        _start_controller(stack, env)
        _start_api(stack, env)
        stack.timings["services_s"] = round(time.monotonic() - t, 1)
        log(f"ndif stack: services up in {stack.timings['services_s']} s; deploying")
        deploy(stack, files, env)
    except BaseException:
        down(stack, remove=False)
        raise
    stack.timings["up_s"] = round(time.monotonic() - started, 1)
    stack.save()
    return stack


def _spawn_watchdog(stack: Stack, owner: int) -> None:
    start = _start_time(owner)
    argv = [sys.executable, str(Path(__file__).resolve()), "watch", "--dir", stack.root, "--owner", f"{owner}:{start}"]
    _spawn(stack, "watchdog", argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def _watch(root: Path, owner: Proc) -> int:
    """Wait for the owner to die, then end the stack (if it still exists)."""
    while owner.alive() and (root / "stack.json").exists():
        time.sleep(2.0)
    if (root / "stack.json").exists():
        print(f"ndif stack: owner {owner.pid} is gone; ending the stack", flush=True)
        down(Stack.load(root))
    return 0


def down(stack: Stack, remove: bool = True, grace_s: float = 5.0) -> int:
    """End every process the stack started, service by service in reverse order, then
    stragglers; returns how many processes were ended. Removes the stack directory."""
    procs = stack_processes(stack)
    for name in reversed(SERVICES):
        proc = stack.procs.get(name)
        if proc is not None:
            # PostgreSQL's SIGTERM waits for clients; SIGINT is its fast shutdown.
            _signal(proc, signal.SIGINT if name == "postgres" else signal.SIGTERM, group=True)
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(p.alive() for p in procs):
        time.sleep(0.2)
    for proc in procs:
        _signal(proc, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(p.alive() for p in procs):
        time.sleep(0.1)
    if remove:
        shutil.rmtree(stack.dir, ignore_errors=True)
    return len(procs)


def status_lines(stack: Stack) -> list[str]:
    procs = stack_processes(stack)
    rss, pss = _memory_kib(procs)
    lines = [f"stack {stack.root}: api {stack.host}"]
    for name in SERVICES:
        proc = stack.procs.get(name)
        if name == "controller":  # its launcher exits; the Controller is a detached Ray actor
            actor = next((p for p in procs if _cmdline(p.pid).startswith("ray::Controller")), None)
            state = f"running (Ray actor, pid {actor.pid})" if actor else "not running"
        else:
            state = f"running (pid {proc.pid})" if proc and proc.alive() else "not running"
        lines.append(f"  {name:<11} {state}")
    lines.append(f"  processes   {len(procs)}; resident {rss / 1024**2:.2f} GiB (RSS), {pss / 1024**2:.2f} GiB (PSS)")
    up_keys = running(stack)
    for name, key in stack.models.items():
        lines.append(f"  {name:<28} {'RUNNING' if key in up_keys else 'not running'}")
    return lines


def _write_env(path: Path, env: dict[str, str]) -> None:
    """A file to ``source``: it holds a key or a password, so only its owner reads it."""
    import shlex

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the stack and deploy models")
    p_up.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated remote_steer model names")
    p_up.add_argument("--dir", type=Path, help="stack directory (default: a new /tmp/rs-ndif-*)")
    for name in ("down", "status"):
        p = sub.add_parser(name, help=f"{name} the stack started by `up`")
        p.add_argument("--dir", type=Path, help="stack directory (default: the last one `up` started)")
    p_watch = sub.add_parser("watch", help=argparse.SUPPRESS)  # the fixture's watchdog
    p_watch.add_argument("--dir", type=Path, required=True)
    p_watch.add_argument("--owner", required=True, help="PID:STARTTIME")
    args = parser.parse_args(argv)

    if args.command == "watch":
        pid, start = args.owner.split(":")
        return _watch(args.dir, Proc(int(pid), int(start) if start != "None" else 0))

    if args.command == "up":
        try:
            stack = up([m for m in args.models.split(",") if m], args.dir)
        except StackError as error:
            print(f"ndif stack: FAILED: {error}", file=sys.stderr)
            return 2
        CURRENT.write_text(json.dumps({"root": stack.root}) + "\n")
        env_file, server_file = stack.dir / "client.env", stack.dir / "server.env"
        _write_env(env_file, stack.client_env())
        _write_env(server_file, server_env(stack))
        print(f"ndif stack: up in {stack.timings['up_s']} s; api {stack.host}")
        for name, key in stack.models.items():
            print(f"  deployed {name}: {key}")
        print(f"  client (host, test API key): source {env_file}")
        print(f"  ndif CLI (deploy, status):    source {server_file}")
        print(f"  logs: {stack.logs}")
        return 0

    root = args.dir
    if root is None:
        if not CURRENT.exists():
            print("ndif stack: no stack was started with `up` (pass --dir)", file=sys.stderr)
            return 2
        root = Path(json.loads(CURRENT.read_text())["root"])
    if not (root / "stack.json").exists():
        print(f"ndif stack: {root} holds no stack", file=sys.stderr)
        CURRENT.unlink(missing_ok=True)
        return 2
    stack = Stack.load(root)
    if args.command == "status":
        print("\n".join(status_lines(stack)))
        return 0
    ended = down(stack)
    if args.dir is None or (CURRENT.exists() and json.loads(CURRENT.read_text())["root"] == str(root)):
        CURRENT.unlink(missing_ok=True)
    print(f"ndif stack: down ({ended} processes ended, {root} removed)")
    return 0


if __name__ == "__main__":
    if str(REPO) not in sys.path:  # `python tests/ndif_stack/stack.py`: the client side needs remote_steer
        sys.path.insert(0, str(REPO))
    sys.exit(_main())
