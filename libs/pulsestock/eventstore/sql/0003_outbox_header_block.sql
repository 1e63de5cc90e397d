-- Outbox headers as the text block NATS itself writes ("name: value" lines, CRLF-ended)
-- instead of jsonb: nothing to encode per row on the way in or decode on the way out, and
-- nothing lost (NATS header values cannot hold line breaks anyway).
ALTER TABLE outbox ADD COLUMN header_block text;
UPDATE outbox
   SET header_block = (SELECT coalesce(string_agg(key || ': ' || value || E'\r\n', ''), '')
                         FROM jsonb_each_text(headers));
ALTER TABLE outbox DROP COLUMN headers;
ALTER TABLE outbox RENAME COLUMN header_block TO headers;
ALTER TABLE outbox ALTER COLUMN headers SET NOT NULL;

DROP FUNCTION append_events(text[], bigint[], text[], bigint[], uuid[], text[], bytea[], jsonb[],
                            uuid[], text[], text[], bytea[], jsonb[]);

-- As in 0002, with the outbox headers as header blocks.
CREATE FUNCTION append_events(
    stream_ids        text[],
    expected_versions bigint[],
    e_stream_ids      text[],
    e_versions        bigint[],
    e_event_ids       uuid[],
    e_types           text[],
    e_data            bytea[],
    e_metadata        jsonb[],
    o_event_ids       uuid[],
    o_subjects        text[],
    o_types           text[],
    o_data            bytea[],
    o_headers         text[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    stream_index int;
    actual       bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('append:' || current_schema()));
    FOR stream_index IN 1 .. coalesce(array_length(stream_ids, 1), 0) LOOP
        SELECT coalesce(max(stream_version), 0) INTO actual
          FROM events WHERE stream_id = stream_ids[stream_index];
        IF actual <> expected_versions[stream_index] THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PS409',
                MESSAGE = 'wrong expected version',
                DETAIL = json_build_object(
                    'stream_id', stream_ids[stream_index],
                    'expected', expected_versions[stream_index],
                    'actual', actual)::text;
        END IF;
    END LOOP;

    INSERT INTO events (stream_id, stream_version, event_id, type, data, metadata)
    SELECT * FROM unnest(e_stream_ids, e_versions, e_event_ids, e_types, e_data, e_metadata);
    PERFORM pg_notify('pulsestock_events_' || current_schema(), '');

    IF coalesce(array_length(o_event_ids, 1), 0) > 0 THEN
        INSERT INTO outbox (event_id, subject, type, data, headers)
        SELECT * FROM unnest(o_event_ids, o_subjects, o_types, o_data, o_headers);
        PERFORM pg_notify('pulsestock_outbox_' || current_schema(), '');
    END IF;
END;
$$;
