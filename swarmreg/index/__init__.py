"""The index role (Kraken's build-index): tags, manifests and per-repository blob links in SQLite.

``store`` holds the data, ``app`` serves it over HTTP, ``service`` runs it in the daemon and
``client`` is what the proxy and the agents use to reach it.
"""
