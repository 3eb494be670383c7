-- Ticks, time-partitioned. With TimescaleDB available (and CREATE EXTENSION allowed): a
-- hypertable with daily chunks, compression after 7 days and a continuous aggregate of 1m bars
-- (UNTESTED here: no TimescaleDB on the build machine). Otherwise native declarative range
-- partitioning on `ts`; the store creates the daily/monthly partitions ahead of the data.
-- `levibot_meta.ticks_mode` records which path was taken.

CREATE TABLE ticks (
    ts         timestamptz NOT NULL,
    ts_event   bigint NOT NULL,
    ts_ingress bigint NOT NULL DEFAULT 0,
    venue      text NOT NULL,
    symbol     text NOT NULL,
    price      double precision NOT NULL,
    size       double precision NOT NULL,
    side       text NOT NULL,
    trade_id   bigint NOT NULL DEFAULT 0
) PARTITION BY RANGE (ts);

DO $$
DECLARE
    timescale boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
            -- A hypertable cannot be made from a partitioned table: start again as plain.
            DROP TABLE ticks;
            EXECUTE $sql$
                CREATE TABLE ticks (
                    ts         timestamptz NOT NULL,
                    ts_event   bigint NOT NULL,
                    ts_ingress bigint NOT NULL DEFAULT 0,
                    venue      text NOT NULL,
                    symbol     text NOT NULL,
                    price      double precision NOT NULL,
                    size       double precision NOT NULL,
                    side       text NOT NULL,
                    trade_id   bigint NOT NULL DEFAULT 0
                )$sql$;
            EXECUTE $sql$SELECT create_hypertable('ticks', 'ts',
                                                  chunk_time_interval => INTERVAL '1 day')$sql$;
            EXECUTE $sql$ALTER TABLE ticks SET (timescaledb.compress,
                                               timescaledb.compress_segmentby = 'symbol')$sql$;
            EXECUTE $sql$SELECT add_compression_policy('ticks', INTERVAL '7 days')$sql$;
            EXECUTE $sql$
                CREATE MATERIALIZED VIEW ticks_1m WITH (timescaledb.continuous) AS
                SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, symbol,
                       first(price, ts) AS open, max(price) AS high, min(price) AS low,
                       last(price, ts) AS close, sum(size) AS volume, count(*) AS trades
                FROM ticks GROUP BY bucket, symbol
                WITH NO DATA$sql$;
            EXECUTE $sql$SELECT add_continuous_aggregate_policy('ticks_1m',
                start_offset => INTERVAL '1 hour', end_offset => INTERVAL '1 minute',
                schedule_interval => INTERVAL '1 minute')$sql$;
            timescale := true;
        EXCEPTION WHEN OTHERS THEN
            -- The subtransaction rolled back: the partitioned ticks table is there again.
            RAISE NOTICE 'timescaledb unusable (%), using native partitioning', SQLERRM;
            timescale := false;
        END;
    END IF;
    IF NOT timescale THEN
        -- Same shape as the continuous aggregate, computed on read.
        EXECUTE $sql$
            CREATE VIEW ticks_1m AS
            SELECT date_trunc('minute', ts) AS bucket, symbol,
                   (array_agg(price ORDER BY ts, ts_event))[1] AS open,
                   max(price) AS high, min(price) AS low,
                   (array_agg(price ORDER BY ts DESC, ts_event DESC))[1] AS close,
                   sum(size) AS volume, count(*) AS trades
            FROM ticks GROUP BY 1, 2$sql$;
    END IF;
    INSERT INTO levibot_meta (key, value)
    VALUES ('ticks_mode', CASE WHEN timescale THEN 'timescaledb' ELSE 'native' END);
END
$$;

CREATE INDEX ticks_symbol_ts ON ticks (symbol, ts);
