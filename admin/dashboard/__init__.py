"""The operator dashboard: a page on the admin surface and the JSON API behind it.

Plain HTML, CSS and JavaScript (no build step, no external resources: it works offline);
`handler.Dashboard` serves them with the endpoints (see docs/dashboard.md).
"""
