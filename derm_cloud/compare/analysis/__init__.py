"""The analysis stage: pure functions from a run's rows (`RunResults`) to the report's `Summary`.

No store, file or clock is read here. `analyse.analyse` assembles the sections: quality (`quality`,
`quality_report`, `metrics`, `calibration`, `bootstrap`), agreement, fairness, parity (`same_model`,
`export_parity`, `metadata`), latency, cost, the Pareto front, evidence and the fixed texts.
"""
