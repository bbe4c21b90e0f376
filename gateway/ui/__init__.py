"""The operators' dashboard (/ui/) and the interactive API docs (/docs), served by the gateway.

pages (the HTML routes and the asset mounts) -> templates/ (Jinja2 page shells) and static/ (CSS
and the vanilla JavaScript modules that fetch the /api routes). Pages hold no data: each one asks
the REST API for it with the admin key the operator typed, so the pages need no key of their own
and every piece of data passes the same X-Admin-Key guard as curl's requests do.
"""
