"""The simulated target's engine room: the emulated stack's own components (engines with their
tiers, the router's scorers / picker / KV-block index, real Redis / Valkey stores) driven in virtual
time by a discrete-event core, with a simulated client that keeps the load strategies' semantics.

Layout: `events` (virtual clock + event heap), `engine_node` (one engine stepping on the clock),
`router_node` (the endpoint picker, endpoint metrics refresh, KV-event delivery), `client` (the load
strategies' requests as events), `front` (the engine server's prompt handling: completions and
chat), `stack` (a scenario's engines + router + store), `cell` (one cell: reset, prime, measure,
metric samples, verify, degradation).
"""
