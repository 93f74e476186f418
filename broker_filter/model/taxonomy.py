"""Our classes in the brokers' taxonomies: ALeRCE's light-curve classifier and ELAsTiCC's.

A broker that merges classifiers compares classes across them, so each record names its top
class also in the two taxonomies brokers use for variable stars:

* ALeRCE's light-curve classifier (Sánchez-Sáez et al. 2021, AJ 161, 141): periodic classes
  LPV, E, DSCT, RRL, CEP and Periodic-Other;
* ELAsTiCC's (LSSTDESC/elasticc, taxonomy/taxonomy.ipynb), whose broker class ids put a 2
  before the tree's code: 2321 Periodic/Other, 2322 Cepheid, 2323 RR Lyrae, 2324 Delta Scuti,
  2325 EB, 2326 LPV/Mira.

Semi-regular and Mira variables are both long-period variables; RR Lyrae of both modes are
one class in either taxonomy; rotational variables fall under "periodic, other". A class of
another bundle that is not in these tables maps to nothing (None).
"""

from __future__ import annotations

ALERCE: dict[str, str] = {
    "SR": "LPV", "M": "LPV", "RRAB": "RRL", "RRCD": "RRL", "ECL": "E", "CEPH": "CEP", "DSCT": "DSCT", "ROT": "Periodic-Other",
}
ELASTICC: dict[str, int] = {
    "SR": 2326, "M": 2326, "RRAB": 2323, "RRCD": 2323, "ECL": 2325, "CEPH": 2322, "DSCT": 2324, "ROT": 2321,
}


def alerce_class(top_class: str | None) -> str | None:
    return None if top_class is None else ALERCE.get(top_class)


def elasticc_class_id(top_class: str | None) -> int | None:
    return None if top_class is None else ELASTICC.get(top_class)
