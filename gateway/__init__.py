"""The admin REST gateway: the checklist's /api/ingest routes, translated to AdminService gRPC,
and the operators' dashboard that uses them.

__main__ (config, logging, uvicorn) -> app (create_app) -> headers (browser security headers)
-> guard (X-Admin-Key, body limits) -> routes -> client (every gRPC call, with token and
deadline) -> jobs (proto -> JSON, health). schemas holds the request/response models; errors the
one error shape and gRPC -> HTTP mapping; ui/ the dashboard's pages (/ui/) and the offline /docs.
"""
