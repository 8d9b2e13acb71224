"""A small, diverse, reproducible validation set: the same images for every model under test.

`build_validation_set` picks whole lesions (never some images of a lesion for the set and the others
for the rest), seeded, so that:

* every class is present, in a balanced mix by default (or the data's own mix, `allocation="proportional"`);
* every group of every stratum (sex, age band, site, skin tone) is represented by at least `min_per_group`
  lesions, and every class within every group by at least `min_per_cell` (as far as the data allows);
* the cells it could not fill are listed with the reason: too few lesions in the data, or the requested size
  is too small to cover them.

Skin tone comes from the Fitzpatrick type when the metadata has one, otherwise from the ITA estimate of the
images (`estimate_ita`), which is an estimate of image colour and is
labelled as such.

One module per part: `build` (the strata and the pick), `stratify` (the selection algorithm)
and `result` (what was chosen, its report and its manifest).

Example:
    >>> vs = build_validation_set("../shared/data/ham10000/dev.csv", size=200, seed=0)  # doctest: +SKIP
    >>> vs.write_manifest("validation.csv"); print(vs.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

from derm_cloud.governance.validation_set.build import STRATA, build_validation_set, skin_tone_groups
from derm_cloud.governance.validation_set.result import ValidationSet
from derm_cloud.governance.validation_set.stratify import CellCoverage

__all__ = ["STRATA", "CellCoverage", "ValidationSet", "build_validation_set", "skin_tone_groups"]
