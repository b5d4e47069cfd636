-- The Kafka path's test schema: nodes keyed by their primary key and by a separate neo4j_node_id, a foreign-key
-- relationship, a join table with properties, and values of the types Debezium must deliver exact.
CREATE TABLE teams (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    budget numeric(14, 2),
    founded date,
    meta jsonb
);
CREATE TABLE people (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    team_id uuid REFERENCES teams (id),
    joined_at timestamptz,
    last_seen timestamp,
    shift interval,
    tags text[],
    scores int[],
    photo bytea,
    score double precision,
    active boolean,
    wake time
);
CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    neo4j_node_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    title text NOT NULL,
    body text,
    author_id bigint REFERENCES people (id)
);
CREATE TABLE memberships (
    person_id bigint NOT NULL REFERENCES people (id),
    team_id uuid NOT NULL REFERENCES teams (id),
    role text,
    weight numeric,
    PRIMARY KEY (person_id, team_id)
);
