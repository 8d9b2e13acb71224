"""Offline validation of infra/ (Terraform): parsed and checked for required settings, and scanned with checkov.

No cloud, no terraform binary: python-hcl2 parses every file and the rules below assert the settings the
deployment must keep (encryption at rest with a customer-managed key, no public storage, least-privilege
identities, scaling variables); checkov scans for misconfigurations. Both must also *fail* when a required
security setting is removed, which the mutation tests show on a copy.

checkov lives in its own virtualenv (it pins an older boto3): the tests find it through ``DERM_CLOUD_CHECKOV`` or
``PATH`` and fail, not skip, when it is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

INFRA = Path(__file__).resolve().parents[1] / "infra"
MODULES = ("aws-sagemaker", "azure-ml", "gcp-vertex")

# --- parsing -----------------------------------------------------------------------------------------------------


def _unquote(value: Any) -> Any:
    return value[1:-1] if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"' else value


def _norm(obj: Any) -> Any:
    """python-hcl2 keeps quotes around keys and strings and marks blocks; drop both."""
    if isinstance(obj, dict):
        return {_unquote(k): _norm(v) for k, v in obj.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(obj, list):
        return [_norm(x) for x in obj]
    return _unquote(obj)


@dataclass
class Module:
    """One Terraform module, parsed: resources and data sources by (type, name), variables and outputs by name."""

    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (t, name), body in self.resources.items() if t == kind}

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return self.resources.get((kind, name), {})


def load_module(folder: Path) -> Module:
    import hcl2

    module = Module()
    for path in sorted(folder.glob("*.tf")):
        with path.open() as fh:
            parsed = _norm(hcl2.load(fh))
        for kind, target in (("resource", module.resources), ("data", module.data)):
            for item in parsed.get(kind, []):
                for rtype, named in item.items():
                    for name, body in named.items():
                        target[(rtype, name)] = body
        for item in parsed.get("variable", []):
            module.variables.update(item)
        for item in parsed.get("output", []):
            module.outputs.update(item)
    return module


def _block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The first nested block ``name`` of a resource body (hcl2 gives blocks as lists of dicts)."""
    value = body.get(name)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return value if isinstance(value, dict) else {}


def _refs(value: Any, prefix: str) -> bool:
    return isinstance(value, str) and value.startswith("${" + prefix)


# --- the rules ---------------------------------------------------------------------------------------------------

_UNSCOPABLE_AWS_ACTIONS = {"ecr:GetAuthorizationToken"}  # APIs without resource-level permissions


def aws_problems(m: Module) -> list[str]:
    out = []
    key = m.get("aws_kms_key", "derm")
    if key.get("enable_key_rotation") is not True:
        out.append("aws_kms_key.derm: enable_key_rotation must be true")
    pab = m.of_type("aws_s3_bucket_public_access_block")
    flags = ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    if not any(
        all(b.get(f) is True for f in flags) and _refs(b.get("bucket"), "aws_s3_bucket.models") for b in pab.values()
    ):
        out.append("aws_s3_bucket.models: needs a public access block with all four flags true")
    sse = _block(
        _block(m.get("aws_s3_bucket_server_side_encryption_configuration", "models"), "rule"),
        "apply_server_side_encryption_by_default",
    )
    if sse.get("sse_algorithm") != "aws:kms" or not _refs(sse.get("kms_master_key_id"), "aws_kms_key."):
        out.append("aws_s3_bucket.models: default encryption must be SSE-KMS with the module's key")
    if _block(m.get("aws_s3_bucket_versioning", "models"), "versioning_configuration").get("status") != "Enabled":
        out.append("aws_s3_bucket.models: versioning must be Enabled")
    configs = m.of_type("aws_sagemaker_endpoint_configuration")
    for name, cfg in configs.items():
        if not _refs(cfg.get("kms_key_arn"), "aws_kms_key."):
            out.append(f"aws_sagemaker_endpoint_configuration.{name}: kms_key_arn must be the module's KMS key")
        if "data_capture_config" in cfg:
            out.append(f"aws_sagemaker_endpoint_configuration.{name}: data capture would store images at rest")
    variants = [_block(c, "production_variants") for c in configs.values()]
    if not any("serverless_config" in v for v in variants):
        out.append("no serverless endpoint configuration")
    if not any(v.get("instance_type") == "${var.instance_type}" for v in variants):
        out.append("no real-time endpoint configuration sized by var.instance_type")
    if m.get("aws_sagemaker_model", "adapter").get("enable_network_isolation") is not True:
        out.append("aws_sagemaker_model.adapter: enable_network_isolation must be true")
    for st in m.data.get(("aws_iam_policy_document", "execution"), {}).get("statement", []):
        actions, resources = st.get("actions", []), st.get("resources", [])
        if any(a == "*" or a.endswith(":*") for a in actions):
            out.append(f"execution role statement {st.get('sid')}: wildcard action {actions}")
        if "*" in resources and set(actions) - _UNSCOPABLE_AWS_ACTIONS:
            out.append(f"execution role statement {st.get('sid')}: Resource * for scopable actions {actions}")
        if any(a.startswith("s3:") for a in actions) and not all("aws_s3_bucket.models" in r for r in resources):
            out.append(f"execution role statement {st.get('sid')}: S3 access beyond the model bucket")
    if m.get("aws_ecr_repository", "adapter").get("image_tag_mutability") != "IMMUTABLE":
        out.append("aws_ecr_repository.adapter: tags must be immutable")
    return out


def azure_problems(m: Module) -> list[str]:
    out = []
    kv = m.get("azurerm_key_vault", "derm")
    if kv.get("purge_protection_enabled") is not True or kv.get("public_network_access_enabled") is not False:
        out.append("azurerm_key_vault.derm: purge protection on and public network access off are required")
    cmk = m.get("azurerm_key_vault_key", "cmk")
    if cmk.get("key_type") != "RSA-HSM" or "rotation_policy" not in cmk:
        out.append("azurerm_key_vault_key.cmk: HSM-backed with a rotation policy")
    st = m.get("azurerm_storage_account", "derm")
    if st.get("public_network_access_enabled") is not False or st.get("allow_nested_items_to_be_public") is not False:
        out.append("azurerm_storage_account.derm: must not be reachable publicly nor allow public blobs")
    if not _refs(_block(st, "customer_managed_key").get("key_vault_key_id"), "azurerm_key_vault_key.cmk"):
        out.append("azurerm_storage_account.derm: must be encrypted with the customer-managed key")
    ws = m.get("azurerm_machine_learning_workspace", "derm")
    if not _refs(_block(ws, "encryption").get("key_id"), "azurerm_key_vault_key.cmk"):
        out.append("azurerm_machine_learning_workspace.derm: encryption must use the customer-managed key")
    if ws.get("high_business_impact") is not True:
        out.append("azurerm_machine_learning_workspace.derm: high_business_impact must be true")
    if m.variables.get("workspace_public_network_access", {}).get("default") is not False:
        out.append("workspace public network access must default to false")
    if m.variables.get("endpoint_public_network_access", {}).get("default") is not False:
        out.append("endpoint public network access must default to false")
    endpoint = m.get("azapi_resource", "endpoint")
    if endpoint.get("body", {}).get("properties", {}).get("authMode") not in ("Key", "AMLToken", "AADToken"):
        out.append("azapi_resource.endpoint: needs key or token auth")
    props = m.get("azapi_resource", "deployment").get("body", {}).get("properties", {})
    if props.get("egressPublicNetworkAccess") != "Disabled" or props.get("instanceType") != "${var.instance_type}":
        out.append("azapi_resource.deployment: egress disabled and var.instance_type required")
    for name, ra in m.of_type("azurerm_role_assignment").items():
        if ra.get("role_definition_name") in ("Owner", "Contributor", "User Access Administrator"):
            out.append(f"azurerm_role_assignment.{name}: {ra['role_definition_name']} is broader than needed")
    return out


def gcp_problems(m: Module) -> list[str]:
    out = []
    key = m.get("google_kms_crypto_key", "derm")
    seconds = int(str(key.get("rotation_period", "0s")).rstrip("s") or 0)
    if not 0 < seconds <= 90 * 86400:
        out.append("google_kms_crypto_key.derm: rotation_period must be at most 90 days")
    bucket = m.get("google_storage_bucket", "models")
    if bucket.get("public_access_prevention") != "enforced" or bucket.get("uniform_bucket_level_access") is not True:
        out.append("google_storage_bucket.models: public access prevention enforced and uniform access required")
    if not _refs(_block(bucket, "encryption").get("default_kms_key_name"), "google_kms_crypto_key."):
        out.append("google_storage_bucket.models: must default to the CMEK key")
    if not _refs(m.get("google_artifact_registry_repository", "adapter").get("kms_key_name"), "google_kms_crypto_key."):
        out.append("google_artifact_registry_repository.adapter: must use the CMEK key")
    if not _refs(
        _block(m.get("google_vertex_ai_endpoint", "adapter"), "encryption_spec").get("kms_key_name"),
        "google_kms_crypto_key.",
    ):
        out.append("google_vertex_ai_endpoint.adapter: encryption_spec must use the CMEK key")
    for (rtype, name), body in m.resources.items():
        if rtype.startswith("google_project_iam"):
            out.append(f"{rtype}.{name}: project-wide grants are broader than the serving identity needs")
        if "_iam_" in rtype:
            if body.get("member") in ("allUsers", "allAuthenticatedUsers"):
                out.append(f"{rtype}.{name}: public member")
            if body.get("role") in ("roles/owner", "roles/editor", "roles/viewer"):
                out.append(f"{rtype}.{name}: basic role {body['role']}")
    return out


RULES: dict[str, Callable[[Module], list[str]]] = {
    "aws-sagemaker": aws_problems,
    "azure-ml": azure_problems,
    "gcp-vertex": gcp_problems,
}
SCALING_VARIABLES = {
    "aws-sagemaker": {
        "region",
        "instance_type",
        "initial_instance_count",
        "min_instance_count",
        "max_instance_count",
        "serverless_memory_mb",
        "serverless_max_concurrency",
    },
    "azure-ml": {"location", "instance_type", "instance_count", "min_instance_count", "max_instance_count"},
    "gcp-vertex": {"region", "machine_type", "min_replica_count", "max_replica_count"},
}

# --- checkov -----------------------------------------------------------------------------------------------------


def checkov_command() -> str:
    found = os.environ.get("DERM_CLOUD_CHECKOV") or shutil.which("checkov")
    if not found or not Path(found).exists():
        pytest.fail(
            "checkov not found: set DERM_CLOUD_CHECKOV to its path or put it on PATH "
            "(python -m venv /work/venv-checkov && /work/venv-checkov/bin/pip install checkov)"
        )
    return found


def run_checkov(folder: Path) -> dict[str, dict[str, Any]]:
    """checkov over every module below ``folder``, offline; returns failed and passed check ids per resource."""
    proc = subprocess.run(
        [checkov_command(), "-d", str(folder), "--framework", "terraform", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode not in (0, 1):  # 1 = some check failed; anything else is a crash
        raise AssertionError(f"checkov crashed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    out: dict[str, dict[str, Any]] = {"failed": {}, "passed": {}, "skipped": {}}
    for rep in reports:
        for state in out:
            for check in rep.get("results", {}).get(f"{state}_checks", []):
                out[state].setdefault(check["check_id"], []).append((check["file_path"], check["resource"]))
    return out


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, dict[str, Any]]:
    return run_checkov(INFRA)


# --- mutations: remove one required security setting each -----------------------------------------------------------


def _remove_block(text: str, header: str) -> str:
    start = text.index(header)
    end = text.index("\n}\n", start) + 3
    return text[:start] + text[end:]


def _edit(path: Path, fn: Callable[[str], str]) -> None:
    before = path.read_text()
    after = fn(before)
    assert after != before, f"mutation did not change {path}"
    path.write_text(after)


MUTATIONS = {
    "aws-endpoint-config-without-kms": (
        "aws-sagemaker/main.tf",
        lambda t: re.sub(
            r'(resource "aws_sagemaker_endpoint_configuration" "realtime" \{\n.*\n)\s*kms_key_arn[^\n]*\n', r"\1", t
        ),
        "kms_key_arn",
        ("CKV_AWS_98", "aws_sagemaker_endpoint_configuration.realtime"),
    ),
    "aws-bucket-without-public-access-block": (
        "aws-sagemaker/main.tf",
        lambda t: _remove_block(t, 'resource "aws_s3_bucket_public_access_block" "models" {').replace(
            "  depends_on = [aws_s3_bucket_public_access_block.models]\n", ""
        ),
        "public access block",
        ("CKV2_AWS_6", "aws_s3_bucket.models"),
    ),
    "azure-key-vault-without-purge-protection": (
        "azure-ml/main.tf",
        lambda t: t.replace("purge_protection_enabled      = true", "purge_protection_enabled      = false"),
        "purge protection",
        ("CKV_AZURE_110", "azurerm_key_vault.derm"),
    ),
    "gcp-bucket-without-public-access-prevention": (
        "gcp-vertex/main.tf",
        lambda t: t.replace('  public_access_prevention    = "enforced"\n', ""),
        "public access prevention",
        ("CKV_GCP_114", "google_storage_bucket.models"),
    ),
}


@pytest.fixture(scope="module")
def mutated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A copy of infra/ with every mutation applied (they touch different resources), scanned once."""
    root = tmp_path_factory.mktemp("infra-mutated") / "infra"
    shutil.copytree(INFRA, root)
    for rel, fn, _, _ in MUTATIONS.values():
        _edit(root / rel, fn)
    return root, run_checkov(root)


# --- tests -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODULES)
def test_module_parses_and_keeps_required_settings(name: str) -> None:
    module = load_module(INFRA / name)
    assert module.resources, f"{name}: no resources parsed"
    assert RULES[name](module) == []
    assert SCALING_VARIABLES[name] <= set(module.variables)
    for var_name, var in module.variables.items():
        assert var.get("description"), f"{name}: variable {var_name} has no description"


def test_checkov_finds_no_misconfiguration(checkov_report: dict[str, dict[str, Any]]) -> None:
    assert checkov_report["failed"] == {}
    passed = checkov_report["passed"]
    # The checks that matter most ran and passed (a parser change that silently skipped them would pass "no failures").
    for check_id in (
        "CKV_AWS_98",
        "CKV2_AWS_6",
        "CKV_AWS_7",
        "CKV_AWS_370",
        "CKV_AZURE_110",
        "CKV_AZURE_144",
        "CKV_GCP_114",
        "CKV2_GCP_24",
    ):
        assert check_id in passed, f"{check_id} did not run"
    # Every skip carries a reason in the HCL (#checkov:skip=ID:reason).
    for path in INFRA.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                assert re.search(r"checkov:skip=[A-Z0-9_]+:\S.{20,}", line), (
                    f"{path.name}: skip without a reason: {line}"
                )


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_removing_a_security_setting_fails_validation(
    mutation: str, mutated: tuple[Path, dict[str, dict[str, Any]]]
) -> None:
    root, report = mutated
    rel, _, problem_words, (check_id, resource) = MUTATIONS[mutation]
    module_name = rel.split("/")[0]
    problems = RULES[module_name](load_module(root / module_name))
    assert any(problem_words in p for p in problems), problems
    assert resource in [r for _, r in report["failed"].get(check_id, [])], report["failed"]


def test_modules_pin_terraform_and_their_providers() -> None:
    # The validation above is all offline; terraform itself (not installable here) is never called.
    for name in MODULES:
        text = "".join(p.read_text() for p in (INFRA / name).glob("*.tf"))
        assert "required_version" in text and "required_providers" in text
