"""Embeddings cached per (embedder, image content hash), so a probe fit that stops half-way resumes.

One SQLite file per embedder in `<cache>/embeddings/`; a row holds the SHA-256 of the image file's bytes and
the vector, never the image or its path. The file is named after the embedding space (`embedder_key`): the
backend, the model or endpoint id, and whether an emulator's stand-in encoder answers there; never the dimension,
which an endpoint embedder learns from its first answer (so the key would change between runs).
A chunk of embeddings is committed as soon as it is computed: an
interrupted run (a crash, Ctrl-C, a provider outage) loses at most the chunk in flight, and the next run embeds
only what is missing. The same image under another name, or in another manifest, is embedded once.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from derm_cloud.embedders.base import Embedder
from derm_cloud.errors import ConfigError

__all__ = ["EmbeddingCache", "embedder_key"]


def embedder_key(embedder: Embedder) -> str:
    """What identifies an embedding space: the backend, the model (or endpoint) id, and `emulated` for a stand-in.

    An emulated endpoint answers under the provider's endpoint name with another encoder: its vectors must never
    share a cache with the real endpoint's. A model redeployed under the same id is caught by the canary in
    `EmbeddingCache.embed_all` (one cached image embedded again and compared).
    """
    stand_in = ":emulated" if embedder.describe().emulated else ""
    return f"{embedder.backend_name}:{embedder.model_id}{stand_in}"


def _file_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key) + ".sqlite"


class EmbeddingCache:
    """Vectors of one embedder by image content hash.

    Example:
        >>> cache = EmbeddingCache.for_embedder(emb)  # doctest: +SKIP
        >>> vectors = cache.embed_all(emb, [s.read_bytes for s in dataset.samples])  # doctest: +SKIP
    """

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (embedder TEXT, sha256 TEXT, vector BLOB, "
            "PRIMARY KEY (embedder, sha256))"
        )
        self._db.commit()

    @classmethod
    def for_embedder(cls, embedder: Embedder, root: Path | None = None) -> EmbeddingCache:
        """The cache file of `embedder` under `root` (default: `<derm-cloud cache>/embeddings`)."""
        if root is None:
            from derm_cloud.models.cache import cache_dir

            root = cache_dir() / "embeddings"
        key = embedder_key(embedder)
        cache = cls(root / _file_name(key), key)
        if embedder.dimension is not None and not embedder.describe().emulated:
            cache._adopt_legacy(root, f"{embedder.backend_name}:{embedder.model_id}:{embedder.dimension}")
        return cache

    def _adopt_legacy(self, root: Path, legacy_key: str) -> None:
        """Take over the rows of a cache written under the former key (which ended in the dimension).

        Only a key with a known dimension and no emulator is adopted (a local encoder: re-embedding a data set
        can take half an hour); the canary in `embed_all` still checks the first image against the model.
        """
        legacy = root / _file_name(legacy_key)
        if legacy == self.path or not legacy.is_file():
            return
        if self._db.execute("SELECT 1 FROM embeddings WHERE embedder = ? LIMIT 1", [self.key]).fetchone():
            return
        old = sqlite3.connect(legacy)
        try:
            rows = old.execute("SELECT sha256, vector FROM embeddings WHERE embedder = ?", [legacy_key]).fetchall()
        finally:
            old.close()
        self._db.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?, ?)", [(self.key, d, v) for d, v in rows])
        self._db.commit()

    def get(self, digests: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `digests`."""
        out: dict[str, np.ndarray] = {}
        for lo in range(0, len(digests), 500):
            part = list(digests[lo : lo + 500])
            rows = self._db.execute(
                f"SELECT sha256, vector FROM embeddings WHERE embedder = ? AND sha256 IN ({','.join('?' * len(part))})",
                [self.key, *part],
            )
            out.update((digest, np.frombuffer(blob, dtype=np.float32)) for digest, blob in rows)
        return out

    def put(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        """Store vectors and commit (one transaction per call)."""
        self._db.executemany(
            "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
            [(self.key, digest, np.asarray(v, dtype=np.float32).tobytes()) for digest, v in items],
        )
        self._db.commit()

    def embed_all(
        self,
        embedder: Embedder,
        readers: Sequence[Callable[[], bytes]],
        *,
        chunk: int = 32,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, list[str], int]:
        """Vectors `(n, d)` for every image, embedding only those not cached yet.

        Args:
            embedder: the embedder (its key must be this cache's).
            readers: one callable per image returning its bytes (read twice at most: hash, then embed).
            chunk: images embedded, then committed, at a time.
            progress: called with `(done, to_embed)` after each chunk.

        Returns:
            `(vectors, content digests, number embedded now)`.
        """
        if embedder_key(embedder) != self.key:
            raise ConfigError(f"this cache holds {self.key!r} embeddings, not {embedder_key(embedder)!r}")
        digests = [hashlib.sha256(read()).hexdigest() for read in readers]
        have = self.get(digests)
        if have:
            self._check_canary(embedder, readers, digests, have)
        first: dict[str, int] = {}  # one embedding per distinct content, however many names it has
        for i, digest in enumerate(digests):
            if digest not in have:
                first.setdefault(digest, i)
        todo = list(first.values())
        for lo in range(0, len(todo), chunk):
            part = todo[lo : lo + chunk]
            embeddings = embedder.embed_batch([readers[i]() for i in part], batch_size=chunk)
            new = [(digests[i], e.vector) for i, e in zip(part, embeddings, strict=True)]
            self.put(new)
            have.update(new)
            if progress is not None:
                progress(min(lo + chunk, len(todo)), len(todo))
        return np.stack([have[d] for d in digests]).astype(np.float32), digests, len(todo)

    def _check_canary(
        self,
        embedder: Embedder,
        readers: Sequence[Callable[[], bytes]],
        digests: Sequence[str],
        have: dict[str, np.ndarray],
    ) -> None:
        """Embed one cached image again: an endpoint redeployed with another model under the same id (or two
        emulators answering for one endpoint id) would otherwise mix two embedding spaces in one fit."""
        index = next(i for i, d in enumerate(digests) if d in have)
        fresh = embedder.embed_batch([readers[index]()])[0].vector
        cached = have[digests[index]]
        if fresh.shape != cached.shape or not np.allclose(fresh, cached, rtol=1e-3, atol=1e-4):
            raise ConfigError(
                f"{self.key} answers differently from the embeddings cached in {self.path} for the same image: the "
                "model behind it changed. Delete that file (or pass another cache folder) and embed again"
            )

    def close(self) -> None:
        """Close the database."""
        self._db.close()
