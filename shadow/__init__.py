"""Shadow parity: replay legacy-served cart building to the core and compare (docs/shadow.md).

Pure parts: `shadow.routes`, `shadow.spec`, `shadow.selection`, `shadow.compare`, and the
helpers of `shadow.idmap` and `shadow.report`. I/O: `shadow.idmap_redis`,
`shadow.report_redis` and the asynchronous `shadow.mirror`.
"""
