"""The Azure Resource Manager side both Azure ML emulators share: the workspace route, its bearer check, its errors.

`azure_ml` (online endpoints) and `azure_ml_batch` (batch endpoints and jobs) answer management calls under the
same workspace path
(https://learn.microsoft.com/rest/api/azureml/): `/subscriptions/{id}/resourceGroups/{name}/providers/
Microsoft.MachineLearningServices/workspaces/{name}/...`, behind an `Authorization: Bearer` header, with ARM's
`{"error": {"code", "message"}}` body on failure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from derm_cloud.testing.emulators.base import Response, header_value

__all__ = ["WORKSPACE_ROUTE", "arm_error", "arm_unauthorized", "in_workspace"]

#: The workspace's path prefix; each emulator appends its resources (`/onlineEndpoints/...`, `/jobs/...`).
WORKSPACE_ROUTE = (
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.MachineLearningServices"
    r"/workspaces/(?P<ws>[^/]+)"
)


def arm_error(status: int, code: str, message: str) -> Response:
    """ARM's error body."""
    return Response.json({"error": {"code": code, "message": message}}, status)


def arm_unauthorized(headers: Mapping[str, str]) -> Response | None:
    """ARM's 401 when the request carries no bearer token; `None` when it does."""
    if not (header_value(headers, "Authorization") or "").lower().startswith("bearer "):
        return arm_error(401, "AuthenticationFailed", "Authentication failed: the Authorization header is missing")
    return None


def in_workspace(match: re.Match[str], subscription_id: str, resource_group: str, workspace: str) -> bool:
    """Whether a `WORKSPACE_ROUTE` match names this workspace (resource group and workspace names ignore case)."""
    return (match["sub"], match["rg"].lower(), match["ws"].lower()) == (
        subscription_id,
        resource_group.lower(),
        workspace.lower(),
    )
