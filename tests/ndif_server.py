"""A loopback server that behaves like NDIF as deployed, run as its own process. Test equipment.

It speaks the protocol nnsight 0.8's RemoteBackend uses and copies NDIF's behaviour where
a client can tell the difference (ndif 0.1.x ``services/api/app.py`` and ``auth.py``):

- ``POST /request``: multipart form, field ``data`` = the RequestModel JSON envelope, file
  ``blob`` = the serialized trace. The envelope is read first (422), then the
  ``ndif-api-key`` header is checked: missing → 401, unknown → 403. The only place the
  key is checked. Answers a ResponseModel (RECEIVED) whose ``id`` is the job id.
- ``GET /response/{id}``: open. 404 ``No response for request {id}.`` until the job is
  queued, and for ids it does not know (after a restart: jobs live in memory).
- ``GET /download/{id}?expires=&signature=``: the result blob, behind a URL signed at
  completion that expires after ``--url-ttl`` seconds (NDIF: 1 h); an expired or
  forged URL answers 403 like an object store. ``--resign`` signs a fresh URL on every
  poll instead (a server that re-signs).
- ``WS /subscribe``: first message ``{"session_id": ...}``, then status updates of that
  session's jobs (result inline when small). ``--silent-ws`` sends nothing after the
  session id: polling must carry a job.
- ``GET /status`` (open): the hosted deployments. ``GET /env`` (open): python and package
  versions. ``GET /ping``: ``pong``.
- **One long-lived process** deserializes and runs request after request with nnsight and
  never clears nnsight's process-global caches (``nnsight.tracing.globals`` ``SOURCES``,
  ``BLOCKS``; ``linecache``), as the issue that introduced this server observed of NDIF.

Test controls live under ``/_test/`` (faults to inject, counters, payload search);
``NdifProcess`` starts the server in a subprocess on a free port and drives them.

Run it by hand::

    python tests/ndif_server.py --port 8768 --key dev-key
    NDIF_API_KEY=dev-key remote-steer run experiments/quickstart.toml --backend remote --host http://127.0.0.1:8768
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INLINE_LIMIT = 4096  # bytes: larger websocket results go by download URL
TOYS = ("toy/qwen3", "toy/qwen3-moe")


@dataclass
class Job:
    id: str
    model_key: str
    blob: bytes
    compress: bool
    env: dict
    session_id: str
    visible_at: float
    status: str = "RECEIVED"
    description: str = ""
    result: bytes | None = None
    seconds: float = 0.0
    url: str | None = None  # the signed result URL, fixed at completion

    @property
    def payload(self) -> bytes:
        """The request as the server reads it (decompressed)."""
        if not self.compress:
            return self.blob
        import zstandard

        return zstandard.ZstdDecompressor().decompress(self.blob)


@dataclass
class Faults:
    fail_posts: list[int] = field(default_factory=list)  # HTTP codes to answer the next POSTs with
    fail_polls: list[int] = field(default_factory=list)
    drop_polls: int = 0  # polls to answer by closing the connection
    fail_jobs: int = 0  # jobs to fail with a server-side exception
    fail_downloads: list[int] = field(default_factory=list)  # HTTP codes to answer the next downloads with
    hold: bool = False  # jobs stall in QUEUED while set
    hidden: list[str] = field(default_factory=list)  # hosted models /status does not list


class LoopbackNdif:
    def __init__(
        self,
        hosted: dict[str, Any],
        api_key: str | None,
        port: int,
        url_ttl_s: float = 3600.0,
        resign: bool = False,
        silent_ws: bool = False,
        queue_delay_s: float = 0.1,
    ) -> None:
        self.hosted, self.api_key, self.port = hosted, api_key, port
        self.url = f"http://127.0.0.1:{port}"
        self.url_ttl_s, self.resign, self.silent_ws, self.queue_delay_s = url_ttl_s, resign, silent_ws, queue_delay_s
        self.faults = Faults()
        self.released = threading.Event()
        self.released.set()
        self.jobs: dict[str, Job] = {}
        self.counts = {
            "submissions": 0,
            "polls": 0,
            "refused_posts": 0,
            "downloads": 0,
            "expired_downloads": 0,
            "bytes_received": 0,
            "bytes_sent": 0,
            "refused_bytes": 0,
        }
        self._secret = secrets.token_bytes(16)
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._sockets: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------

    def serve_forever(self) -> None:
        from aiohttp import web

        threading.Thread(target=self._work, daemon=True).start()
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/request", self._post_request)
        app.router.add_get("/response/{job_id}", self._get_response)
        app.router.add_get("/download/{job_id}", self._download)
        app.router.add_get("/subscribe", self._subscribe)
        app.router.add_get("/status", self._status)
        app.router.add_get("/env", self._env)
        app.router.add_get("/ping", self._ping)
        app.router.add_post("/_test/config", self._config)
        app.router.add_get("/_test/stats", self._stats)
        app.router.add_post("/_test/payload-contains", self._payload_contains)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._loop.run_forever()

    # -- HTTP ------------------------------------------------------------------

    async def _post_request(self, request):
        from aiohttp import web

        if self.faults.fail_posts:
            self.counts["refused_posts"] += 1
            return web.json_response(
                {"detail": "Service temporarily unavailable (injected)"}, status=self.faults.fail_posts.pop(0)
            )
        form = await request.post()
        try:
            envelope = json.loads(form["data"])
            blob = form["blob"].file.read()
        except (KeyError, ValueError, AttributeError) as error:
            return web.json_response({"detail": f"Invalid JSON: {error}"}, status=422)
        if self.api_key is not None:
            sent = request.headers.get("ndif-api-key")
            if not sent or not hmac.compare_digest(sent, self.api_key):
                self.counts["refused_bytes"] += len(blob)
            if not sent:
                self.counts["refused_posts"] += 1
                return web.json_response(
                    {"detail": "Missing or invalid API key. Please visit https://login.ndif.us/ to create a new one."},
                    status=401,
                )
            if not hmac.compare_digest(sent, self.api_key):
                self.counts["refused_posts"] += 1
                return web.json_response({"detail": "Invalid API key."}, status=403)
        self.counts["bytes_received"] += len(blob)
        job = Job(
            id=uuid.uuid4().hex,
            model_key=envelope["model_key"],
            blob=blob,
            compress=bool(envelope.get("compress")),
            env=envelope.get("env") or {},
            session_id=envelope.get("session_id") or "",
            visible_at=time.monotonic() + self.queue_delay_s,
        )
        self.jobs[job.id] = job
        self.counts["submissions"] += 1
        self._queue.put(job)
        return web.json_response(self._response(job))

    async def _get_response(self, request):
        from aiohttp import web

        self.counts["polls"] += 1
        if self.faults.drop_polls:
            self.faults.drop_polls -= 1
            request.transport.close()  # a dropped connection mid-job
            raise web.HTTPInternalServerError()
        if self.faults.fail_polls:
            return web.json_response({"detail": "injected"}, status=self.faults.fail_polls.pop(0))
        job_id = request.match_info["job_id"]
        job = self.jobs.get(job_id)
        if job is None or time.monotonic() < job.visible_at:
            return web.json_response({"detail": f"No response for request {job_id}."}, status=404)
        return web.json_response(self._response(job, poll=True))

    async def _download(self, request):
        from aiohttp import web

        job = self.jobs.get(request.match_info["job_id"])
        expires = request.query.get("expires", "")
        signature = request.query.get("signature", "")
        valid = (
            job is not None and job.result is not None and hmac.compare_digest(signature, self._sign(job.id, expires))
        )
        if self.faults.fail_downloads:  # the URL expired in transit
            valid = self.faults.fail_downloads.pop(0) == 200 and valid
        if not valid or not expires.isdigit() or time.time() > int(expires):
            self.counts["expired_downloads"] += 1
            body = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            return web.Response(status=403, text=body, content_type="application/xml")
        self.counts["downloads"] += 1
        self.counts["bytes_sent"] += len(job.result)
        return web.Response(body=job.result, content_type="application/octet-stream")

    async def _status(self, request):
        from aiohttp import web

        deployments = {
            f"replica-0:ModelActor:{repo}": {
                "repo_id": repo,
                "deployment_level": "HOT",
                "application_state": "RUNNING",
                "task": "text-generation",
            }
            for repo in self.hosted
            if repo not in self.faults.hidden
        }
        return web.json_response({"deployments": deployments, "cluster": {"nodes": {}}})

    async def _env(self, request):
        from importlib import metadata

        from aiohttp import web

        packages = {name: metadata.version(name) for name in ("nnsight", "torch", "transformers")}
        return web.json_response({"python_version": sys.version, "packages": packages})

    async def _ping(self, request):
        from aiohttp import web

        return web.json_response("pong")

    async def _subscribe(self, request):
        from aiohttp import web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session_id = uuid.uuid4().hex
        self._sockets[session_id] = ws
        await ws.send_str(json.dumps({"session_id": session_id}))
        async for _ in ws:  # the client only listens; keep the socket until it closes
            pass
        self._sockets.pop(session_id, None)
        return ws

    # -- test controls -----------------------------------------------------------

    async def _config(self, request):
        from aiohttp import web

        body = await request.json()
        for name, value in body.items():
            if name == "hold":
                self.faults.hold = bool(value)
                (self.released.clear if value else self.released.set)()
            elif hasattr(self.faults, name):
                setattr(self.faults, name, value)
            elif name in ("url_ttl_s", "resign", "silent_ws", "queue_delay_s"):
                setattr(self, name, value)
            else:
                return web.json_response({"detail": f"unknown setting {name!r}"}, status=400)
        return web.json_response({"ok": True})

    async def _stats(self, request):
        from aiohttp import web

        states: dict[str, int] = {}
        for job in self.jobs.values():
            states[job.status] = states.get(job.status, 0) + 1
        return web.json_response({**self.counts, "jobs": len(self.jobs), "states": states})

    async def _payload_contains(self, request):
        from aiohttp import web

        needle = (await request.json())["needle"].encode()
        return web.json_response(
            {"count": sum(needle in job.payload for job in self.jobs.values()), "jobs": len(self.jobs)}
        )

    # -- responses ---------------------------------------------------------------

    def _sign(self, job_id: str, expires: str) -> str:
        return hmac.new(self._secret, f"{job_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def _signed_url(self, job: Job) -> str:
        expires = str(int(time.time() + self.url_ttl_s))
        return f"{self.url}/download/{job.id}?expires={expires}&signature={self._sign(job.id, expires)}"

    def _response(self, job: Job, poll: bool = False) -> dict:
        data = None
        if job.status == "COMPLETED":
            data = self._signed_url(job) if (self.resign and poll) or job.url is None else job.url
        meta = {"runtime": round(job.seconds, 4)} if job.status in ("COMPLETED", "ERROR") else None
        return {"id": job.id, "status": job.status, "description": job.description, "data": data, "meta": meta}

    def _notify(self, job: Job) -> None:
        """Push a status update to the job's websocket subscriber, if any."""
        ws = self._sockets.get(job.session_id)
        if ws is None or self._loop is None or self.silent_ws:
            return
        if job.status == "COMPLETED" and job.result is not None and len(job.result) <= INLINE_LIMIT:
            from nnsight.schema.response import ResponseModel

            frame = ResponseModel(id=job.id, status="COMPLETED", data=job.result).pickle()
            self.counts["bytes_sent"] += len(job.result)
            send = ws.send_bytes(frame)
        else:
            send = ws.send_str(json.dumps(self._response(job)))
        asyncio.run_coroutine_threadsafe(send, self._loop).result(10)

    def _set(self, job: Job, status: str, description: str = "") -> None:
        job.status, job.description = status, description
        if status == "COMPLETED":
            job.url = self._signed_url(job)
        self._notify(job)

    # -- execution -------------------------------------------------------------

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            self._set(job, "QUEUED")
            self.released.wait()
            self._set(job, "RUNNING")
            started = time.perf_counter()
            try:
                job.result = self._execute(job)
                job.seconds = time.perf_counter() - started
                self._set(job, "COMPLETED")
            except Exception:  # noqa: BLE001 - a failed job reports its traceback
                job.seconds = time.perf_counter() - started
                self._set(job, "ERROR", traceback.format_exc())

    def _execute(self, job: Job) -> bytes:
        """Deserialize the trace with nnsight and run it against the hosted model, in
        this long-lived process, leaving nnsight's caches as they are."""
        import torch
        from nnsight.schema.request import RequestModel
        from nnsight.tracing.tracer import dec, inc

        if self.faults.fail_jobs:
            self.faults.fail_jobs -= 1
            raise RuntimeError("injected server failure: CUDA out of memory (tried to allocate 80 GiB)")
        repo_id = json.loads(job.model_key.split(":", 1)[1])["repo_id"]
        if repo_id not in self.hosted:
            raise LookupError(f"model {repo_id!r} is not hosted here")
        model = self.hosted[repo_id].nn
        model._remoteable_set_env(job.env)
        tracer = RequestModel.deserialize(job.blob, model._remoteable_persistent_objects(), job.compress)
        frame = tracer.info.frame
        before = dict(frame.f_locals)
        inc()
        try:
            with torch.inference_mode():
                tracer.execute(tracer.info.code)
            saves = {k: v for k, v in frame.f_locals.items() if k not in before or before[k] is not v}
        finally:
            dec()
        buffer = io.BytesIO()
        torch.save(saves, buffer)
        content = buffer.getvalue()
        if job.compress:
            import zstandard

            content = zstandard.ZstdCompressor(level=6).compress(content)
        return content


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NdifProcess:
    """The loopback server in its own process, driven over HTTP (for tests)."""

    def __init__(self, api_key: str | None, models: tuple[str, ...] = TOYS, **options: Any) -> None:
        self.api_key, self.models, self.options = api_key, models, options
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"ndif-loopback-{self.port}.log"

    def start(self, timeout_s: float = 180.0) -> NdifProcess:
        import httpx

        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--port",
            str(self.port),
            "--models",
            ",".join(self.models),
        ]
        if self.api_key is not None:
            command += ["--key-env", "NDIF_LOOPBACK_KEY"]
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            command += [flag] if value is True else ([] if value is False else [flag, str(value)])
        env = {**os.environ, "NDIF_LOOPBACK_KEY": self.api_key or ""}
        env.pop("NDIF_API_KEY", None)
        self.process = subprocess.Popen(command, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"loopback NDIF server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/ping", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"loopback NDIF server did not answer within {timeout_s:.0f}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        """Kill and start again on the same port: every job is forgotten, as after an NDIF restart."""
        self.stop()
        self.start()

    def configure(self, **settings: Any) -> None:
        import httpx

        httpx.post(f"{self.url}/_test/config", json=settings, timeout=10).raise_for_status()

    def reset(self) -> None:
        self.configure(
            fail_posts=[],
            fail_polls=[],
            fail_downloads=[],
            drop_polls=0,
            fail_jobs=0,
            hold=False,
            hidden=[],
            url_ttl_s=self.options.get("url_ttl", 3600.0),
            resign=False,
            silent_ws=False,
        )

    def stats(self) -> dict[str, Any]:
        import httpx

        return httpx.get(f"{self.url}/_test/stats", timeout=10).json()

    @property
    def submissions(self) -> int:
        return self.stats()["submissions"]

    def payloads_containing(self, needle: str) -> dict[str, int]:
        import httpx

        return httpx.post(f"{self.url}/_test/payload-contains", json={"needle": needle}, timeout=60).json()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="Serve the toy models over NDIF's protocol on loopback, behaving like NDIF as deployed.",
        epilog=__doc__.split("Run it by hand::", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--key", default=None, help="API key clients must send on submission (default: none required)")
    parser.add_argument("--key-env", default=None, help="read the API key from this environment variable instead")
    parser.add_argument("--models", default=",".join(TOYS), help="comma-separated models to host (default: both toys)")
    parser.add_argument(
        "--url-ttl", type=float, default=3600.0, help="seconds a signed result URL stays valid (NDIF: 3600)"
    )
    parser.add_argument("--resign", action="store_true", help="sign a fresh result URL on every poll")
    parser.add_argument("--silent-ws", action="store_true", help="send nothing on /subscribe after the session id")
    parser.add_argument(
        "--queue-delay", type=float, default=0.1, help="seconds a new job answers 404 before it is queued"
    )
    args = parser.parse_args()
    key = os.environ.get(args.key_env) if args.key_env else args.key

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's remote_steer
    import torch  # noqa: F401 - load before the models

    from remote_steer.models.loading import load_model, resolve

    hosted = {name: load_model(resolve(name), dtype="float32") for name in args.models.split(",") if name}
    server = LoopbackNdif(
        hosted,
        api_key=key or None,
        port=args.port,
        url_ttl_s=args.url_ttl,
        resign=args.resign,
        silent_ws=args.silent_ws,
        queue_delay_s=args.queue_delay,
    )
    print(f"loopback NDIF serving {', '.join(hosted)} at {server.url}; Ctrl-C to stop", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
