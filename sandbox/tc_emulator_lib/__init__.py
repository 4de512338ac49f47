"""Emulator of the Taskcluster worker-manager and secrets services (see sandbox/TASKCLUSTER.md).

Modules:
  jsjson      JSON as the real services see it: V8's JSON.parse errors, JSON.stringify output,
              PostgreSQL jsonb text/key order/equality (launch config ids, config key order)
  hawk        Hawk verification as services/auth does it (temporary credentials, authorizedScopes)
  scopes      scope satisfaction, missing-scope computation, scope expression templates
  validation  request validation with the official generated schemas (jsonschema, draft-06),
              errors rendered as the real service's ajv renders them
  hashids     continuation tokens as lib-api's paginateResults makes them
  store       the data model: clients, providers, worker pools, launch configs, secrets
  api         routing and the lib-api request pipeline, worker-manager and secrets handlers
  control     the /_emulator/ control API: faults, concurrent changes, state, reset
  server      the WSGI app and the HTTP server
"""
