"""external ids per facility and network: an external id is unique within one facility's records
of one network (the walls a writer is scoped by), so that an id held outside a writer's scope
is, for that writer, unused (issue 13, item 5: the upsert answered 404 for such an id and 201
for an unused one); audit rows carry the network of the record they concern, beside its
facility (issue 13, item 3)

Revision ID: 5e1d7b3c9a41
Revises: 5b8e2f41c9d3
Create Date: 2026-12-01 04:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

import app.db  # noqa: F401

revision: str = '5e1d7b3c9a41'
down_revision: str | None = '5b8e2f41c9d3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The facility and network an external id row carries are its holder's, always: set from the
# participant when a row is written (bulk loads write neither), the facility moved with the
# participant (a network never changes).
_PG = """
CREATE OR REPLACE FUNCTION participant_external_id_facility() RETURNS trigger AS $$
BEGIN
    IF NEW.facility_id IS NULL OR NEW.network IS NULL THEN
        SELECT p.facility_id, p.network INTO NEW.facility_id, NEW.network
          FROM participant p WHERE p.id = NEW.participant_id;
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER participant_external_id_facility BEFORE INSERT ON participant_external_id
    FOR EACH ROW EXECUTE FUNCTION participant_external_id_facility();
CREATE OR REPLACE FUNCTION participant_moves_external_ids() RETURNS trigger AS $$
BEGIN
    UPDATE participant_external_id SET facility_id = NEW.facility_id
     WHERE participant_id = NEW.id;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER participant_moves_external_ids AFTER UPDATE OF facility_id ON participant
    FOR EACH ROW WHEN (OLD.facility_id IS DISTINCT FROM NEW.facility_id)
    EXECUTE FUNCTION participant_moves_external_ids();
CREATE OR REPLACE FUNCTION external_id_moves_facility() RETURNS trigger AS $$
BEGIN
    SELECT p.facility_id, p.network INTO NEW.facility_id, NEW.network
      FROM participant p WHERE p.id = NEW.participant_id;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER external_id_moves_facility BEFORE UPDATE OF participant_id
    ON participant_external_id FOR EACH ROW EXECUTE FUNCTION external_id_moves_facility();
"""
_SQLITE = [
    """CREATE TRIGGER participant_external_id_facility AFTER INSERT ON participant_external_id
       FOR EACH ROW WHEN NEW.facility_id IS NULL OR NEW.network IS NULL BEGIN
         UPDATE participant_external_id SET
           facility_id = (SELECT facility_id FROM participant WHERE id = NEW.participant_id),
           network = (SELECT network FROM participant WHERE id = NEW.participant_id)
         WHERE id = NEW.id;
       END""",
    """CREATE TRIGGER participant_moves_external_ids AFTER UPDATE OF facility_id ON participant
       FOR EACH ROW WHEN OLD.facility_id IS NOT NEW.facility_id BEGIN
         UPDATE participant_external_id SET facility_id = NEW.facility_id
         WHERE participant_id = NEW.id;
       END""",
    """CREATE TRIGGER external_id_moves_facility AFTER UPDATE OF participant_id
       ON participant_external_id FOR EACH ROW BEGIN
         UPDATE participant_external_id SET
           facility_id = (SELECT facility_id FROM participant WHERE id = NEW.participant_id),
           network = (SELECT network FROM participant WHERE id = NEW.participant_id)
         WHERE id = NEW.id;
       END""",
]
# audit_chain_append (20261201_0130) with the network column; the old one for downgrade.
_CHAIN_APPEND = """
        CREATE OR REPLACE FUNCTION audit_chain_append(gate bigint, chain bigint, entries jsonb,
                                           payloads text[], events jsonb)
        RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            prev text;
            prevs text[] := '{}';
            hashes text[] := '{}';
        BEGIN
            IF gate IS NOT NULL THEN
                PERFORM pg_advisory_xact_lock(gate);
            END IF;
            PERFORM pg_advisory_xact_lock(chain);
            -- Each statement below sees what committed before the lock was granted (a
            -- volatile function takes a new snapshot per statement).
            IF jsonb_array_length(events) > 0 THEN
                INSERT INTO outbox_event (event_id, type, occurred_at, entity_type, entity_id,
                                          facility_id, network, data)
                SELECT e.event_id, e.type, e.occurred_at, e.entity_type, e.entity_id,
                       e.facility_id, e.network, e.data
                FROM jsonb_populate_recordset(NULL::outbox_event, events) WITH ORDINALITY AS e
                ORDER BY e.ordinality;
            END IF;
            IF cardinality(payloads) > 0 THEN
                SELECT a.hash INTO prev FROM audit_event a ORDER BY a.id DESC LIMIT 1;
                prev := coalesce(prev, repeat('0', 64));
                FOR i IN 1 .. cardinality(payloads) LOOP
                    prevs := prevs || prev;
                    prev := encode(sha256(convert_to(prev || payloads[i], 'UTF8')), 'hex');
                    hashes := hashes || prev;
                END LOOP;
                INSERT INTO audit_event (occurred_at, actor_type, actor_id, role, client_id,
                                         facility_id, action, entity_type, entity_id, outcome,
                                         request_id, client_address, network, prev_hash,
                                         hash)
                SELECT r.occurred_at, r.actor_type, r.actor_id, r.role, r.client_id,
                       r.facility_id, r.action, r.entity_type, r.entity_id, r.outcome,
                       r.request_id, r.client_address, r.network, prevs[r.ordinality],
                       hashes[r.ordinality]
                FROM jsonb_populate_recordset(NULL::audit_event, entries) WITH ORDINALITY AS r
                ORDER BY r.ordinality;
            END IF;
        END $$;
"""
_CHAIN_APPEND_BEFORE = """
        CREATE OR REPLACE FUNCTION audit_chain_append(gate bigint, chain bigint, entries jsonb,
                                           payloads text[], events jsonb)
        RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            prev text;
            prevs text[] := '{}';
            hashes text[] := '{}';
        BEGIN
            IF gate IS NOT NULL THEN
                PERFORM pg_advisory_xact_lock(gate);
            END IF;
            PERFORM pg_advisory_xact_lock(chain);
            -- Each statement below sees what committed before the lock was granted (a
            -- volatile function takes a new snapshot per statement).
            IF jsonb_array_length(events) > 0 THEN
                INSERT INTO outbox_event (event_id, type, occurred_at, entity_type, entity_id,
                                          facility_id, network, data)
                SELECT e.event_id, e.type, e.occurred_at, e.entity_type, e.entity_id,
                       e.facility_id, e.network, e.data
                FROM jsonb_populate_recordset(NULL::outbox_event, events) WITH ORDINALITY AS e
                ORDER BY e.ordinality;
            END IF;
            IF cardinality(payloads) > 0 THEN
                SELECT a.hash INTO prev FROM audit_event a ORDER BY a.id DESC LIMIT 1;
                prev := coalesce(prev, repeat('0', 64));
                FOR i IN 1 .. cardinality(payloads) LOOP
                    prevs := prevs || prev;
                    prev := encode(sha256(convert_to(prev || payloads[i], 'UTF8')), 'hex');
                    hashes := hashes || prev;
                END LOOP;
                INSERT INTO audit_event (occurred_at, actor_type, actor_id, role, client_id,
                                         facility_id, action, entity_type, entity_id, outcome,
                                         request_id, client_address, prev_hash, hash)
                SELECT r.occurred_at, r.actor_type, r.actor_id, r.role, r.client_id,
                       r.facility_id, r.action, r.entity_type, r.entity_id, r.outcome,
                       r.request_id, r.client_address, prevs[r.ordinality],
                       hashes[r.ordinality]
                FROM jsonb_populate_recordset(NULL::audit_event, entries) WITH ORDINALITY AS r
                ORDER BY r.ordinality;
            END IF;
        END $$;
"""
_TRIGGERS = ("participant_external_id_facility", "participant_moves_external_ids",
             "external_id_moves_facility")


def upgrade() -> None:
    with op.batch_alter_table('participant_external_id', schema=None) as batch_op:
        batch_op.add_column(sa.Column('facility_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('network', sqlmodel.sql.sqltypes.AutoString(length=16),
                                      nullable=True))
    op.execute("UPDATE participant_external_id SET facility_id = (SELECT p.facility_id FROM "
               "participant p WHERE p.id = participant_external_id.participant_id), "
               "network = (SELECT p.network FROM participant p "
               "WHERE p.id = participant_external_id.participant_id)")
    with op.batch_alter_table('participant_external_id', schema=None) as batch_op:
        batch_op.drop_constraint('uq_participant_external_id_source_value', type_='unique')
        batch_op.create_unique_constraint(
            batch_op.f('uq_participant_external_id_source_value_facility_id_network'),
            ['source', 'value', 'facility_id', 'network'])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG)
    else:
        for statement in _SQLITE:
            op.execute(statement)
    # Rows written before stay without a network (append-only, and hashed as written).
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('network', sqlmodel.sql.sqltypes.AutoString(length=16),
                                      nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CHAIN_APPEND)


def downgrade() -> None:
    bind = op.get_bind()
    # Two records holding one id cannot go back to one id, one record; and an audit row's
    # network is covered by its hash, so dropping it would break the chain: refuse both.
    shared = bind.execute(sa.text(
        "SELECT count(*) FROM (SELECT source, value FROM participant_external_id "
        "GROUP BY source, value HAVING count(*) > 1) AS s")).scalar()
    if shared:
        raise RuntimeError(f"{shared} external ids are held by more than one record; "
                           "merge or remove them before downgrading")
    stamped = bind.execute(sa.text(
        "SELECT count(*) FROM audit_event WHERE network IS NOT NULL")).scalar()
    if stamped:
        raise RuntimeError(f"{stamped} audit rows carry a network in their hash; "
                           "a downgrade would break the audit chain")
    if bind.dialect.name == "postgresql":
        op.execute(_CHAIN_APPEND_BEFORE)
    # In place on both: a batch copy of the table would lose its append-only triggers.
    op.drop_column('audit_event', 'network')
    for name in _TRIGGERS:
        if bind.dialect.name == "postgresql":
            table = "participant" if name == "participant_moves_external_ids" \
                else "participant_external_id"
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table('participant_external_id', schema=None) as batch_op:
        batch_op.drop_constraint(
            'uq_participant_external_id_source_value_facility_id_network', type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_participant_external_id_source_value'),
                                          ['source', 'value'])
        batch_op.drop_column('network')
        batch_op.drop_column('facility_id')
