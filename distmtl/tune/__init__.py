"""Search: a YAML search-space file → Ray Tune with OptunaSearch (TPE) and ASHA, one Train run per trial."""
