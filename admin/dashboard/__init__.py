"""The operator dashboard: a page on the admin surface and the JSON API behind it.

Plain HTML, CSS and JavaScript (no build step, no external resources: it works offline);
`page` serves them and `api` the endpoints, as routes of the admin app (`admin.app`; see
docs/dashboard.md).
"""
