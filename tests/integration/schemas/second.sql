-- A second schema, unlike the reference one, mapped by configuration alone (second.yaml): text and composite
-- keys, self-referencing and composite foreign keys, bytea, json/jsonb, int[] and text[], numeric, timestamptz,
-- interval, an enum, a join table with properties, and types Neo4j has no equivalent for (point, money).

CREATE TYPE mood AS ENUM ('calm', 'busy', 'closed');

CREATE TABLE regions (
    code        text PRIMARY KEY,
    name        text NOT NULL,
    parent_code text REFERENCES regions (code) ON DELETE SET NULL,
    location    point,
    fee         money,
    founded     date,
    mood        mood
);

CREATE TABLE warehouses (
    region_code text NOT NULL REFERENCES regions (code) ON DELETE CASCADE,
    num         integer NOT NULL,
    label       text,
    capacity    numeric(10, 2),
    opened_at   timestamptz,
    open_for    interval,
    mood        mood NOT NULL DEFAULT 'calm',
    photo       bytea,
    attrs       jsonb,
    shelf_ids   integer[],
    tags        text[],
    ratio       double precision,
    secret      text,
    PRIMARY KEY (region_code, num)
);

CREATE TABLE items (
    sku         text PRIMARY KEY,
    title       text NOT NULL,
    price       numeric,
    weight      numeric,
    wh_region   text,
    wh_num      integer,
    replaced_by text REFERENCES items (sku) ON DELETE SET NULL,
    spec        json,
    sizes       integer[],
    internal    text,
    FOREIGN KEY (wh_region, wh_num) REFERENCES warehouses (region_code, num) ON DELETE SET NULL
);

CREATE TABLE stock (
    wh_region  text NOT NULL,
    wh_num     integer NOT NULL,
    sku        text NOT NULL REFERENCES items (sku) ON DELETE CASCADE,
    qty        integer NOT NULL DEFAULT 0,
    counted_at timestamptz,
    note       text,
    PRIMARY KEY (wh_region, wh_num, sku),
    FOREIGN KEY (wh_region, wh_num) REFERENCES warehouses (region_code, num) ON DELETE CASCADE
);

-- Not unique: for the validation tests (a node key must be unique and NOT NULL).
CREATE TABLE notes (
    id   integer PRIMARY KEY,
    tag  text NOT NULL,
    body text
);
