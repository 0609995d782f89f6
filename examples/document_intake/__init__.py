"""Document intake: extract, classify, redact, chunk and index documents of several formats."""
