-- Dashboard sign-ins, shared by every node: a session started on one node
-- is accepted by the others behind a load balancer, and a sign-out on one
-- ends it on all. Kept by the SHA-256 of the cookie's value, so the table
-- holds no usable cookie. The CSRF token is kept as it is: the page a node
-- serves must carry it, and without the cookie it grants nothing.
CREATE TABLE herald_sessions (
    token_hash bytea PRIMARY KEY,
    -- The SHA-256 of the API key that signed in: the session grants what
    -- that key grants now, and nothing once it is revoked.
    key_hash bytea NOT NULL,
    csrf text NOT NULL,
    -- By the database's clock, so nodes whose clocks differ agree on when
    -- a session ends.
    expires_at timestamptz NOT NULL
);
-- Expired sessions are deleted, and at the cap the one closest to expiry
-- gives way.
CREATE INDEX herald_sessions_by_expiry ON herald_sessions (expires_at);
