"""The serving adapters speaking their cloud's contract: SageMaker (HTTP + inference-toolkit handlers), Azure ML
``score.py`` and the Vertex AI custom container (including ``gs://`` artefacts through a GCS JSON-API fake).

HTTP adapters run as subprocesses on a free port, as the clouds run them. Images: HAM10000 dev images
(Tschandl et al. 2018, CC BY-NC 4.0), read in place.
"""

from __future__ import annotations

import base64
import http.client
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

from derm_cloud.backends.local_onnx import LocalOnnxClassifier
from derm_cloud.serving import ServingError, custom_attributes_for
from derm_cloud.testing.emulators.base import EmulatorServer, Response
from derm_cloud.types import PatientMetadata

ADAPTERS = Path(__file__).resolve().parents[1] / "adapters"
DEEP_JSON = b"[" * 200_000  # nested deeper than Python's JSON parser can go
META = {"age": 62, "sex": "female", "site": "lower extremity"}


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def local_probs(model_dir: Path, image: bytes, meta: dict[str, Any] | None = None) -> list[float]:
    with LocalOnnxClassifier(model_dir) as clf:
        return [s.score for s in clf.predict(image, meta).provider_scores]


class AdapterProcess:
    """An adapter script started as a subprocess; its first stdout line names the bound port."""

    def __init__(self, script: Path, args: list[str], env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise AssertionError(
                f"adapter did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}"
            )
        self.port = int(line.rsplit(":", 1)[1])

    def call(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        data = reply.read()
        conn.close()
        return reply.status, reply.getheader("Content-Type"), data

    def stop(self) -> None:
        self.proc.terminate()  # SIGTERM, as SageMaker and Vertex stop containers
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def sagemaker_adapter(tiny_meta_model_dir: Path) -> Iterator[AdapterProcess]:
    # SM_MODEL_DIR points one level above the model: the adapter must find the model folder itself.
    env = {"SM_MODEL_DIR": str(tiny_meta_model_dir.parent)}
    proc = AdapterProcess(ADAPTERS / "sagemaker" / "serve.py", ["serve", "--host", "127.0.0.1", "--port", "0"], env)
    yield proc
    proc.stop()


# --- SageMaker container contract ---------------------------------------------------------------------------


def test_sagemaker_ping_and_invocations(
    sagemaker_adapter: AdapterProcess, tiny_meta_model_dir: Path, dev_images: list[Path]
) -> None:
    status, _, body = sagemaker_adapter.call("GET", "/ping")
    assert status == 200 and json.loads(body)["status"] == "ok"
    image = dev_images[1].read_bytes()
    status, ctype, body = sagemaker_adapter.call("POST", "/invocations", image, {"Content-Type": "application/x-image"})
    assert (status, ctype) == (200, "application/json")
    np.testing.assert_allclose(json.loads(body)["probabilities"], local_probs(tiny_meta_model_dir, image), atol=1e-6)


def test_sagemaker_metadata_in_custom_attributes(
    sagemaker_adapter: AdapterProcess, tiny_meta_model_dir: Path, dev_images: list[Path]
) -> None:
    image = dev_images[2].read_bytes()
    headers = {
        "Content-Type": "image/jpeg",
        "Accept": "application/json;verbose",
        "X-Amzn-SageMaker-Custom-Attributes": custom_attributes_for(PatientMetadata(**META)),
    }
    status, ctype, body = sagemaker_adapter.call("POST", "/invocations", image, headers)
    assert (status, ctype) == (200, "application/json;verbose")
    payload = json.loads(body)
    assert "model_id" not in payload  # the JumpStart verbose shape
    np.testing.assert_allclose(payload["probabilities"], local_probs(tiny_meta_model_dir, image, META), atol=1e-6)


def test_sagemaker_errors_map_to_http(sagemaker_adapter: AdapterProcess) -> None:
    status, _, body = sagemaker_adapter.call("POST", "/invocations", b"GIF89a-broken", {"Content-Type": "image/gif"})
    assert status == 415
    status, _, body = sagemaker_adapter.call(
        "POST", "/invocations", b"\xff\xd8\xff\xe0garbage", {"Content-Type": "image/jpeg"}
    )
    assert status == 400
    assert "JPEG is truncated or corrupt" in json.loads(body)["error"]["message"]
    status, _, body = sagemaker_adapter.call("GET", "/execution-parameters")
    assert status == 200 and json.loads(body)["BatchStrategy"] == "SINGLE_RECORD"
    # 200 KB of nested arrays: the JSON parser's RecursionError must not become a 500
    status, _, body = sagemaker_adapter.call("POST", "/invocations", DEEP_JSON, {"Content-Type": "application/json"})
    assert status == 400 and "nested deeper than" in json.loads(body)["error"]["message"]


class ToolkitContext:
    """The part of the inference toolkit's context that handlers read: request headers."""

    class _Processor:
        def __init__(self, headers: dict[str, str]) -> None:
            self._headers = headers

        def get_request_properties(self) -> dict[str, str]:
            return self._headers

    def __init__(self, headers: dict[str, str]) -> None:
        self.request_processor = [self._Processor(headers)]


def test_inference_toolkit_handlers(tiny_meta_model_dir: Path, dev_images: list[Path]) -> None:
    handlers = load_module(ADAPTERS / "sagemaker" / "inference.py", "derm_sagemaker_inference")
    model = handlers.model_fn(str(tiny_meta_model_dir.parent))
    image = dev_images[3].read_bytes()
    context = ToolkitContext({"X-Amzn-SageMaker-Custom-Attributes": custom_attributes_for(PatientMetadata(**META))})
    # The toolkit's call sequence (_default_transform_fn): input_fn -> predict_fn -> output_fn, context last.
    data = handlers.input_fn(image, "application/x-image", context)
    prediction = handlers.predict_fn(data, model, context)
    body = handlers.output_fn(prediction, "application/json;verbose", context)
    np.testing.assert_allclose(
        json.loads(body)["probabilities"], local_probs(tiny_meta_model_dir, image, META), atol=1e-6
    )
    # JSON bodies arrive decoded to str (the toolkit decodes UTF-8 types); handlers without context work too.
    request = json.dumps({"b64": base64.b64encode(image).decode()})
    plain = handlers.output_fn(
        handlers.predict_fn(handlers.input_fn(request, "application/json"), model), "application/json"
    )
    np.testing.assert_allclose(json.loads(plain)["probabilities"], local_probs(tiny_meta_model_dir, image), atol=1e-6)
    with pytest.raises(ServingError) as info:
        handlers.predict_fn(handlers.input_fn(b"not an image", "image/jpeg"), model)
    assert info.value.status == 400
    with pytest.raises(ServingError, match="nested deeper than") as info:
        handlers.predict_fn(handlers.input_fn(DEEP_JSON.decode(), "application/json"), model)
    assert info.value.status == 400


# --- Azure ML score.py ----------------------------------------------------------------------------------------


def test_azureml_score_init_and_run(
    tmp_path: Path, tiny_model_dir: Path, dev_images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Azure ML mounts a registered folder as $AZUREML_MODEL_DIR/<folder name>/...
    registered = tmp_path / "azureml-models" / "derm" / "1"
    (registered / "tiny-onnx").mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        (registered / "tiny-onnx" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(registered))
    score = load_module(ADAPTERS / "azureml" / "score.py", "derm_azureml_score")
    with pytest.raises(RuntimeError, match="before init"):
        score.run("{}")
    score.init()
    images = [p.read_bytes() for p in dev_images[:2]]
    request = {"input_data": {"columns": ["image"], "data": [base64.b64encode(i).decode() for i in images]}}
    out = score.run(json.dumps(request))
    assert [set(o) for o in out] == [{"probs", "labels"}] * 2
    for entry, image in zip(out, images, strict=True):
        np.testing.assert_allclose(entry["probs"], local_probs(tiny_model_dir, image), atol=1e-5)
    bad = {"input_data": {"columns": ["image"], "data": [base64.b64encode(b"nope").decode()]}}
    with pytest.raises(ServingError) as info:  # no Azure ML inference server here: the status rides on the error
        score.run(json.dumps(bad))
    assert info.value.status == 400
    with pytest.raises(ServingError, match="nested deeper than") as info:
        score.run(DEEP_JSON.decode())
    assert info.value.status == 400


def test_azureml_init_without_model_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    score = load_module(ADAPTERS / "azureml" / "score.py", "derm_azureml_score_missing")
    with pytest.raises(RuntimeError, match="AZUREML_MODEL_DIR"):
        score.init()


# --- Vertex AI custom container ---------------------------------------------------------------------------------

VERTEX_HEALTH = "/v1/endpoints/123/deployedModels/456"
VERTEX_PREDICT = "/v1/endpoints/123/deployedModels/456:predict"


def test_vertex_custom_container_contract(tiny_meta_model_dir: Path, dev_images: list[Path]) -> None:
    env = {
        "AIP_HTTP_PORT": "0",
        "AIP_HEALTH_ROUTE": VERTEX_HEALTH,
        "AIP_PREDICT_ROUTE": VERTEX_PREDICT,
        "AIP_STORAGE_URI": str(tiny_meta_model_dir),
    }
    proc = AdapterProcess(ADAPTERS / "vertex" / "server.py", ["--host", "127.0.0.1"], env)
    try:
        assert proc.call("GET", VERTEX_HEALTH)[0] == 200
        image = dev_images[4].read_bytes()
        request = {"instances": [{"b64": base64.b64encode(image).decode(), "metadata": META}]}
        status, _, body = proc.call(
            "POST", VERTEX_PREDICT, json.dumps(request).encode(), {"Content-Type": "application/json"}
        )
        assert status == 200
        prediction = json.loads(body)["predictions"][0]
        np.testing.assert_allclose(
            prediction["probabilities"], local_probs(tiny_meta_model_dir, image, META), atol=1e-6
        )
        assert proc.call("POST", "/predict", json.dumps(request).encode())[0] == 404  # only the AIP route serves
        status, _, body = proc.call("POST", VERTEX_PREDICT, b'{"instances": [{"b64": "bm9wZQ=="}]}')
        assert status == 400
        status, _, body = proc.call("POST", VERTEX_PREDICT, DEEP_JSON, {"Content-Type": "application/json"})
        assert status == 400 and "nested deeper than" in json.loads(body)["error"]["message"]
    finally:
        proc.stop()


class FakeGcs(EmulatorServer):
    """The slice of the GCS JSON API that google-cloud-storage uses to list and download objects."""

    def __init__(self, bucket: str, objects: dict[str, bytes]) -> None:
        super().__init__()
        self.bucket = bucket
        self.objects = objects

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        url = urlsplit(path)
        base = f"/storage/v1/b/{self.bucket}"
        if url.path == base:
            return Response.json({"kind": "storage#bucket", "name": self.bucket})
        if url.path == base + "/o":
            prefix = parse_qs(url.query).get("prefix", [""])[0]
            items = [
                {"name": n, "bucket": self.bucket, "size": str(len(b)), "generation": "1"}
                for n, b in self.objects.items()
                if n.startswith(prefix)
            ]
            return Response.json({"kind": "storage#objects", "items": items})
        download = f"/download{base}/o/"
        if url.path.startswith(download):
            return Response(
                200, self.objects[unquote(url.path[len(download) :])], {"Content-Type": "application/octet-stream"}
            )
        return Response.json({"error": {"code": 404, "message": "not found"}}, 404)


def test_vertex_downloads_gcs_artifacts(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = {f"models/derm/{f.name}": f.read_bytes() for f in tiny_model_dir.iterdir()}
    objects["models/derm-old/spec.json"] = b"{}"  # a sibling prefix that must not be picked up
    with FakeGcs("artefacts", objects) as gcs:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        server = load_module(ADAPTERS / "vertex" / "server.py", "derm_vertex_server")
        model_dir = server.download_gcs("gs://artefacts/models/derm", tmp_path)
        assert sorted(p.name for p in model_dir.iterdir()) == sorted(f.name for f in tiny_model_dir.iterdir())
        assert (model_dir / "model.onnx").read_bytes() == (tiny_model_dir / "model.onnx").read_bytes()
        with pytest.raises(FileNotFoundError, match="no objects"):
            server.download_gcs("gs://artefacts/elsewhere", tmp_path / "x")


# --- graceful drain on SIGTERM --------------------------------------------------------------------------------------


def test_sigterm_drains_in_flight_request(tiny_model_dir: Path, dev_images: list[Path]) -> None:
    env = {"SM_MODEL_DIR": str(tiny_model_dir), "DERM_CLOUD_DRAIN_TIMEOUT": "10"}
    proc = AdapterProcess(ADAPTERS / "sagemaker" / "serve.py", ["serve", "--host", "127.0.0.1", "--port", "0"], env)
    image = dev_images[5].read_bytes()
    try:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
            head = f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {len(image)}"
            sock.sendall(head.encode() + b"\r\n\r\n" + image[:1000])  # in flight: half its body is still to come
            time.sleep(0.3)
            proc.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            with pytest.raises(OSError):  # draining: no new connections
                socket.create_connection(("127.0.0.1", proc.port), timeout=2).close()
            sock.sendall(image[1000:])
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")
        payload = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        np.testing.assert_allclose(payload["probabilities"], local_probs(tiny_model_dir, image), atol=1e-6)
        assert proc.proc.wait(timeout=10) == 0  # drained, then a clean exit
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()


# --- at the open-file limit -----------------------------------------------------------------------------------------

# The SageMaker adapter with a 1 s interval between accept-failure log lines (10 s in production), so the test can
# see a summary line; everything else is the adapter as a container runs it.
_ADAPTER_WITH_SHORT_LOG_INTERVAL = """
import runpy, sys
import derm_cloud.serving_loop as serving_loop
serving_loop.RESOURCE_LOG_INTERVAL = 1.0
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_accept_at_the_fd_limit_logs_one_line_per_interval(tiny_model_dir: Path, tmp_path: Path) -> None:
    import resource

    soft_limit = 64

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft_limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    script = ADAPTERS / "sagemaker" / "serve.py"
    args = ["serve", "--model-dir", str(tiny_model_dir), "--host", "127.0.0.1", "--port", "0"]
    log = tmp_path / "stderr.log"  # a file, not a pipe: a flood of log lines must not block the server on a full pipe
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _ADAPTER_WITH_SHORT_LOG_INTERVAL, str(script), *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            preexec_fn=low_fd_limit,
        )
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(soft_limit + 20)]
        time.sleep(3.5)  # the server's fd table is full: accept() fails with EMFILE over and over
        for sock in held:
            sock.close()
        held = []
        deadline = time.monotonic() + 10
        while True:  # it serves again once connections close (asyncio retries accepting every second)
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/ping")
                assert conn.getresponse().status == 200
                conn.close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the adapter did not recover after the connections closed"
                time.sleep(0.2)
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        proc.communicate(timeout=15)
    stderr = log.read_text()
    lines = stderr.splitlines()
    accept_lines = [line for line in lines if "accept" in line]
    assert "Traceback" not in stderr and len(lines) < 30, stderr[-3000:]
    assert "open-file limit" in stderr  # warned at start: max_connections (1000) cannot be reached under 64 fds
    # One line at the first failure, then one per interval with the count of those not logged; asyncio retries
    # once a second, so each interval holds a handful, not thousands (accept() would spin through its backlog).
    assert "Too many open files" in accept_lines[0] and "ulimit -n" in accept_lines[0]
    repeats = [int(n) for line in accept_lines[1:] for n in re.findall(r"(\d+) more time", line)]
    assert 1 <= len(accept_lines) <= 6 and repeats and max(repeats) <= 5, accept_lines


# --- Azure ML score.py under azureml-inference-server-http ----------------------------------------------------------


def azureml_server_command() -> str:
    """``azmlinfsrv`` from its own virtualenv (it pins pydantic 2.12 and opentelemetry 1.33; see scripts/test.sh)."""
    found = os.environ.get("DERM_CLOUD_AZUREML_SERVER") or shutil.which("azmlinfsrv")
    if not found or not Path(found).exists():
        pytest.fail(
            "azmlinfsrv not found: set DERM_CLOUD_AZUREML_SERVER to its path (scripts/test.sh builds "
            ".venv-azureml: python -m venv .venv-azureml && .venv-azureml/bin/pip install "
            "azureml-inference-server-http onnxruntime numpy pillow)"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_azureml_score_under_inference_server(tmp_path: Path, tiny_model_dir: Path, dev_images: list[Path]) -> None:
    registered = tmp_path / "azureml-models" / "derm" / "1"
    shutil.copytree(tiny_model_dir, registered / "tiny-onnx")
    port = free_port()
    env = {
        **os.environ,
        "AZUREML_MODEL_DIR": str(tmp_path / "azureml-models" / "derm" / "1"),
        # The server's venv gets derm_cloud from this checkout (its own deps would clash with ours).
        "PYTHONPATH": str(ADAPTERS.parent),
        "DERM_CLOUD_DECODE_BUDGET_MB": "50",
    }
    command = [azureml_server_command(), "--entry_script", str(ADAPTERS / "azureml" / "score.py"), "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"azmlinfsrv did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.3)

        def score(payload: Any) -> tuple[int, dict[str, str], Any]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/score", json.dumps(payload), {"Content-Type": "application/json"})
            reply = conn.getresponse()
            body = json.loads(reply.read())
            conn.close()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, body

        images = [p.read_bytes() for p in dev_images[:2]]
        data = [base64.b64encode(i).decode() for i in images]
        status, _, out = score({"input_data": {"columns": ["image"], "data": data}})
        assert status == 200
        for entry, image in zip(out, images, strict=True):
            np.testing.assert_allclose(entry["probs"], local_probs(tiny_model_dir, image), atol=1e-5)
        # Errors keep their status and come back as one JSON object, not a JSON string holding one.
        status, headers, out = score({"input_data": {"columns": ["image"], "data": ["bm9wZQ=="]}})
        assert status == 400 and headers["content-type"] == "application/json"
        assert isinstance(out, dict) and out["error"]["code"] == "BadRequest"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # score.py parses the body, not the server
        conn.request("POST", "/score", DEEP_JSON, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        assert reply.status == 400 and "nested deeper than" in json.loads(reply.read())["error"]["message"]
        conn.close()
        big = io.BytesIO()
        Image.new("RGBA", (2000, 2000), (9, 9, 9, 255)).save(big, "PNG")  # ~104 MB to prepare > 50 MB budget
        status, _, out = score(
            {"input_data": {"columns": ["image"], "data": [base64.b64encode(big.getvalue()).decode()]}}
        )
        assert status == 413 and "decode budget of 50 MB" in out["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_runtime_requirements_carry_the_http_server_where_it_runs() -> None:
    from derm_cloud.deploy.package import runtime_requirements

    def names(requirements: list[str]) -> set[str]:
        return {r.split("=")[0].split(">")[0] for r in requirements}

    assert {"onnxruntime", "starlette", "uvicorn"} <= names(runtime_requirements(http_server=True))
    assert not {"starlette", "uvicorn"} & names(runtime_requirements())  # Azure ML brings its own server
