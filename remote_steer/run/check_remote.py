"""First contact with a remote host: ``remote-steer check-remote``.

Each step either passes with what it measured or fails with one line saying what to
do; later steps that depend on a failed one are not tried. Nothing is written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from remote_steer.errors import RemoteSteerError
from remote_steer.remote.backend import Backend
from remote_steer.remote.status import Hosting


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    detail: str


def _pick_model(requested: str | None, hosted: dict[str, Hosting]) -> tuple[str | None, str]:
    """The model to probe: the one asked for, else the first registry model the host runs."""
    from remote_steer.models.loading import remote_id, resolve
    from remote_steer.models.registry import all_cards

    if requested is not None:
        return requested, remote_id(resolve(requested))
    for card in all_cards():
        repo = card.name if (card.toy or card.embedded) else card.hub_id
        if repo in hosted and hosted[repo].hosted:
            return card.name, repo
    return None, ""


def check_remote(host: str | None, model: str | None, engine: str = "fast") -> Iterator[Step]:
    import httpx

    from remote_steer.remote.ndif import probe_key
    from remote_steer.remote.status import (
        client_versions,
        cold_line,
        not_served_line,
        parse_status,
        server_versions,
        skew_line,
    )

    backend = Backend("remote", host=host)
    url = backend.host
    assert url is not None  # a remote Backend resolves its host on construction
    started = time.perf_counter()
    try:
        answer = httpx.get(f"{url}/status", timeout=10.0)
        answer.raise_for_status()
    except httpx.HTTPError as error:
        code = getattr(getattr(error, "response", None), "status_code", None)
        why = f"HTTP {code}" if code else type(error).__name__
        yield Step(
            "reachable", False, f"{url} did not answer /status ({why}); check --host or $NDIF_HOST and your network"
        )
        return
    yield Step("reachable", True, f"{url} answered /status in {1000 * (time.perf_counter() - started):.0f} ms")

    try:
        models = parse_status(answer.json())  # the answer above: /status is read once
    except ValueError:
        yield Step("model hosted", False, f"{url}: /status did not answer JSON; check --host")
        return
    running = ", ".join(sorted(repo for repo, h in models.items() if h.hosted)) or "none"
    name, repo = _pick_model(model, models)
    if name is None:
        yield Step("model hosted", False, f"no registry model is running on {url} (running: {running}); pass --model")
        return
    found = models.get(repo)
    if found is None:
        yield Step("model hosted", False, not_served_line(url, repo, name, models) + "; choose one with --model")
        return
    if found.cold:
        from remote_steer.models.registry import lookup

        card = lookup(name)
        line = cold_line(name, url, card.params_total_b if card is not None and not card.toy else None)
        yield Step("model hosted", False, line + "; nothing sent: rerun once it is deployed, or run to deploy it")
        return
    if not found.hosted:
        yield Step("model hosted", False, f"{name} ({repo}) is {found.describe()}; ask the host's operators")
        return
    yield Step("model hosted", True, f"{name} ({repo}): {found.state}")

    client = client_versions()
    server = server_versions(url)
    if server is None:
        yield Step(
            "versions",
            True,
            f"client nnsight {client['nnsight']}, python {client['python']}; "
            "the server does not say its versions (/env)",
        )
    else:
        detail = (
            f"client nnsight {client['nnsight']}, python {client['python']}; "
            f"server nnsight {server['nnsight']}, python {server['python']}"
        )
        skew = skew_line(url, client, server)
        if skew:
            yield Step("versions", False, skew)
            return
        yield Step("versions", True, detail)

    from remote_steer.models.loading import load_model, resolve

    try:
        loaded = load_model(resolve(name), dtype="auto", weights=False)
    except RemoteSteerError as error:
        yield Step("key accepted", False, f"cannot build {name} locally (config and tokenizer): {error}")
        return
    key_state = "set" if backend.api_key else "not set"
    try:
        sent = probe_key(backend, loaded)
    except RemoteSteerError as error:
        yield Step("key accepted", False, str(error))
        return
    yield Step("key accepted", True, f"API key {key_state}; a one-token probe job ({sent:,} bytes) was accepted")

    yield _tiny_trace(backend, loaded, engine)


def _tiny_trace(backend: Backend, loaded, engine: str) -> Step:
    import torch

    from remote_steer.data.loading import load_concept
    from remote_steer.data.preprocess import preprocess
    from remote_steer.data.prompts import encode_items
    from remote_steer.engines.choice import sweep_engine
    from remote_steer.engines.sweep_plain import SteerConfig

    split = preprocess(
        load_concept("corrigibility", "fixtures"), "corrigibility", seed=0, test_fraction=0.5, max_items=4
    )
    item = encode_items(loaded.tokenizer, split.test[:1])
    layer = loaded.n_layers // 2
    vectors = torch.zeros(loaded.n_layers, loaded.hidden_size)
    vectors[layer] = torch.nn.functional.normalize(
        torch.randn(loaded.hidden_size, generator=torch.Generator().manual_seed(0)), dim=0
    )
    chosen = sweep_engine(loaded, backend, 8, "assistant", engine)
    started = time.perf_counter()
    try:
        result = chosen.engine.run(item, vectors, [SteerConfig(layer, 1.0)])
    except RemoteSteerError as error:
        return Step("tiny trace", False, f"{engine} engine, 1 item × (baseline + layer {layer}): {error}")
    seconds = time.perf_counter() - started
    traffic = backend.traffic["evaluation"]
    return Step(
        "tiny trace",
        True,
        f"{engine} engine, 1 item × (baseline + layer {layer} at +1 unit vector): round trip {seconds:.1f} s, "
        f"{traffic.bytes_sent:,} bytes sent, {traffic.bytes_received:,} received; logit diff "
        f"{float(result.baseline[0]):+.3f} → {float(result.steered[0][0]):+.3f}",
    )
