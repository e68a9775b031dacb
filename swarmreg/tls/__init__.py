"""The cluster's TLS: certificates (a dev CA, node and peer certificates) and SSL contexts."""
