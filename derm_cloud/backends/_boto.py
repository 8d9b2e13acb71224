"""The one way derm-cloud builds a boto3 client: one attempt per call (the shared RetryPolicy retries), bounded
timeouts and pool, and errors that name the fix when boto3 or a region is missing.

Internal to :mod:`derm_cloud.backends`; boto3 is imported only when a client is built.
"""

from __future__ import annotations

from typing import Any

from derm_cloud.errors import ConfigError, MissingDependencyError

__all__ = ["build_boto_client"]


def build_boto_client(
    service: str,
    *,
    backend: str,
    region: str | None,
    endpoint_url: str | None,
    connect_timeout: float,
    read_timeout: float,
    pool: int,
) -> Any:
    """A boto3 client for ``service`` with botocore's own retries off (one attempt per call)."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import NoRegionError
    except ImportError as exc:
        raise MissingDependencyError(
            f"the {backend} backend needs boto3; run: pip install 'derm-cloud[sagemaker]'"
        ) from exc
    config = Config(
        retries={"total_max_attempts": 1},  # one attempt: derm-cloud's RetryPolicy owns retries
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=pool,
        user_agent_extra="derm-cloud",
    )
    try:
        return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint_url, config=config)
    except NoRegionError:
        raise ConfigError("no AWS region configured: pass region='eu-west-1' or set AWS_DEFAULT_REGION") from None
