"""Probes: small heads trained on embeddings of labelled images (`derm-cloud probe fit`).

`derm_cloud.probe.fit.fit_probe` writes a probe folder; `derm_cloud.backends.probe.ProbeClassifier` (backend
`probe`) serves it as a `Classifier`. The embedding cache, the head and the folds are in `cache`, `heads` and
`folds`.
"""
