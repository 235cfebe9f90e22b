"""The admin plane: what the admin port serves and what a platform team changes at runtime.

A module belongs here when the admin port (`server.admin_port`, by default 8081, never
the data port) is what exposes it, or when it exists so an operator can see or change a
running proxy: usage and quota reports (`usage_api`), the dashboard (`dashboard`,
`static/`), Prometheus metrics (`metrics`, scraped at `/metrics`), spend alerts
(`alerts`), config reload and `/v1/config` (`reload`), runtime quota overrides
(`overrides`, `override_api`), and the client-driven API for traffic that never passes
through the proxy (`client_api`: served on the admin port, though authenticated with a
caller's issued key, not the admin token). `app` assembles the admin port's routes.

The data plane (the Bedrock Runtime API on the data port: `proxy/forward.py`,
`proxy/admission.py` and what they use) stays in `proxy/`. The request path feeds the
admin plane (it counts metrics and events through callbacks) but never imports it:
only the assembler (`proxy/app.py`, whose `CostKeeper` owns the parts of both), the
serving code (`proxy/serve.py`) and the CLI (`proxy/quota_cli.py`) do. Admin routes
read the `CostKeeper`; `proxy/app.py` imports no admin route, so the two never import
each other in a circle (`tests/test_import_cycles.py` keeps it so).
"""
