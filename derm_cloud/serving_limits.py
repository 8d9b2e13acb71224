"""Limits of a serving adapter: the decode memory budget and the HTTP server's concurrency, timeouts and sizes.

`ServerLimits` holds every limit of `derm_cloud.serving_http` with its default and its
`DERM_CLOUD_*` environment variable (read by `ServerLimits.from_env`, as the adapters do).

The decode budget is checked from the image header before a single pixel is decoded.

Pillow's `Image.open` only reads the header, so the decoded size (width x height x bands x bytes per band) is
known before `derm_cloud.images.load_image` allocates anything. A 194 KB PNG of 7071x7071 RGBA decodes to
200 MB and needs about 1.2 GB of working memory while it is composited on white and converted to RGB; the
`DecodeBudget` refuses such a request when the server's budget is spent (503, retry later) or when it
could never fit (413), instead of letting a few of them exhaust the container's memory.

Working-set factors were measured with `python benchmarks/adapter_load.py --measure-decode`: the peak RSS of
`load_image` is 6.0x `width x height x 4` for images with transparency (RGBA decode + white background +
composite + RGB copy; Pillow keeps RGB at 4 bytes per pixel) and 3.0x for opaque ones. The estimate takes 6.5x
and 3.5x of `max(decoded size, width x height x 4)`, so it stays an upper bound.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from derm_cloud.errors import ConfigError

__all__ = [
    "DEFAULT_BODY_BUFFER_BYTES",
    "DEFAULT_DECODE_BUDGET_BYTES",
    "DEFAULT_MAX_BODY_BYTES",
    "ENV_VARS",
    "DecodeBudget",
    "DecodeEstimate",
    "ServerLimits",
    "estimate_decode",
]

#: Default working memory for all concurrent decodes of one server process: one 50 MP RGBA image fits
#: (estimated 1.3 GB), so the largest image the 50 MP limit allows can still be classified, one at a time.
DEFAULT_DECODE_BUDGET_BYTES = 1_500_000_000
#: Largest request body accepted by default: SageMaker real-time's 6 MiB plus room for base64 JSON framing.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: Default memory for every request body held by one server process, from its first byte read to its response:
#: room for 30 largest bodies, or a few hundred real ones (a phone photo is 2 MB as base64).
DEFAULT_BODY_BUFFER_BYTES = 256_000_000
_ALPHA_FACTOR = 6.5
_OPAQUE_FACTOR = 3.5
# Pillow keeps every 3- or 4-band 8-bit image at 4 bytes per pixel, whatever the bands.
_PILLOW_RGB_BYTES = 4


@dataclass(frozen=True)
class DecodeEstimate:
    """What an image will cost to decode, from its header.

    Attributes:
        width: pixels across.
        height: pixels down.
        mode: Pillow mode of the encoded image (`"RGBA"`, `"RGB"`, `"P"`...).
        decoded_bytes: width x height x bands x bytes per band.
        working_bytes: estimated peak memory of decoding and converting it to RGB.
    """

    width: int
    height: int
    mode: str
    decoded_bytes: int
    working_bytes: int

    def describe(self) -> str:
        """`7071x7071 RGBA (200 MB decoded, about 1,300 MB to prepare)` for error messages."""
        return (
            f"{self.width}x{self.height} {self.mode} ({self.decoded_bytes / 1e6:,.0f} MB decoded, about "
            f"{self.working_bytes / 1e6:,.0f} MB to prepare)"
        )


def estimate_decode(data: bytes) -> DecodeEstimate | None:
    """The decode cost of encoded image bytes, read from the header only; `None` if Pillow cannot read one.

    `None` leaves the verdict to `load_image`, which names what is wrong with the file.
    """
    from PIL import Image, ImageMode

    try:
        with warnings.catch_warnings():
            # Pillow warns on headers above ~89 MP; load_image turns that into a clear error later.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # lazy: reads the header, decodes nothing
                width, height = img.size
                mode = img.mode
                transparent = "transparency" in img.info
    except Exception:  # any unreadable header: load_image reports it with the right wording
        return None
    try:
        mode_info = ImageMode.getmode(mode)
    except KeyError:
        return None
    bands = len(mode_info.bands)
    bytes_per_band = max(1, int(mode_info.typestr[-1])) if mode_info.typestr[-1].isdigit() else 1
    decoded = width * height * bands * bytes_per_band
    has_alpha = "A" in mode or "a" in mode or transparent
    factor = _ALPHA_FACTOR if has_alpha else _OPAQUE_FACTOR
    working = int(max(decoded, width * height * _PILLOW_RGB_BYTES) * factor)
    return DecodeEstimate(width, height, mode, decoded, working)


class DecodeBudget:
    """Working memory shared by every decode in flight in one process (thread-safe).

    A request reserves its estimate before decoding and releases it when its response is built, so the
    decoded pixels are counted for as long as they live.

    Args:
        total_bytes: the budget; a single image whose estimate exceeds it is never decoded.

    Example:
        >>> budget = DecodeBudget(1024 * 1024 * 1024)
        >>> budget.try_reserve(200_000_000)
        True
        >>> budget.release(200_000_000)
    """

    def __init__(self, total_bytes: int = DEFAULT_DECODE_BUDGET_BYTES) -> None:
        if total_bytes <= 0:
            raise ValueError(f"decode budget must be positive, got {total_bytes}")
        self.total_bytes = int(total_bytes)
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        """Bytes reserved right now."""
        with self._lock:
            return self._used

    def try_reserve(self, nbytes: int) -> bool:
        """Reserve `nbytes` if they fit now; never waits."""
        with self._lock:
            if self._used + nbytes > self.total_bytes:
                return False
            self._used += nbytes
            return True

    def release(self, nbytes: int) -> None:
        """Give back a reservation made by `try_reserve`."""
        with self._lock:
            self._used = max(0, self._used - nbytes)


def _cpu_count() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@dataclass(frozen=True)
class ServerLimits:
    """Every limit of an adapter's HTTP server; each field has a `DERM_CLOUD_*` variable (see `ENV_VARS`).

    Attributes:
        max_concurrency: requests decoded and classified at once (default: the CPUs this process may use).
            onnxruntime already uses every core for one inference, so more only adds memory and latency.
        max_queue: requests admitted beyond `max_concurrency`, waiting for a slot; any more are answered 503
            with `Retry-After` at once instead of piling up. A request is admitted only once its whole body is
            in, so slow uploads never hold a slot or a place in the queue.
        queue_timeout: seconds an admitted request may wait for a slot before it gets 503 with `Retry-After`.
        retry_after: seconds sent in `Retry-After` when the server is busy.
        header_timeout: seconds from a connection's first byte (or its opening) to the end of a request's headers;
            slower clients (slowloris) get 408 and are disconnected.
        body_timeout: seconds to receive a whole request body once its headers are in (408 and close after).
        keepalive_timeout: seconds an idle keep-alive connection stays open between requests; longer than the
            60 s idle timeout of common load balancers, so the server never closes a connection they reuse.
        drain_timeout: seconds SIGTERM waits for in-flight requests before cancelling them.
        max_connections: open connections; the next one gets 503 with `Retry-After` and is closed.
        max_body_bytes: largest request body (413 above, checked on `Content-Length` and while reading).
        body_buffer_bytes: memory for every request body held at once, counted from its first byte read until
            its response is sent; a body that does not fit next to the others gets 503 with `Retry-After`.
            At least `max_body_bytes`, so a largest body can always be read on an idle server.
        decode_budget_bytes: working memory for concurrent image decodes (`DecodeBudget`).
    """

    max_concurrency: int = field(default_factory=_cpu_count)
    max_queue: int = 32
    queue_timeout: float = 30.0
    retry_after: int = 1
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 65.0
    drain_timeout: float = 30.0
    max_connections: int = 1000
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_buffer_bytes: int = DEFAULT_BODY_BUFFER_BYTES
    decode_budget_bytes: int = DEFAULT_DECODE_BUDGET_BYTES

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            floor = 0 if f.name == "max_queue" else 1 if isinstance(value, int) else 0.001
            if value < floor:
                raise ConfigError(f"ServerLimits.{f.name} must be at least {floor}, got {value!r}")
        if self.body_buffer_bytes < self.max_body_bytes:
            raise ConfigError(
                f"ServerLimits.body_buffer_bytes ({self.body_buffer_bytes:,}) must be at least max_body_bytes "
                f"({self.max_body_bytes:,}), or a largest body could never be read; raise DERM_CLOUD_BODY_BUFFER_MB "
                "or lower DERM_CLOUD_MAX_BODY_MB"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerLimits:
        """Defaults overridden by any `DERM_CLOUD_*` variable set in `environ` (default `os.environ`).

        Raises:
            ConfigError: a variable is not a number, or out of range; the message names it.
        """
        env = os.environ if environ is None else environ
        values: dict[str, int | float] = {}
        for name, (var, scale) in ENV_VARS.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                number = float(raw) * scale
            except ValueError:
                raise ConfigError(f"{var}={raw!r} is not a number; unset it or give e.g. {var}=10") from None
            integer = name not in _FLOAT_FIELDS
            if integer and number != int(number):
                raise ConfigError(f"{var}={raw!r} must be a whole number")
            values[name] = int(number) if integer else number
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(f"{exc} (from the DERM_CLOUD_* environment variables)") from None


_MB = 1_000_000  # decimal megabytes, as documented
_FLOAT_FIELDS = frozenset({"queue_timeout", "header_timeout", "body_timeout", "keepalive_timeout", "drain_timeout"})
#: ``ServerLimits`` field -> (environment variable, multiplier from the variable's unit to the field's).
ENV_VARS: dict[str, tuple[str, int]] = {
    "max_concurrency": ("DERM_CLOUD_MAX_CONCURRENCY", 1),
    "max_queue": ("DERM_CLOUD_MAX_QUEUE", 1),
    "queue_timeout": ("DERM_CLOUD_QUEUE_TIMEOUT", 1),
    "retry_after": ("DERM_CLOUD_RETRY_AFTER", 1),
    "header_timeout": ("DERM_CLOUD_HEADER_TIMEOUT", 1),
    "body_timeout": ("DERM_CLOUD_BODY_TIMEOUT", 1),
    "keepalive_timeout": ("DERM_CLOUD_KEEPALIVE_TIMEOUT", 1),
    "drain_timeout": ("DERM_CLOUD_DRAIN_TIMEOUT", 1),
    "max_connections": ("DERM_CLOUD_MAX_CONNECTIONS", 1),
    "max_body_bytes": ("DERM_CLOUD_MAX_BODY_MB", _MB),
    "body_buffer_bytes": ("DERM_CLOUD_BODY_BUFFER_MB", _MB),
    "decode_budget_bytes": ("DERM_CLOUD_DECODE_BUDGET_MB", _MB),
}
