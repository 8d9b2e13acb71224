"""Azure Custom Vision *training* API emulator: iteration exports, driven through the real training SDK.

Speaks the routes `CustomVisionTrainingClient` calls to leave the service with a model:

```text
POST /customvision/v3.x[-preview]/training/projects/{projectId}/iterations/{iterationId}/export?platform=&flavor=
GET  /customvision/v3.x[-preview]/training/projects/{projectId}/iterations/{iterationId}/export
GET  /exports/{token}.zip?<SAS-like query>          (the download link; no key, like a blob SAS URL)
```

`POST` answers an `Export` with status `Exporting`; the export becomes `Done` with a `downloadUri` after
`polls_until_done` list calls, as the service finishes asynchronously (`downloadUri` is `""` until then, as
Microsoft's published example shows). The archive served is built at test time by
`derm_cloud.testing.service_exports` in the real layout. Wrong `Training-Key` -> the API gateway's 401,
unknown project or iteration -> 404 `NotFoundProject` / `NotFoundIteration`, a platform/flavor the iteration
cannot export -> 400 `BadRequestProjectUnsupportedExportPlatform`: `CustomVisionErrorCodes` values of the
published Training spec (`tests/fidelity/test_fidelity_azure_training.py` checks every answer against it); which
code the live service picks for each case is not documented.

Example:
    >>> with CustomVisionTrainingEmulator() as emu:  # doctest: +SKIP
    ...     url = export_custom_vision(emu.url, emu.training_key, emu.project_id, emu.iteration_id)
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from derm_cloud.testing.emulators.base import EmulatorServer, Response, header_value

__all__ = ["DEFAULT_TRAINING_KEY", "CustomVisionTrainingEmulator"]

DEFAULT_TRAINING_KEY = "emulator-training-key"
_EXPORT = re.compile(
    r"^/customvision/v3\.\d+(?:-preview)?/training/projects/(?P<project>[^/]+)/iterations/(?P<iteration>[^/]+)/export$"
)
_DOWNLOAD = re.compile(r"^/exports/(?P<token>[0-9a-f]+)\.zip$")


@dataclass
class _Export:
    platform: str
    flavor: str | None
    token: str
    polls_left: int
    status: str = "Exporting"


class CustomVisionTrainingEmulator(EmulatorServer):
    """A Custom Vision training resource with one project and one trained classification iteration.

    Args:
        builders: `{(platform, flavor): () -> zip bytes}` for the exports the iteration offers; default: ONNX
            float32 and `OnnxFloat16` stand-ins.
        project_id, iteration_id: the ids the routes accept.
        training_key: the key the `Training-Key` header must carry.
        polls_until_done: list calls answered `Exporting` before an export is `Done`.
    """

    name = "azure-custom-vision-training"

    def __init__(
        self,
        builders: Mapping[tuple[str, str | None], Callable[[], bytes]] | None = None,
        *,
        project_id: str = "0f3c1a52-6d2e-4c55-9a7b-3e8d2b1f4a10",
        iteration_id: str = "b7d2c1e0-3f4a-4c2b-9e1d-0a1b2c3d4e5f",
        training_key: str = DEFAULT_TRAINING_KEY,
        polls_until_done: int = 2,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        if builders is None:
            from derm_cloud.testing.service_exports import custom_vision_export_zip

            builders = {
                ("ONNX", None): lambda: custom_vision_export_zip(iteration_id=iteration_id),
                ("ONNX", "OnnxFloat16"): lambda: custom_vision_export_zip(
                    iteration_id=iteration_id, flavor="OnnxFloat16"
                ),
            }
        self.builders = dict(builders)
        self.project_id = project_id
        self.iteration_id = iteration_id
        self.training_key = training_key
        self.polls_until_done = polls_until_done
        self.exports: list[_Export] = []
        self._archives: dict[str, bytes] = {}
        self._exports_lock = threading.Lock()

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        parts = urlsplit(path)
        download = _DOWNLOAD.match(parts.path)
        if download is not None and method == "GET":
            archive = self._archives.get(download.group("token"))
            if archive is None or not parse_qs(parts.query).get("sig"):
                return Response(403, b"AuthenticationFailed", {"Content-Type": "application/xml"})
            return Response(200, archive, {"Content-Type": "application/zip"})
        match = _EXPORT.match(parts.path)
        if match is None:
            return _error(404, "NotFound", "Resource not found")
        if header_value(headers, "Training-Key") != self.training_key:
            return Response.json(
                {"error": {"code": "401", "message": "Access denied due to invalid subscription key."}}, 401
            )
        if match.group("project") != self.project_id:
            return _error(404, "NotFoundProject", f"Project {match.group('project')} not found")
        if match.group("iteration") != self.iteration_id:
            return _error(404, "NotFoundIteration", f"Iteration {match.group('iteration')} not found")
        if method == "POST":
            return self._start(parse_qs(parts.query))
        if method == "GET":
            return Response.json([self._view(e) for e in self._advance()])
        return _error(405, "BadRequestNotSupported", f"{method} is not allowed here")

    def _start(self, query: Mapping[str, list[str]]) -> Response:
        platform = (query.get("platform") or [""])[0]
        flavors = query.get("flavor")
        flavor = flavors[0] if flavors else None
        if (platform, flavor) not in self.builders:
            return _error(
                400,
                "BadRequestProjectUnsupportedExportPlatform",
                f"Export platform {platform} (flavor {flavor}) is not supported by this iteration; train it in a "
                "compact domain",
            )
        with self._exports_lock:
            if any(e.platform == platform and e.flavor == flavor and e.status == "Exporting" for e in self.exports):
                return _error(400, "BadRequestExportAlreadyInProgress", "An export is already in progress.")
            export = _Export(platform, flavor, uuid.uuid4().hex, self.polls_until_done)
            self.exports.append(export)
        return Response.json(self._view(export))

    def _advance(self) -> list[_Export]:
        with self._exports_lock:
            for export in self.exports:
                if export.status == "Exporting":
                    export.polls_left -= 1
                    if export.polls_left < 0:
                        self._archives[export.token] = self.builders[(export.platform, export.flavor)]()
                        export.status = "Done"
            return list(self.exports)

    def _view(self, export: _Export) -> dict[str, Any]:
        done = export.status == "Done"
        return {
            "platform": export.platform,
            "status": export.status,
            # A SAS-style link: the credential sits in the query, which importers must not keep.
            "downloadUri": f"{self.url}/exports/{export.token}.zip?sv=2020-08-04&sig=emulator-sas" if done else "",
            "flavor": export.flavor,
            "newerVersionAvailable": False,
        }


def _error(status: int, code: str, message: str) -> Response:
    return Response.json({"code": code, "message": message}, status)
