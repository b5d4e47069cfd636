-- For `pg2neo mapping suggest`: join tables of every shape. A surrogate key with a unique pair (a relationship), a
-- surrogate key without one (a node), a composite key of two foreign keys with a third foreign key (a relationship,
-- the third kept as a property), one that another table references (a node), an endpoint keyed by a
-- `neo4j_node_id`, and a table without a key.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE users (
    id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL UNIQUE
);

CREATE TABLE groups (
    id   serial PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE memberships (
    id       bigserial PRIMARY KEY,
    user_id  uuid NOT NULL REFERENCES users (id),
    group_id integer NOT NULL REFERENCES groups (id),
    role     text,
    UNIQUE (user_id, group_id)
);

CREATE TABLE products (
    sku   text PRIMARY KEY,
    price numeric(10, 2)
);

CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    product_sku text NOT NULL REFERENCES products (sku),
    qty         integer NOT NULL DEFAULT 1
);

CREATE TABLE projects (
    id            integer PRIMARY KEY,
    neo4j_node_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    name          text NOT NULL
);

CREATE TABLE roles (
    id   integer PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE assignments (
    user_id    uuid NOT NULL REFERENCES users (id),
    project_id integer NOT NULL REFERENCES projects (id),
    role_id    integer REFERENCES roles (id),
    hours      numeric(6, 2),
    PRIMARY KEY (user_id, project_id)
);

CREATE TABLE enrollments (
    user_id  uuid NOT NULL REFERENCES users (id),
    group_id integer NOT NULL REFERENCES groups (id),
    PRIMARY KEY (user_id, group_id)
);

CREATE TABLE enrollment_notes (
    id       integer PRIMARY KEY,
    user_id  uuid NOT NULL,
    group_id integer NOT NULL,
    note     text,
    FOREIGN KEY (user_id, group_id) REFERENCES enrollments (user_id, group_id)
);

CREATE TABLE audit_log (
    at      timestamptz NOT NULL DEFAULT now(),
    message text
);

INSERT INTO users (id, email) VALUES
    ('00000000-0000-0000-0000-000000000001', 'a@example.org'),
    ('00000000-0000-0000-0000-000000000002', 'b@example.org'),
    ('00000000-0000-0000-0000-000000000003', 'c@example.org');
INSERT INTO groups (name) VALUES ('admins'), ('readers');
INSERT INTO memberships (user_id, group_id, role) VALUES
    ('00000000-0000-0000-0000-000000000001', 1, 'owner'),
    ('00000000-0000-0000-0000-000000000002', 1, NULL),
    ('00000000-0000-0000-0000-000000000002', 2, 'member');
INSERT INTO products VALUES ('p-1', 9.99), ('p-2', NULL);
INSERT INTO orders (user_id, product_sku, qty) VALUES
    ('00000000-0000-0000-0000-000000000001', 'p-1', 1),
    ('00000000-0000-0000-0000-000000000001', 'p-1', 2),
    ('00000000-0000-0000-0000-000000000003', 'p-2', 5);
INSERT INTO projects (id, name) VALUES (1, 'alpha'), (2, 'beta');
INSERT INTO roles VALUES (1, 'lead'), (2, 'dev');
INSERT INTO assignments VALUES
    ('00000000-0000-0000-0000-000000000001', 1, 1, 10.5),
    ('00000000-0000-0000-0000-000000000002', 1, 2, NULL),
    ('00000000-0000-0000-0000-000000000002', 2, NULL, 3);
INSERT INTO enrollments VALUES ('00000000-0000-0000-0000-000000000003', 2), ('00000000-0000-0000-0000-000000000001', 2);
INSERT INTO enrollment_notes VALUES (1, '00000000-0000-0000-0000-000000000003', 2, 'late');
INSERT INTO audit_log (message) VALUES ('hello');
