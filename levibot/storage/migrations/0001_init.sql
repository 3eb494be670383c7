-- levibot core schema: everything the store writes except ticks (0002).
-- Timestamps: `ts` is timestamptz for humans and range queries; `ts_event`/`ts_init` keep the
-- message's integer nanoseconds exactly.

CREATE TABLE levibot_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- One row per batch the store committed: a retried batch whose commit was lost with the
-- connection is recognised here and not written twice.
CREATE TABLE store_batches (
    batch_id     text PRIMARY KEY,
    rows         integer NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bars (
    symbol    text NOT NULL,
    venue     text NOT NULL,
    timeframe text NOT NULL,
    start_ns  bigint NOT NULL,
    ts        timestamptz NOT NULL,
    ts_event  bigint NOT NULL,
    open      double precision NOT NULL,
    high      double precision NOT NULL,
    low       double precision NOT NULL,
    close     double precision NOT NULL,
    volume    double precision NOT NULL,
    trades    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (symbol, timeframe, venue, start_ns)
);

CREATE TABLE features (
    symbol      text NOT NULL,
    ts          timestamptz NOT NULL,
    ts_event    bigint NOT NULL,
    schema_hash text NOT NULL,
    timeframe   text NOT NULL DEFAULT '',
    price       double precision NOT NULL,
    spread_bps  double precision NOT NULL DEFAULT 0,
    vector      double precision[] NOT NULL
);
CREATE INDEX features_symbol_ts ON features (symbol, ts);

CREATE TABLE signals (
    ts          timestamptz NOT NULL,
    ts_event    bigint NOT NULL,
    ts_init     bigint NOT NULL,
    symbol      text NOT NULL,
    strategy    text NOT NULL,
    side        text NOT NULL,
    probability double precision NOT NULL,
    confidence  double precision NOT NULL,
    price       double precision NOT NULL,
    atr         double precision NOT NULL DEFAULT 0,
    spread_bps  double precision NOT NULL DEFAULT 0,
    model_id    text NOT NULL DEFAULT ''
);
CREATE INDEX signals_symbol_ts ON signals (symbol, ts);

-- Order lifecycle, one row per (client_order_id, kind): intent | denied | accepted | closed.
CREATE TABLE orders (
    client_order_id text NOT NULL,
    kind            text NOT NULL,
    ts              timestamptz NOT NULL,
    ts_event        bigint NOT NULL,
    ts_init         bigint NOT NULL,
    symbol          text NOT NULL,
    strategy        text NOT NULL DEFAULT '',
    side            text NOT NULL DEFAULT '',
    quantity        double precision NOT NULL DEFAULT 0,
    price           double precision NOT NULL DEFAULT 0,
    stop_loss       double precision NOT NULL DEFAULT 0,
    take_profit     double precision NOT NULL DEFAULT 0,
    reduce_only     boolean NOT NULL DEFAULT false,
    reason          text NOT NULL DEFAULT '',
    code            text NOT NULL DEFAULT '',
    realized_pnl    double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (client_order_id, kind)
);
CREATE INDEX orders_symbol_ts ON orders (symbol, ts);

CREATE TABLE fills (
    fill_id         text PRIMARY KEY,
    client_order_id text NOT NULL,
    ts              timestamptz NOT NULL,
    ts_event        bigint NOT NULL,
    ts_init         bigint NOT NULL,
    symbol          text NOT NULL,
    side            text NOT NULL,
    quantity        double precision NOT NULL,
    price           double precision NOT NULL,
    fee             double precision NOT NULL,
    realized_pnl    double precision NOT NULL DEFAULT 0,
    reason          text NOT NULL DEFAULT '',
    position_after  double precision NOT NULL DEFAULT 0
);
CREATE INDEX fills_order ON fills (client_order_id);
CREATE INDEX fills_symbol_ts ON fills (symbol, ts);

-- Portfolio snapshots: the equity curve.
CREATE TABLE equity (
    ts             timestamptz NOT NULL,
    ts_event       bigint NOT NULL,
    cash           double precision NOT NULL,
    equity         double precision NOT NULL,
    realized_pnl   double precision NOT NULL,
    unrealized_pnl double precision NOT NULL,
    fees           double precision NOT NULL,
    positions      jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX equity_ts ON equity (ts);

-- Append-only event log: every stored message, in the order the store received it.
CREATE TABLE events (
    seq       bigserial PRIMARY KEY,
    type      text NOT NULL,
    ts        timestamptz NOT NULL,
    ts_event  bigint NOT NULL,
    symbol    text,
    body      jsonb NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_type_seq ON events (type, seq);

CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    ts         timestamptz NOT NULL DEFAULT now(),
    ts_event   bigint NOT NULL DEFAULT 0,
    actor      text NOT NULL,
    action     text NOT NULL,
    args       jsonb NOT NULL DEFAULT '{}',
    command_id text UNIQUE
);
CREATE INDEX audit_log_ts ON audit_log (ts);

-- Generic tables for the ML registry and the gateway; their owners extend them in later
-- migrations with higher numbers.
CREATE TABLE models (
    model_id   text PRIMARY KEY,
    card       jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    active     boolean NOT NULL DEFAULT false
);

CREATE TABLE api_keys (
    key_id     text PRIMARY KEY,
    hash       text NOT NULL,
    scopes     text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
