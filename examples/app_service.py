"""For the app engineer: a small triage web service (FastAPI) over derm-cloud.

* a :class:`derm_cloud.Router` over a **primary** backend (here a SageMaker endpoint) and a **fallback** (the
  same model on this machine): when the primary fails (throttled, down, malformed answer), is cooling down after
  repeated failures, or runs out of its share of the time, the fallback answers and the response says so;
* a **deadline** for the whole request: the primary gets ``primary_share`` of it (its retries included), the
  fallback what is left; past the deadline the service answers 504 instead of hanging. The router's policy is
  the only retry loop (the backends' own retries are not used inside it);
* optional **shadow** comparison of a second provider on a sampled share of live traffic (``GET /v1/router``
  shows its running agreement, the deployments' cooldowns and the call metrics);
* a **start-up check**: before serving, the router sends one tiny probe image to each backend; a backend that
  cannot authenticate or does not exist stops the service from starting (``DeploymentCheckError`` names it)
  instead of hiding behind the fallback's answers. A fault that appears later (revoked credentials) is logged at
  WARNING by the router, counted, and turns ``GET /healthz`` to ``degraded``;
* the **referral policy**: every answer carries a decision with reasons, and the statement that a clinician
  reviews every result.

Images are read into memory, EXIF-stripped by derm-cloud before any backend sees them, and never written or
logged (log lines carry sizes and outcomes only).

Run it against the SageMaker emulator hosting a model (no credentials)::

    python examples/app_service.py --model-dir ~/.cache/derm-cloud/models/sklesion-0.2.2 --port 8000
    curl -F image=@lesion.jpg -F age=45 -F sex=male -F site=back http://127.0.0.1:8000/v1/classify

For production, build ``primary`` with ``derm_cloud.create("sagemaker", endpoint_name=..., region=...)``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, UploadFile

import derm_cloud
from derm_cloud import Deployment, HedgePolicy, Router, RouterPolicy, ShadowComparison
from derm_cloud.governance.referral import HUMAN_REVIEW, ReferralPolicy
from derm_cloud.images import ImageLimits, load_image

logger = logging.getLogger("derm_cloud.examples.app_service")

MAX_UPLOAD_BYTES = 10 * 1024 * 1024


@dataclass
class Triage:
    """The service's dependencies: two backends, the time budget, the routing rules and the referral rules.

    ``attempts`` is how often the router calls the primary (retryable errors, within its share) before the
    fallback; ``hedge`` (off by default: it can double cost) and ``shadow`` go to the router as they are.
    ``check_on_startup`` runs ``Router.check()`` before the first request is served.
    """

    primary: derm_cloud.Classifier
    fallback: derm_cloud.Classifier | None
    deadline_s: float = 5.0
    primary_share: float = 0.6
    policy: ReferralPolicy = field(default_factory=ReferralPolicy)
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    attempts: int = 3
    cooldown_failures: int = 5
    cooldown_s: float = 30.0
    hedge: HedgePolicy | None = None
    shadow: ShadowComparison | None = None
    check_on_startup: bool = True

    def router(self) -> Router:
        """The router the service classifies through: ``primary`` first, then ``fallback``."""
        deployments = [Deployment("primary", self.primary)]
        if self.fallback is not None:
            deployments.append(Deployment("fallback", self.fallback))
        rules = RouterPolicy(
            deadline_s=self.deadline_s,
            share=self.primary_share,
            attempts_per_deployment=self.attempts,
            base_delay=0.1,
            cooldown_failures=self.cooldown_failures,
            cooldown_s=self.cooldown_s,
        )
        return Router(deployments, name="triage", policy=rules, hedge=self.hedge, shadow=self.shadow)


def create_app(triage: Triage) -> Any:
    """The FastAPI application (``POST /v1/classify``, ``GET /healthz``, ``GET /v1/router``).

    Starting it (uvicorn, or ``TestClient`` as a context manager) runs the start-up check when
    ``triage.check_on_startup``: ``DeploymentCheckError`` stops the start when a backend cannot authenticate or
    does not exist.
    """
    router = triage.router()

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        if triage.check_on_startup:
            # One tiny probe per backend. A primary that cannot authenticate would otherwise hide behind the
            # fallback's answers (200 on every request); an outage (5xx, timeout) does not stop the start.
            for result in await asyncio.to_thread(router.check):
                level = logging.INFO if result.ok else logging.WARNING
                logger.log(level, "start-up check: %s %s", result.deployment, "ok" if result.ok else result.error)
        yield

    app = FastAPI(title="derm-cloud triage service", description=HUMAN_REVIEW, lifespan=lifespan)
    app.state.router = router  # closed by the caller with the app (it closes both backends too)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        backends = [triage.primary, *([triage.fallback] if triage.fallback else [])]
        body: dict[str, Any] = {"status": "ok", "backends": [b.describe().backend for b in backends]}
        faults = {d["deployment"]: d["config_fault"] for d in router.status() if d["config_fault"]}
        if faults:  # answers still flow through the fallback, but someone must fix the configuration
            body.update(status="degraded", config_faults=faults)
        return body

    @app.get("/v1/router")
    def router_state() -> dict[str, Any]:
        # Names, counts and timings only: no image bytes and no patient fields are ever kept by the router.
        return {
            "deployments": router.status(),
            "metrics": router.telemetry.metrics.snapshot(),
            "shadow": triage.shadow.report() if triage.shadow is not None else None,
        }

    @app.post("/v1/classify")
    async def classify(
        image: UploadFile = File(...),  # noqa: B008 - FastAPI's documented way to declare an upload
        age: float | None = Form(None),
        sex: str = Form("unknown"),
        site: str | None = Form(None),
    ) -> dict[str, Any]:
        started = time.monotonic()
        data = await image.read(triage.max_upload_bytes + 1)
        if len(data) > triage.max_upload_bytes:
            raise HTTPException(413, f"image is over {triage.max_upload_bytes // (1024 * 1024)} MB; downscale it")
        try:
            load_image(data, limits=ImageLimits(max_bytes=triage.max_upload_bytes))  # fail fast, before any call
            meta = derm_cloud.PatientMetadata(age=age, sex=sex, site=site)
        except derm_cloud.InvalidImageError as exc:
            raise HTTPException(400, f"not a usable image: {exc}") from None
        except derm_cloud.ConfigError as exc:
            raise HTTPException(422, str(exc)) from None

        try:
            prediction = await asyncio.to_thread(router.predict, data, meta)
        except derm_cloud.RemoteError as exc:
            logger.warning("no backend answered (%s); bytes=%d", type(exc).__name__, len(data))
            status = 504 if isinstance(exc, TimeoutError) else 503
            if triage.fallback is None:
                raise HTTPException(status, f"the primary backend failed and there is no fallback: {exc}") from None
            raise HTTPException(status, f"both backends failed: {exc}") from None
        except derm_cloud.InvalidImageError as exc:  # e.g. over every provider's request size limit
            raise HTTPException(400, f"no backend can take this image: {exc}") from None
        route = prediction.route
        assert route is not None  # a router's answer always says how it was produced
        served_by = route.deployment
        reason = "; ".join(f"{s.deployment} {s.reason}: {s.detail}" for s in route.skipped) or None
        decision = triage.policy.evaluate(prediction)
        elapsed_ms = (time.monotonic() - started) * 1000
        logger.info(
            "classified bytes=%d served_by=%s refer=%s ms=%.0f", len(data), served_by, decision.refer, elapsed_ms
        )
        return {
            "prediction": {
                "label": prediction.label,
                "top": [{"label": s.label, "probability": s.score} for s in prediction.top(3)],
                "probabilities": prediction.probabilities,
                "backend": prediction.backend,
                "model_id": prediction.model_id,
                "latency_ms": prediction.latency_ms,
                "attempts": prediction.attempts,
            },
            "served_by": served_by,
            "fallback_reason": reason,
            "route": route.to_dict(),
            "referral": {"refer": decision.refer, "reasons": decision.reasons, "rules": list(decision.rules)},
            "policy": triage.policy.describe(),
            "note": HUMAN_REVIEW,
            "elapsed_ms": elapsed_ms,
            "deadline_ms": triage.deadline_s * 1000,
        }

    return app


def emulated_triage(model_dir: str, *, deadline_s: float = 5.0) -> tuple[Triage, Any]:
    """A primary SageMaker endpoint (the emulator hosting ``model_dir``) and a local fallback; returns the emulator."""
    from derm_cloud.testing.emulators.sagemaker import SageMakerRuntimeEmulator, sagemaker_backend_for

    emulator = SageMakerRuntimeEmulator()
    emulator.add_endpoint("derm-triage", model_dir)
    emulator.start()
    # No RetryPolicy here: inside the router only the router's policy retries (Triage.attempts).
    primary = sagemaker_backend_for(emulator, "derm-triage", read_timeout=deadline_s)
    fallback = derm_cloud.create("local-onnx", model_dir=model_dir)
    return Triage(primary, fallback, deadline_s=deadline_s), emulator


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="derm-cloud triage service (FastAPI)")
    parser.add_argument("--model-dir", required=True, help="model directory served by both backends")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--deadline", type=float, default=5.0, help="seconds per request, fallback included")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    triage, emulator = emulated_triage(args.model_dir, deadline_s=args.deadline)
    app = create_app(triage)
    try:
        uvicorn.run(app, host=args.host, port=args.port)
    finally:
        app.state.router.close()
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
