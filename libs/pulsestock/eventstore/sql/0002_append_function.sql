-- One round trip per append: lock, version check, events, outbox rows and the wake-up
-- notifications happen in one server-side call (in the caller's transaction when there is one).
--
-- The advisory lock serialises appends within the schema so that positions are drawn in
-- commit order and a reader tailing global_position never skips a late commit.
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
    o_headers         jsonb[]
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
