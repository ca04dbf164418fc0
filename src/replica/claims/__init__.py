"""One module per claim; each exposes generate, theory, train, measure, verdict."""
