"""heaven_plugins: Heaven plugins for a JSON API on PostgreSQL; each module one concept.

app.py         the App: a Heaven Router whose startup can fail and whose every answer is JSON, with a
               request id; plugins, guards, ASGI layers, exception types mapped to answers (App.answer)
errors.py      what escapes a handler or a hook, answered: an HTTPError, a type registered with App.answer, or a 500
web.py         HTTP for handlers: read a JSON body or a query, send JSON, raise HTTPError, `public`;
               the 400 and 422 messages that name the field at fault
fields.py      what resources share: ids from the path, the page query, text and email field types
postgres/      the Postgres plugin: the pool, outages, a handle on each request's context, rows as Structs
migrate.py     migrations: .sql files from the project and its plugins, applied in name order, each once
signin/        the sign-in plugin: tokens, passwords, the guard, admin, its migrations
logs/          logs on stderr written off the request path: JSON or console lines, request ids, access lines
metrics.py     /metrics in Prometheus' text format
health.py      /health and /health/live, and a drain: /health 503 for a while after SIGTERM (Health)
cors.py        CORS: which other sites' pages may call the API, preflights answered
docs.py        the OpenAPI document of the routes, and the Docs plugin serving it at /docs
docs_page.py   the /docs page: Heaven's reference page for that document
server.py      the HTTP edge under uvicorn: limits on headers, bodies, time and connections; the proxies believed
config.py      settings from the environment, .dev.env and .env into a Struct
dev.py         the dev server: a Postgres of its own, migrations applied, reload
"""
