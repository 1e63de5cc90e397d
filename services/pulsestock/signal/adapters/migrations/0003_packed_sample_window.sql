-- A video's sample window is stored packed (see application/sample_window.py): five
-- big-endian int64s per sample, instead of a JSON array re-encoded with every batch.
ALTER TABLE video_state ADD COLUMN sample_window bytea NOT NULL DEFAULT ''::bytea;

UPDATE video_state
   SET sample_window = coalesce((
       SELECT string_agg(
                  int8send((extract(epoch FROM (e ->> 0)::timestamptz) * 1000000)::bigint)
                  || int8send((e ->> 1)::bigint) || int8send((e ->> 2)::bigint)
                  || int8send((e ->> 3)::bigint) || int8send((e ->> 4)::bigint),
                  ''::bytea ORDER BY n)
         FROM jsonb_array_elements(samples) WITH ORDINALITY AS x (e, n)), ''::bytea);

ALTER TABLE video_state DROP COLUMN samples;
