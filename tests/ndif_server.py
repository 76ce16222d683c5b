"""A loopback server that speaks the NDIF protocol nnsight's client uses. Test equipment.

Endpoints (as nnsight 0.8's RemoteBackend calls them):
- ``POST /request``: multipart form, field ``data`` = the RequestModel JSON envelope,
  file ``blob`` = the serialized trace; header ``ndif-api-key``. Answers a
  ResponseModel (RECEIVED) whose ``id`` is the job id.
- ``GET /response/{id}``: the job's latest ResponseModel (404 before the first).
- ``GET /download/{id}``: the result blob (``torch.save`` of the saved values,
  zstd-compressed when the request asked for compression).
- ``WS /subscribe``: first message ``{"session_id": ...}``; then the status updates
  of jobs submitted with that session id; COMPLETED carries the result inline (a
  binary frame) when small, else a download URL.
- ``GET /status``: the hosted deployments.

Requests are deserialized with nnsight and run on the toy models in a worker thread.
The server can be told to fail (``fail_posts``/``fail_polls`` status codes), stall
(``hold``), or drop a connection (``drop_polls``), and it counts submissions.
"""

from __future__ import annotations

import asyncio
import io
import json
import queue
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

import torch

INLINE_LIMIT = 4096  # bytes: larger websocket results go by download URL


@dataclass
class Job:
    id: str
    model_key: str
    blob: bytes
    compress: bool
    env: dict
    session_id: str
    status: str = "RECEIVED"
    description: str = ""
    result: bytes | None = None
    seconds: float = 0.0

    @property
    def payload(self) -> bytes:
        """The request as the server reads it (decompressed), for inspection in tests."""
        if not self.compress:
            return self.blob
        import zstandard

        return zstandard.ZstdDecompressor().decompress(self.blob)


@dataclass
class LoopbackNdif:
    hosted: dict[str, Any]  # remote repo id -> LoadedModel (weights loaded) on the "server"
    api_key: str | None = None
    submissions: int = 0
    polls: int = 0
    fail_posts: list[int] = field(default_factory=list)  # HTTP codes to answer the next POSTs with
    fail_polls: list[int] = field(default_factory=list)
    drop_polls: int = 0  # polls to answer by closing the connection
    fail_jobs: int = 0  # jobs to fail with a server-side exception
    hold: threading.Event = field(default_factory=threading.Event)
    jobs: dict[str, Job] = field(default_factory=dict)
    bytes_received: int = 0
    bytes_sent: int = 0

    def __post_init__(self) -> None:
        self.hold.set()  # clear() to stall jobs in QUEUED
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._sockets: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> "LoopbackNdif":
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()
        if not ready.wait(10):
            raise RuntimeError("loopback NDIF server did not start")
        return self

    def stop(self) -> None:
        self.hold.set()
        self._queue.put(None)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._worker.join(5)

    def _serve(self, ready: threading.Event) -> None:
        from aiohttp import web

        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/request", self._post_request)
        app.router.add_get("/response/{job_id}", self._get_response)
        app.router.add_get("/download/{job_id}", self._download)
        app.router.add_get("/subscribe", self._subscribe)
        app.router.add_get("/status", self._status)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    # -- HTTP ------------------------------------------------------------------

    def _refuse(self, request):
        from aiohttp import web

        if self.api_key is not None and request.headers.get("ndif-api-key") != self.api_key:
            return web.json_response({"detail": "invalid or missing API key"}, status=401)
        return None

    async def _post_request(self, request):
        from aiohttp import web

        if (refused := self._refuse(request)) is not None:
            return refused
        if self.fail_posts:
            return web.json_response({"detail": "service unavailable (injected)"}, status=self.fail_posts.pop(0))
        form = await request.post()
        envelope = json.loads(form["data"])
        blob = form["blob"].file.read()
        self.bytes_received += len(blob)
        job = Job(
            id=uuid.uuid4().hex,
            model_key=envelope["model_key"],
            blob=blob,
            compress=bool(envelope.get("compress")),
            env=envelope.get("env") or {},
            session_id=envelope.get("session_id") or "",
        )
        self.jobs[job.id] = job
        self.submissions += 1
        self._queue.put(job)
        return web.json_response(self._response(job))

    async def _get_response(self, request):
        from aiohttp import web

        if (refused := self._refuse(request)) is not None:
            return refused
        self.polls += 1
        if self.drop_polls:
            self.drop_polls -= 1
            request.transport.close()  # a dropped connection mid-job
            raise web.HTTPInternalServerError()
        if self.fail_polls:
            return web.json_response({"detail": "injected"}, status=self.fail_polls.pop(0))
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return web.json_response({"detail": "unknown job"}, status=404)
        return web.json_response(self._response(job))

    async def _download(self, request):
        from aiohttp import web

        job = self.jobs.get(request.match_info["job_id"])
        if job is None or job.result is None:
            return web.json_response({"detail": "no result"}, status=404)
        self.bytes_sent += len(job.result)
        return web.Response(body=job.result, content_type="application/octet-stream")

    async def _status(self, request):
        from aiohttp import web

        if (refused := self._refuse(request)) is not None:
            return refused
        deployments = {
            repo: {"repo_id": repo, "deployment_level": "HOT", "application_state": "RUNNING", "task": "text-generation"}
            for repo in self.hosted
        }
        return web.json_response({"deployments": deployments})

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

    def _response(self, job: Job) -> dict:
        data = f"{self.url}/download/{job.id}" if job.status == "COMPLETED" else None
        meta = {"seconds": round(job.seconds, 4)} if job.status in ("COMPLETED", "ERROR") else None
        return {"id": job.id, "status": job.status, "description": job.description, "data": data, "meta": meta}

    def _notify(self, job: Job) -> None:
        """Push a status update to the job's websocket subscriber, if any."""
        ws = self._sockets.get(job.session_id)
        if ws is None or self._loop is None:
            return
        if job.status == "COMPLETED" and job.result is not None and len(job.result) <= INLINE_LIMIT:
            from nnsight.schema.response import ResponseModel

            frame = ResponseModel(id=job.id, status="COMPLETED", data=job.result).pickle()
            self.bytes_sent += len(job.result)
            send = ws.send_bytes(frame)
        else:
            send = ws.send_str(json.dumps(self._response(job)))
        asyncio.run_coroutine_threadsafe(send, self._loop).result(10)

    def _set(self, job: Job, status: str, description: str = "") -> None:
        job.status, job.description = status, description
        self._notify(job)

    # -- execution -------------------------------------------------------------

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            self._set(job, "QUEUED")
            self.hold.wait()
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
        """Deserialize the trace with nnsight and run it against the hosted model."""
        from nnsight.schema.request import RequestModel
        from nnsight.tracing.tracer import dec, inc

        if self.fail_jobs:
            self.fail_jobs -= 1
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    """Serve the toy models on loopback, for trying the remote backend by hand:

        python tests/ndif_server.py --port 8765 --key dev-key
        NDIF_API_KEY=dev-key remote-steer run experiments/quickstart.toml --backend remote --host http://127.0.0.1:8765
    """
    import argparse

    from remote_steer.models.loading import load_model, resolve

    parser = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--key", default=None, help="API key clients must send (default: none required)")
    args = parser.parse_args()
    hosted = {name: load_model(resolve(name), dtype="float32") for name in ("toy/qwen3", "toy/qwen3-moe")}
    server = LoopbackNdif(hosted, api_key=args.key)
    server.port, server.url = args.port, f"http://127.0.0.1:{args.port}"
    server.start()
    print(f"loopback NDIF serving {', '.join(hosted)} at {server.url}; Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
