"""Local blob storage: the content-addressed store and upload sessions."""
