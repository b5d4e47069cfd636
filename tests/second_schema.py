"""The second schema of the tests (schemas/second.sql and second.yaml): its oracle spec and seed rows, shared by the
trigger-mode tests (integration/test_sync_second_schema.py) and the Kafka sink's (integration/kafka/).
"""

from __future__ import annotations

from pathlib import Path

from oracle import NodeSpec, RelSpec, SchemaSpec

SCHEMAS = Path(__file__).parent / "integration" / "schemas"
SECOND_SQL = SCHEMAS / "second.sql"
SECOND_YAML = SCHEMAS / "second.yaml"

# Rows Neo4j cannot hold (an array holding NULL, a timestamp outside Python's range) are dead letters, not nodes:
# the oracle's warehouse queries leave them out.
# The graph second.yaml describes, written out by hand from the documented rules (docs/mapping.md).
SECOND = SchemaSpec(
    nodes=(
        NodeSpec(
            "Region",
            ("code",),
            "SELECT code, name AS title, parent_code, location::text AS location, fee::text AS fee, founded, "
            "mood::text AS mood FROM regions",
        ),
        NodeSpec(
            "Site:Warehouse",
            ("region", "number"),
            "SELECT region_code AS region, num AS number, label AS display_label, capacity, opened_at, "
            "CASE WHEN open_for IS NULL THEN NULL ELSE ARRAY["
            "(extract(year FROM open_for) * 12 + extract(month FROM open_for))::bigint, "
            "extract(day FROM open_for)::bigint, "
            "(extract(hour FROM open_for) * 3600000000 + extract(minute FROM open_for) * 60000000 "
            "+ extract(microseconds FROM open_for))::bigint] END AS open_for, "
            "mood::text AS mood, photo, attrs::text AS attrs, shelf_ids, tags, ratio FROM warehouses "
            "WHERE (shelf_ids IS NULL OR array_position(shelf_ids, NULL) IS NULL) "
            "AND (tags IS NULL OR array_position(tags, NULL) IS NULL) "
            "AND (opened_at IS NULL OR isfinite(opened_at))",
            json_props=frozenset({"attrs"}),
            interval_props=frozenset({"open_for"}),
        ),
        NodeSpec(
            "Item",
            ("sku",),
            "SELECT sku, title, price, weight::text AS weight, wh_region, wh_num, replaced_by, spec::text AS spec, "
            "sizes FROM items",
            json_props=frozenset({"spec"}),
        ),
    ),
    rels=(
        RelSpec(
            "PART_OF",
            "Region",
            "Region",
            "SELECT code AS s0, parent_code AS e0 FROM regions WHERE parent_code IS NOT NULL",
        ),
        RelSpec(
            "IN_REGION",
            "Warehouse",
            "Region",
            "SELECT region_code AS s0, num AS s1, region_code AS e0 FROM warehouses "
            "WHERE (shelf_ids IS NULL OR array_position(shelf_ids, NULL) IS NULL) "
            "AND (tags IS NULL OR array_position(tags, NULL) IS NULL) "
            "AND (opened_at IS NULL OR isfinite(opened_at))",
        ),
        RelSpec(
            "STORED_AT",
            "Item",
            "Warehouse",
            "SELECT sku AS s0, wh_region AS e0, wh_num AS e1 FROM items WHERE wh_region IS NOT NULL "
            "AND wh_num IS NOT NULL",
        ),
        RelSpec(
            "REPLACED_BY",
            "Item",
            "Item",
            "SELECT replaced_by AS s0, sku AS e0 FROM items WHERE replaced_by IS NOT NULL",
        ),
        RelSpec(
            "STOCKS",
            "Warehouse",
            "Item",
            "SELECT wh_region AS s0, wh_num AS s1, sku AS e0, qty, counted_at, note AS comment FROM stock",
        ),
    ),
    primary_label={"Site:Warehouse": "Warehouse"},
)

SEED = """
INSERT INTO regions (code, name, parent_code, location, fee, founded, mood) VALUES
    ('eu', 'Europe', NULL, '(10.5,-3)', 12.34, '1993-11-01', 'calm'),
    ('eu-west', 'West', 'eu', '(1,2)', 0, NULL, 'busy'),
    ('eu-east', 'East', 'eu', NULL, NULL, '2004-05-01', NULL),
    ('x', 'Nowhere', NULL, NULL, NULL, NULL, 'closed');
INSERT INTO warehouses (region_code, num, label, capacity, opened_at, open_for, mood, photo, attrs, shelf_ids, tags,
                        ratio, secret) VALUES
    ('eu-west', 1, 'Dock', 1500.25, '2020-02-29 12:00:00.123456+02', '1 year 2 mons 3 days 04:05:06.5', 'busy',
     '\\x00ff10', '{"b": [1, 2, {"c": null}], "a": "ü"}', '{1,2,3}', '{a,"b c"}', 0.5, 's1'),
    ('eu-west', 2, NULL, 'NaN', NULL, '-3 hours', 'calm', '', '[]', '{}', NULL, 'NaN', 's2'),
    ('eu-east', 1, 'East 1', 0, '1999-12-31 23:59:59+00', '1 mon -1 days', 'closed', NULL, 'null', NULL, '{""}',
     'Infinity', NULL),
    ('eu', 7, 'Bad shelf', 1, NULL, NULL, 'calm', NULL, NULL, '{1,NULL}', NULL, 1, NULL);
INSERT INTO items (sku, title, price, weight, wh_region, wh_num, replaced_by, spec, sizes, internal) VALUES
    ('A-1', 'Anvil', 19.99, 1.500, 'eu-west', 1, NULL, '{"w": 1, "w": 2}', '{1,2}', 'hidden'),
    ('A-2', 'Anvil II', 'Infinity', '-0.0001', 'eu-west', 1, NULL, NULL, NULL, NULL),
    ('B-1', 'Bolt', '-Infinity', NULL, 'eu-east', 1, 'A-2', '[1, "x"]', '{}', NULL),
    ('C-1', 'Cog', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
UPDATE items SET replaced_by = 'B-1' WHERE sku = 'A-1';
INSERT INTO stock (wh_region, wh_num, sku, qty, counted_at, note) VALUES
    ('eu-west', 1, 'A-1', 5, '2024-01-01 00:00:00+00', 'top shelf'),
    ('eu-west', 1, 'A-2', 0, NULL, NULL),
    ('eu-east', 1, 'B-1', 12, '2024-06-30 08:00:00-07', 'cold');
"""
