"""`zctrace export`: a Prometheus exporter daemon over the probes' maps (see exporters/README.md)."""
