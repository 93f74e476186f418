"""Avro schemas shipped with the package (ZTF 4.02 from ZwickyTransientFacility/ztf-avro-alert)."""
