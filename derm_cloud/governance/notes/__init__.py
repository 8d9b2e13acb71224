"""Risk-register and DPIA entries computed from a comparator run, each citing the figure it rests on.

`risk_register` reads a finished run (the folder `derm-cloud compare` wrote, or its `report.json`,
format `derm-cloud-comparison/1`) and, optionally, referral evaluations (`referral.json` from
`derm-cloud governance referral --out`), and writes dated entries a team can paste into its register:

* **clinical performance**: a backend whose melanoma or malignant sensitivity is below `min_sensitivity`;
* **calibration**: expected calibration error above `max_ece`;
* **fairness**: a group (skin tone, sex, age band, site) below `min_sensitivity`, a gap between groups above
  `max_gap`, or a group too small to judge;
* **training data**: the model's declared training data overlaps the evaluation data;
* **data protection (DPIA)**: which backends send images off the machine, to which provider and region, and
  whether the provider stores them; emulated measurements are marked as such;
* **cost**: monthly cost above `budget`, or a price that is unknown;
* **human oversight**: referral thresholds and what they cost; human review remains mandatory.

Every entry names the figure (a JSON path such as `quality.backends.local.melanoma.sensitivity`), its value
and the run and file it came from, so a reviewer can check it.

One module per part: `entries` (what a register holds), `context` (what the rules read),
`model_rules` and `deployment_rules` (one function per kind of entry), `register` (the run
read, the rules applied, the entries numbered).

Example:
    >>> register = risk_register("reports/sklesion", min_sensitivity=0.9, budget=500)  # doctest: +SKIP
    >>> print(register.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

from derm_cloud.governance.notes.entries import Evidence, RiskEntry, RiskRegister
from derm_cloud.governance.notes.register import load_run, risk_register

__all__ = ["Evidence", "RiskEntry", "RiskRegister", "load_run", "risk_register"]
